"""Per-task overhead of a Prefect task run on a real Prefect server (not a timed test).

Starts ``prefect server start`` on 127.0.0.1 with SQLite in a temporary PREFECT_HOME, exactly
as the test fixture does (tests/conftest_prefect.py), and times a flow that maps a task with
a trivial body over N inputs (submit, the task run's state changes, the result), for each N
in ``--tasks`` and for a flow with no task (the baseline), with:

- ``threads``: Prefect's default ThreadPoolTaskRunner, in the flow's process;
- ``dask``: prefect-dask's DaskTaskRunner on a LocalCluster of ``--dask-workers`` processes
  with one thread each (started once, outside the timing; the workers talk to the same server).

Per-task overhead = (flow seconds with N tasks - flow seconds with none) / N; the slope between
the two largest N is printed too. Each setting runs ``--reps`` times, alternated; the minimum
is the figure (the machine is shared). Run from the repository root::

    PYTHONPATH=$PWD python benchmarks/bench_prefect_tasks.py --tasks 50 200 --reps 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from machine import describe  # benchmarks/machine.py: CPU model, cores, flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.conftest_prefect


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, nargs="+", default=[50, 200])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dask-workers", type=int, default=2)
    ap.add_argument("--runners", default="threads,dask")
    args = ap.parse_args()

    from tests.conftest_prefect import running_server

    with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp)) as server:
        for k, v in server.env.items():  # this process and the Dask workers use the server
            if k.startswith("PREFECT_") or k == "DO_NOT_TRACK":
                os.environ[k] = v
        os.environ["DASK_LOGGING__DISTRIBUTED"] = "error"
        print(f"# machine: {describe()}; prefect {_version('prefect')}, server {server.url} "
              f"(SQLite, 127.0.0.1); loadavg at start {os.getloadavg()}", flush=True)
        results = run_all(args)
    print(json.dumps(results))


def _version(mod: str) -> str:
    import importlib.metadata as md

    return md.version(mod)


def run_all(args: argparse.Namespace) -> dict:
    from distributed import LocalCluster
    from prefect import flow, task
    from prefect_dask import DaskTaskRunner

    @task(name="noop")
    def noop(i: int) -> int:
        return i

    @flow(name="bench-tasks")
    def bench(n: int) -> int:
        return sum(f.result() for f in noop.map(list(range(n)))) if n else 0

    runners = args.runners.split(",")
    sizes = [0, *args.tasks]
    times: dict[str, dict[int, list[float]]] = {r: {n: [] for n in sizes} for r in runners}
    cluster = None
    if "dask" in runners:
        cluster = LocalCluster(n_workers=args.dask_workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0")
    try:
        flows = {"threads": bench}
        if cluster is not None:
            flows["dask"] = bench.with_options(task_runner=DaskTaskRunner(address=cluster.scheduler_address))
        for r in runners:  # warm-up: imports, first connections, the flow's registration
            flows[r](n=2)
        for rep in range(args.reps):
            for n in sizes:
                for r in runners:
                    t0 = time.perf_counter()
                    assert flows[r](n=n) == n * (n - 1) // 2
                    dt = time.perf_counter() - t0
                    times[r][n].append(dt)
                    print(f"{r:7s} rep {rep} tasks {n:4d}: flow {dt:6.2f} s, "
                          f"loadavg {os.getloadavg()[0]:.2f}", flush=True)
    finally:
        if cluster is not None:
            cluster.close()
    out: dict = {}
    print("\n## per-task overhead (minimum over reps)")
    for r in runners:
        base = min(times[r][0])
        per = {n: (min(times[r][n]) - base) / n for n in args.tasks}
        big = sorted(args.tasks)[-2:]
        slope = ((min(times[r][big[1]]) - min(times[r][big[0]])) / (big[1] - big[0])
                 if len(big) == 2 else None)
        out[r] = {"flow_no_tasks_s": round(base, 3),
                  "per_task_ms": {n: round(1000 * v, 1) for n, v in per.items()},
                  "slope_ms": None if slope is None else round(1000 * slope, 1)}
        print(f"{r:7s}: flow with no task {base:.2f} s; per task "
              + ", ".join(f"{1000 * v:.1f} ms at {n}" for n, v in per.items())
              + ("" if slope is None else f"; slope {big[0]}->{big[1]}: {1000 * slope:.1f} ms/task"))
    return out


if __name__ == "__main__":
    main()
