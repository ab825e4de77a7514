"""`dth dev ecs-runner`'s flags, apart from the runner (dth.devtools.ecs_runner): `dth`'s parser offers them
without importing the runner and its pod and moto helpers."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--endpoint-url",
        default=os.environ.get("AWS_ENDPOINT_URL"),
        help="the moto server (default: $AWS_ENDPOINT_URL)",
    )
    parser.add_argument("--region", default=os.environ.get("AWS_REGION") or "us-east-1")
    parser.add_argument("--poll-interval", type=float, default=1.0, metavar="SECONDS")
    parser.add_argument("--log-dir", type=Path, help="where the containers' output goes (default: a temp folder)")
    parser.add_argument(
        "--fire-schedules-now",
        action="store_true",
        help="also run every scheduled rule's targets once as soon as the rule is seen",
    )
    parser.add_argument(
        "--cluster",
        action="append",
        dest="clusters",
        metavar="NAME",
        help="only this cluster (name or ARN; repeat for more); default: every cluster",
    )
    parser.add_argument(
        "--max-stop-timeout",
        type=float,
        metavar="SECONDS",
        help="wait at most this long after SIGTERM before SIGKILL (default: each container's stopTimeout)",
    )
