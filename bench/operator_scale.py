"""200 TransferTasks applied at once: how long until every one has its plugin stack, and how much memory the
operator needs for it.

One run starts its own etcd + kube-apiserver (`dth.devtools.kubernetes`) and moto server, then the operator
(`python -m dth_operator`, standalone, as a child process). All tasks go to the API server in one
`kubectl apply`; the clock runs from that call until every task's status names its stack (checked against
CloudFormation's list at the end: each must be CREATE_COMPLETE), and until every task is `Running` (the
observe timer found the stack complete; it ticks every --observe-interval seconds). The operator's peak RSS
is VmHWM, read after two more observe ticks of all tasks.

The peer: the same stacks created straight from one boto3 client, one after another, on a fresh moto
server: the floor this machine's moto sets, with nothing of Kubernetes or the operator in it. The ratio says
what the operator adds on top of CloudFormation itself (moto here; on AWS, stack creation dominates both).

    python3 bench/operator_scale.py [--tasks 200] [--observe-interval 30]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from dth.devtools.kubernetes import LocalKubernetes
from dth.devtools.moto import MotoServer
from dth.devtools.operator_env import operator_environment
from dth.devtools.stacks import CAPABILITIES, LocalStacks
from dth.spec.cfn import PluginSettings, TaskSize, s3_stack_parameters, template_path
from dth.spec.model import S3TaskSpec

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "bench"


def task_manifest(number: int) -> dict[str, Any]:
    return {
        "apiVersion": "dth.io/v1alpha1",
        "kind": "TransferTask",
        "metadata": {"name": f"task-{number:04d}", "namespace": NAMESPACE},
        "spec": {
            "type": "S3",
            "source": {
                "type": "Aliyun_OSS",
                "region": "cn-hangzhou",
                "bucket": f"source-{number:04d}",
                "credentials": {"secretName": "oss-keys"},
            },
            "destination": {"type": "Amazon_S3", "region": "us-east-1", "bucket": f"destination-{number:04d}"},
        },
    }


def stack_statuses(stacks: LocalStacks) -> dict[str, str]:
    pages = stacks.cloudformation.get_paginator("list_stacks").paginate()
    return {
        s["StackName"]: s["StackStatus"]
        for page in pages
        for s in page["StackSummaries"]
        if s["StackName"].startswith(f"dth-{NAMESPACE}-") and s["StackStatus"] != "DELETE_COMPLETE"
    }


def statuses(kubernetes: LocalKubernetes) -> list[dict[str, Any]]:
    listed = kubernetes.kubectl("-n", NAMESPACE, "get", "transfertasks", "-o", "json").stdout
    return [dict(item.get("status") or {}) for item in json.loads(listed)["items"]]


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_operator(tasks: int, observe_interval: float, workdir: Path) -> dict[str, Any]:
    with LocalKubernetes(workdir / "kubernetes") as kubernetes, MotoServer() as moto:
        kubernetes.kubectl("apply", "-f", str(ROOT / "crds" / "transfertask.yaml"))
        kubernetes.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/transfertasks.dth.io")
        kubernetes.kubectl("create", "namespace", NAMESPACE)
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "oss-keys", "namespace": NAMESPACE},
            "data": {
                "access_key_id": base64.b64encode(b"LTAIexample").decode(),
                "secret_access_key": base64.b64encode(b"not-a-real-secret").decode(),
            },
        }
        kubernetes.kubectl("apply", "-f", "-", input=yaml.safe_dump(secret))
        stacks = LocalStacks(moto.endpoint_url)
        env = operator_environment(
            kubernetes.kubeconfig,
            moto.endpoint_url,
            stacks.network("bench"),
            engine_image="dth-engine:bench",
            observe_interval=observe_interval,
        )
        log_path = workdir / "operator.log"
        with log_path.open("w") as log:
            operator = subprocess.Popen(
                [sys.executable, "-m", "dth_operator", "--namespace", NAMESPACE, "--standalone", "--liveness", ""],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                time.sleep(3)  # let it connect and list the (empty) namespace before the burst
                idle_rss = peak_rss_mib(operator.pid)
                manifests = {"apiVersion": "v1", "kind": "List", "items": [task_manifest(n) for n in range(tasks)]}
                started = time.perf_counter()
                kubernetes.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifests))
                applied = time.perf_counter() - started
                # Watched through the API server, not CloudFormation, so that the watching does not take moto's
                # time from the operator: moto creates a stack within CreateStack, so a task whose status names
                # its stack has one (checked against CloudFormation at the end).
                all_stacks = all_phases = None
                deadline = started + 1800
                while all_stacks is None or all_phases is None:
                    if operator.poll() is not None or time.perf_counter() > deadline:
                        raise RuntimeError(f"operator exited or timed out; see {log_path}")
                    seen = statuses(kubernetes)
                    if all_stacks is None and sum(1 for s in seen if s.get("stackName")) == tasks:
                        all_stacks = time.perf_counter() - started
                    if all_phases is None and sum(1 for s in seen if s.get("phase") == "Running") == tasks:
                        all_phases = time.perf_counter() - started
                    time.sleep(1)
                # A few observe ticks for all tasks, so the peak includes steady-state polling of 200 stacks.
                time.sleep(max(2 * observe_interval, 10))
                peak = peak_rss_mib(operator.pid)
                current = stack_statuses(stacks)
            finally:
                operator.terminate()
                operator.wait(timeout=30)
        failed = sorted(name for name, status in current.items() if status != "CREATE_COMPLETE")
        return {
            "tasks": tasks,
            "apply_seconds": applied,
            "all_stacks_seconds": all_stacks,
            "all_phases_seconds": all_phases,
            "stacks": len(current),
            "stacks_not_complete": failed,
            "operator_idle_rss_mib": idle_rss,
            "operator_peak_rss_mib": peak,
        }


def run_direct(tasks: int) -> dict[str, Any]:
    """The peer: the same stacks straight from boto3, sequentially, on a fresh moto."""
    with MotoServer() as moto:
        stacks = LocalStacks(moto.endpoint_url)
        network = stacks.network("bench")
        settings = PluginSettings(
            image="dth-engine:bench",
            subnets=network.subnets,
            security_groups=network.security_groups,
            finder=TaskSize(1024, 2048),
            worker=TaskSize(2048, 4096),
        )
        secrets = stacks.client("secretsmanager")
        template = template_path("s3-plugin.yaml").read_text(encoding="utf-8")
        started = time.perf_counter()
        for number in range(tasks):
            name = f"{NAMESPACE}-task-{number:04d}"
            spec = S3TaskSpec.model_validate(task_manifest(number)["spec"])
            arn = secrets.create_secret(Name=f"dth/{name}/oss-keys", SecretString="{}")["ARN"]
            parameters = s3_stack_parameters(name, spec, settings, secret_arns={"oss-keys": arn})
            stacks.cloudformation.create_stack(
                StackName=f"dth-{name}", TemplateBody=template, Parameters=parameters, Capabilities=CAPABILITIES
            )
        elapsed = time.perf_counter() - started
        complete = sum(1 for s in stack_statuses(stacks).values() if s == "CREATE_COMPLETE")
        return {"tasks": tasks, "all_stacks_seconds": elapsed, "stacks_complete": complete}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--observe-interval", type=float, default=30.0, help="the operator's DTH_OBSERVE_INTERVAL")
    parser.add_argument("--json", type=Path, default=None, help="where to write the results")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dth-operator-bench-") as scratch:
        operator = run_operator(args.tasks, args.observe_interval, Path(scratch))
    direct = run_direct(args.tasks)
    load = os.getloadavg()[0]
    print(f"{args.tasks} TransferTasks applied at once (load average {load:.1f} on {os.cpu_count()} cores)")
    print(f"{'':34} {'operator':>10} {'boto3 direct':>13} {'ratio':>7}")
    ratio = operator["all_stacks_seconds"] / direct["all_stacks_seconds"]
    print(
        f"{'until every stack exists (s)':34} {operator['all_stacks_seconds']:>10.1f} "
        f"{direct['all_stacks_seconds']:>13.1f} {ratio:>6.2f}x"
    )
    print(f"{'until every task is Running (s)':34} {operator['all_phases_seconds']:>10.1f}")
    print(
        f"{'stacks/s':34} {args.tasks / operator['all_stacks_seconds']:>10.2f} "
        f"{args.tasks / direct['all_stacks_seconds']:>13.2f}"
    )
    print(
        f"{'operator RSS idle / peak (MiB)':34} {operator['operator_idle_rss_mib']:>4.0f} / "
        f"{operator['operator_peak_rss_mib']:.0f}"
    )
    if operator["stacks_not_complete"] or direct["stacks_complete"] != args.tasks:
        print(f"NOT COMPLETE: operator {operator['stacks_not_complete']}, direct {direct['stacks_complete']}")
    results = {"date": date.today().isoformat(), "load_average": load, "operator": operator, "direct": direct}
    target = args.json or ROOT / "bench" / "results" / f"operator_scale-{date.today().isoformat()}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(results, indent=2))
    print(f"results: {target}")
    return 0 if not operator["stacks_not_complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
