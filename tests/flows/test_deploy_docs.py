"""docs/deploy.md's Prefect setup, run verbatim on a fresh server, creates every deployment of
prefect.yaml. The commands are taken from the page's text so the two cannot drift."""

from __future__ import annotations

import re
import shlex
import subprocess

import yaml

from tests.conftest_prefect import BIN

DOC = "docs/deploy.md"
SECTION = "## Prefect deployments"


def setup_commands(doc: str) -> list[str]:
    """The one-time setup lines (pools, deploy) of the first bash block under SECTION."""
    assert SECTION in doc, f"{DOC} has no {SECTION!r} section"
    section = doc.split(SECTION, 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    lines = [ln.split("#", 1)[0].strip() for ln in block.splitlines()]
    return [ln for ln in lines if ln.startswith(("prefect work-pool create", "prefect deploy"))]


def test_deploy_docs_prefect_setup_deploys_everything_on_a_fresh_server(fresh_prefect_server, repo_root):
    srv = fresh_prefect_server
    cmds = setup_commands((repo_root / DOC).read_text())
    assert any(c.startswith("prefect deploy") for c in cmds), cmds
    for cmd in cmds:
        argv = shlex.split(cmd)
        res = subprocess.run([str(BIN / "prefect"), *argv[1:]], env=srv.env, cwd=repo_root,
                             stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, f"{DOC} command failed: {cmd}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"

    spec = yaml.safe_load((repo_root / "prefect.yaml").read_text())
    wanted = {(d["entrypoint"], d["name"], d["work_pool"]["name"]) for d in spec["deployments"]}
    from prefect.client.orchestration import get_client

    with srv.settings(), get_client(sync_client=True) as client:
        found = {(d.entrypoint, d.name, d.work_pool_name) for d in client.read_deployments()}
    assert wanted <= found, f"missing after the {DOC} setup: {sorted(wanted - found)}"
