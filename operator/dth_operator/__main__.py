"""`python -m dth_operator`: run the operator (kopf) with its handlers."""

from __future__ import annotations

import argparse
import secrets
import sys

import kopf

from dth_operator import admission, finalizer, handlers, observe, rotation, run_now  # noqa: F401 - importing registers the handlers


def main() -> int:
    parser = argparse.ArgumentParser(prog="dth-operator", description="Reconcile TransferTasks into plugin stacks.")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--namespace", action="append", default=[], help="watch this namespace (repeatable)")
    where.add_argument("--all-namespaces", action="store_true", help="watch the whole cluster")
    parser.add_argument("--standalone", action="store_true", help="no peering: this is the only replica")
    parser.add_argument("--peering", default="dth-operator", help="peering object shared by the replicas")
    parser.add_argument(
        "--priority",
        type=int,
        default=None,
        help="peering priority: the replica with the highest serves, the others wait (default: random, so that "
        "identical replicas never tie: kopf freezes every replica of a tie)",
    )
    parser.add_argument("--liveness", default="http://0.0.0.0:8081/healthz", help="liveness endpoint URL")
    parser.add_argument("--verbose", action="store_true", help="log every step of every handler")
    parser.add_argument(
        "--log-format",
        choices=["json", "text"],
        default="json",
        help="json: one object per line, with the task it concerns under 'object' (default); text: for a terminal",
    )
    args = parser.parse_args()
    if args.log_format == "json":
        kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.JSON, log_refkey="object")
    else:
        kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.FULL, log_prefix=True)
    kopf.run(
        standalone=args.standalone,
        peering_name=None if args.standalone else args.peering,
        priority=None if args.standalone else (args.priority if args.priority is not None else _random_priority()),
        clusterwide=args.all_namespaces,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness or None,
    )
    return 0


def _random_priority() -> int:
    return 1 + secrets.randbelow(2**31 - 2)


if __name__ == "__main__":
    sys.exit(main())
