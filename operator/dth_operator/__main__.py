"""`python -m dth_operator`: run the operator (kopf) with its handlers."""

from __future__ import annotations

import argparse
import sys

import kopf

from dth_operator import handlers  # noqa: F401 - importing registers the handlers


def main() -> int:
    parser = argparse.ArgumentParser(prog="dth-operator", description="Reconcile TransferTasks into plugin stacks.")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--namespace", action="append", default=[], help="watch this namespace (repeatable)")
    where.add_argument("--all-namespaces", action="store_true", help="watch the whole cluster")
    parser.add_argument("--standalone", action="store_true", help="no peering: this is the only replica")
    parser.add_argument("--peering", default="dth-operator", help="peering object shared by the replicas")
    parser.add_argument("--liveness", default="http://0.0.0.0:8081/healthz", help="liveness endpoint URL")
    parser.add_argument("--verbose", action="store_true", help="log every step of every handler")
    args = parser.parse_args()
    kopf.configure(verbose=args.verbose)
    kopf.run(
        standalone=args.standalone,
        peering_name=None if args.standalone else args.peering,
        clusterwide=args.all_namespaces,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness or None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
