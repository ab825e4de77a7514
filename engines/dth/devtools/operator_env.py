"""The environment of a local operator process: the API server's kubeconfig, moto as AWS, and the network
the plugin stacks' tasks would run in (tests and benchmarks run `python -m dth_operator` with it)."""

from __future__ import annotations

import os
from pathlib import Path

from dth.devtools.moto import MOTO_ACCESS_KEY, MOTO_SECRET_KEY
from dth.devtools.stacks import Network


def operator_environment(
    kubeconfig: Path,
    aws_endpoint: str,
    network: Network,
    *,
    engine_image: str = "dth-engine:local",
    observe_interval: float = 30.0,
    metrics_port: int = 0,
    cluster_id: str = "default",
    stack_retry_delay: float = 10.0,
) -> dict[str, str]:
    """This process's environment without AWS or DTH settings of its own (the CA bundle stays), then the
    operator's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DTH_")) or k == "AWS_CA_BUNDLE"}
    env.update(
        KUBECONFIG=str(kubeconfig),
        AWS_ENDPOINT_URL=aws_endpoint,
        AWS_ACCESS_KEY_ID=MOTO_ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=MOTO_SECRET_KEY,
        AWS_REGION="us-east-1",
        DTH_SUBNETS=",".join(network.subnets),
        DTH_SECURITY_GROUPS=",".join(network.security_groups),
        DTH_ENGINE_IMAGE=engine_image,
        DTH_OBSERVE_INTERVAL=str(observe_interval),
        DTH_METRICS_PORT=str(metrics_port),
        DTH_CLUSTER_ID=cluster_id,
        DTH_STACK_RETRY_DELAY=str(stack_retry_delay),
    )
    return env
