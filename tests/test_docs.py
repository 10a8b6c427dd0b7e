"""The README stays a short page for users, and the documentation's links lead somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted({REPO / "README.md", REPO / "CONTRIBUTING.md", REPO / "benchmarks" / "README.md",
                *REPO.glob("docs/*.md")})
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_readme_is_short():
    """The README is for users (about 150 lines at most); the rest lives in docs/."""
    n = len((REPO / "README.md").read_text().splitlines())
    assert n <= 160, f"README.md has {n} lines: move detail into docs/"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_relative_links_exist(page):
    """Every relative link (file and #anchor) of a documentation page resolves in the checkout."""
    text = page.read_text()
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http(s):, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest.read_text()):
            broken.append(target)
    assert not broken, f"{page.relative_to(REPO)}: broken links {broken}"


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    heads = re.findall(r"^#+ (.+)$", markdown, re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}
