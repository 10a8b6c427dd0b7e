"""The flows live in the package (geomoe.flows): prefect.yaml's entrypoints import them from
wherever geomoe is installed, and geomoe outside geomoe.flows never imports Prefect."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml


def test_prefect_yaml_entrypoints_load_outside_the_checkout(repo_root, tmp_path):
    """Every entrypoint resolves to its flow from a directory that holds no geomoe files."""
    spec = yaml.safe_load((repo_root / "prefect.yaml").read_text())
    entrypoints = sorted({d["entrypoint"] for d in spec["deployments"]})
    code = ("import sys\nfrom prefect.flows import load_flow_from_entrypoint\n"
            "for e in sys.argv[1:]:\n"
            "    f = load_flow_from_entrypoint(e, use_placeholder_flow=False)\n"
            "    print(e, f.name, f.fn.__module__)\n")
    res = subprocess.run([sys.executable, "-c", code, *entrypoints], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING"})
    assert res.returncode == 0, res.stderr[-3000:]
    loaded = [ln.split() for ln in res.stdout.splitlines()]
    assert [ln[0] for ln in loaded] == entrypoints
    for entrypoint, name, module in loaded:
        assert module.startswith("geomoe.flows."), (entrypoint, module)
        assert name in ("embed-region", "pretrain", "probe", "change", "export", "similar"), (entrypoint, name)


def test_geomoe_outside_flows_never_imports_prefect():
    code = ("import importlib, pkgutil, sys, geomoe\n"
            "names = [m.name for m in pkgutil.walk_packages(geomoe.__path__, 'geomoe.')\n"
            "         if not m.name.startswith('geomoe.flows') and not m.name.endswith('__main__')]\n"
            "for n in names:\n"
            "    importlib.import_module(n)\n"
            "print(len(names), sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'prefect_dask')))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    n, _, loaded = res.stdout.strip().partition(" ")
    assert int(n) >= 20 and loaded == "[]", res.stdout
