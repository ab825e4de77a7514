"""The web console's task list with 1,000 TransferTasks: server-side render time.

Starts a local kube-apiserver, creates the tasks (with status counters, as the operator would write them),
and serves `dth console --kubeconfig` (local mode). Two figures:
- in process: rows from the console's task store (filled by its one watch) rendered by the list template,
  without HTTP;
- over HTTP: `GET /` on 127.0.0.1 (access reviews cached), which adds the request, the reviews' cache
  lookups and the transfer of the page.

    python3 bench/console_list.py [--tasks 1000] [--requests 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from dth.console import i18n
from dth.console.access import AccessReviews
from dth.console.live import TaskStore
from dth.console.pages import _rows
from dth.console.state import Console
from dth.devtools.console import ConsoleProcess
from dth.devtools.kubernetes import LocalKubernetes
from dth.devtools.waiting import wait_for

CRD = Path(__file__).resolve().parents[1] / "crds" / "transfertask.yaml"
NAMESPACES = [f"bench-{n}" for n in range(10)]


def task(number: int) -> dict[str, Any]:
    return {
        "apiVersion": "dth.io/v1alpha1",
        "kind": "TransferTask",
        "metadata": {
            "name": f"task-{number:04d}",
            "namespace": NAMESPACES[number % len(NAMESPACES)],
            "annotations": {"dth.io/description": f"nightly copy number {number} <of> the logs"},
        },
        "spec": {
            "type": "S3",
            "source": {"type": "Aliyun_OSS", "region": "cn-hangzhou", "bucket": f"logs-{number}", "prefix": "app/"},
            "destination": {"bucket": f"logs-{number}-copy", "region": "cn-north-1"},
            "schedule": "0 2 * * *",
        },
    }


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return f"median {statistics.median(ordered) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, n={len(ordered)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir, LocalKubernetes(Path(workdir) / "k8s") as cluster:
        cluster.kubectl("apply", "-f", str(CRD))
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/transfertasks.dth.io")
        for namespace in NAMESPACES:
            cluster.kubectl("create", "namespace", namespace)
        started = time.perf_counter()
        for first in range(0, args.tasks, 200):
            batch = [task(n) for n in range(first, min(first + 200, args.tasks))]
            cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": batch}))
        print(f"created {args.tasks} tasks in {time.perf_counter() - started:.1f} s")
        with ConsoleProcess(Path(workdir) / "console.log", kubeconfig=cluster.kubeconfig) as console:
            console.start()
            with httpx.Client(base_url=console.url, timeout=120) as client:
                wait_for(
                    lambda: client.get("/").text.count("<tr id=") >= args.tasks,
                    timeout=300,
                    what="the list to show every task",
                )
                samples = []
                size = 0
                for _ in range(args.requests):
                    began = time.perf_counter()
                    response = client.get("/")
                    samples.append(time.perf_counter() - began)
                    size = len(response.content)
                filtered = []
                for _ in range(args.requests):
                    began = time.perf_counter()
                    client.get("/", params={"namespace": NAMESPACES[0]})
                    filtered.append(time.perf_counter() - began)
        print(f"GET / with {args.tasks} rows over HTTP: {summary(samples)}; page {size / 1024:.0f} KiB")
        print(f"GET /?namespace={NAMESPACES[0]} ({args.tasks // len(NAMESPACES)} rows): {summary(filtered)}")
        in_process(cluster, args)


def in_process(cluster: LocalKubernetes, args: argparse.Namespace) -> None:
    """The list template over the same tasks, without HTTP: the render alone."""
    from dth.console.kube import Kube
    from dth.console.settings import ConsoleSettings

    listed = json.loads(cluster.kubectl("get", "transfertasks", "-A", "-o", "json").stdout)["items"]
    kube = Kube.from_kubeconfig(cluster.kubeconfig, impersonate=False)
    console = Console(
        settings=ConsoleSettings(),
        kube=kube,
        reviews=AccessReviews(kube),
        store=TaskStore(kube),
        local=True,
    )
    for item in listed:
        meta = item["metadata"]
        console.store.tasks[(meta["namespace"], meta["name"])] = item
    template = console.templates.get_template("list.html")
    samples = []
    for _ in range(args.requests):
        began = time.perf_counter()
        rows = _rows(console, set(NAMESPACES), {})
        template.render(
            request=type("R", (), {"url": type("U", (), {"path": "/"})()})(),
            t=i18n.translator("en"),
            lang="en",
            languages=i18n.LANGUAGES,
            user=None,
            local=True,
            csrf="x",
            rows=rows,
            namespaces=NAMESPACES,
            phases=(),
            types=(),
            query={},
            can_create=True,
            watch_error=None,
        )
        samples.append(time.perf_counter() - began)
    print(f"list of {len(listed)} rows rendered in process: {summary(samples)}")


if __name__ == "__main__":
    main()
