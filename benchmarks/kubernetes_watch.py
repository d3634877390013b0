"""What a sync cycle costs the leader on the Kubernetes gateway with watches (issue 11): figures,
not assertions. The API stand-in runs in its own process (tests/k8s_standin.py), so the CPU
measured is the gateway's own (its watch threads included).

1. 10,000 tasks in flight (Running Jobs), nothing changing: API calls and CPU per sync cycle
   (``observe`` of all of them), against a full re-list (what every cycle cost before: one
   paged LIST per namespace), and the idle CPU of the open watch.
2. 100,000 retained finished Jobs (retired: labelled ``nightwatch.io/done``) next to 100 in
   flight, against none: the cost of one re-list and of an idle cycle; and, for contrast, one
   LIST with the old selector (every nightwatch Job, retired or not).

    .venv/bin/python benchmarks/kubernetes_watch.py [--in-flight 10000] [--retained 100000]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nightwatch.adapters.jobs.kubernetes import KubernetesJobGateway
from nightwatch.domain.constants import MANAGED_SELECTOR
from nightwatch.domain.model import Task

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def standin(running: int, retired: int) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        kubeconfig = Path(tmp) / "kubeconfig"
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "k8s_standin.py"), "--kubeconfig", str(kubeconfig),
             "--start-after", "-1", "--finish-after", "-1", "--seed-running", str(running),
             "--seed-retired", str(retired)],
            stdout=subprocess.PIPE, text=True, cwd=ROOT / "tests")
        try:
            assert proc.stdout is not None
            proc.stdout.readline()  # "API stand-in on ...": seeded and listening
            yield kubeconfig
        finally:
            proc.terminate()
            proc.wait(10)


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def calls(g: KubernetesJobGateway) -> int:
    return sum(g.requests.values())


def measure(label: str, g: KubernetesJobGateway, fn: object, n: int = 1) -> tuple[float, float, float]:
    """(wall ms, CPU ms, API calls) per call of ``fn``, averaged over ``n``."""
    assert callable(fn)
    c0, w0, r0 = cpu(), time.perf_counter(), calls(g)
    for _ in range(n):
        fn()
    wall, used, made = (time.perf_counter() - w0) / n, (cpu() - c0) / n, (calls(g) - r0) / n
    print(f"  {label:<52} {wall * 1000:9.1f} ms wall {used * 1000:9.1f} ms CPU {made:8.1f} API calls")
    return wall, used, made


def in_flight(count: int, cycles: int) -> None:
    print(f"1. {count} tasks in flight, nothing changing (one namespace, LIST pages of 500)")
    tasks = [Task(i, f"seed-{i}", "default", "{}", "Running") for i in range(1, count + 1)]
    with standin(count, 0) as kubeconfig:
        g = KubernetesJobGateway(kubeconfig=str(kubeconfig), qps=0, request_timeout=30)
        try:
            measure("first cycle (the LIST, then the watch opens)", g, lambda: g.observe(tasks))
            time.sleep(1)
            measure(f"sync cycle, watch healthy (mean of {cycles})", g, lambda: g.observe(tasks), cycles)
            watch = g.watches.get("default")
            assert watch is not None
            measure("a full re-list (= every cycle before issue 11)", g, watch._relist)
            c0, w0 = cpu(), time.monotonic()
            time.sleep(10)
            print(f"  idle watch, between cycles: {100 * (cpu() - c0) / (time.monotonic() - w0):.2f} % of one core")
        finally:
            g.close()


def retained(count: int, cycles: int) -> None:
    print(f"2. 100 tasks in flight, with 0 and with {count} retained finished (retired) Jobs")
    tasks = [Task(i, f"seed-{i}", "default", "{}", "Running") for i in range(1, 101)]
    for kept in (0, count):
        print(f" retained: {kept}")
        with standin(100, kept) as kubeconfig:
            g = KubernetesJobGateway(kubeconfig=str(kubeconfig), qps=0, request_timeout=60)
            try:
                g.observe(tasks)
                time.sleep(1)
                watch = g.watches.get("default")
                assert watch is not None
                measure("one re-list (working selector)", g, watch._relist)
                measure(f"idle sync cycle (mean of {cycles})", g, lambda g=g: g.observe(tasks), cycles)

                def old_list(g: KubernetesJobGateway = g) -> None:
                    token = None
                    while True:
                        page = g._call("list", g._batch().list_namespaced_job, "default",
                                       label_selector=MANAGED_SELECTOR, limit=500, _continue=token)
                        token = (page.get("metadata") or {}).get("continue") or None
                        if token is None:
                            return

                measure("one LIST with the old selector (retired included)", g, old_list)
            finally:
                g.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--in-flight", type=int, default=10_000)
    parser.add_argument("--retained", type=int, default=100_000)
    parser.add_argument("--cycles", type=int, default=50)
    args = parser.parse_args()
    in_flight(args.in_flight, args.cycles)
    retained(args.retained, args.cycles)


if __name__ == "__main__":
    main()
