"""moto's server application, with CloudFormation requests taken one at a time.

moto builds a stack's resources lazily: reading a stack (its outputs resolve Ref and GetAtt) creates any
resource not built yet. A DescribeStacks that arrives while CreateStack is still building the same stack
builds some resources a second time, and one of them fails ("The specified log group already exists"),
which moto then returns as the answer to the describe call and as the stack's failure. One lock around the
CloudFormation requests removes that race; the other services keep moto's threads (SQS long polls must not
hold up everything else).

    python -m dth.devtools.moto_app -H 127.0.0.1 -p PORT
"""

from __future__ import annotations

import argparse
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# The service is in the SigV4 credential scope: Credential=AKID/20260101/us-east-1/cloudformation/aws4_request
_CLOUDFORMATION_SCOPE = "/cloudformation/aws4_request"


class SerializedCloudFormation:
    """WSGI middleware: CloudFormation requests one at a time, each read to its end before the next."""

    def __init__(self, app: WsgiApp) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if _CLOUDFORMATION_SCOPE not in environ.get("HTTP_AUTHORIZATION", ""):
            return self._app(environ, start_response)
        with self._lock:
            # The body is produced inside the lock: a lazy response body would otherwise build the stack
            # after the lock is released.
            return list(self._app(environ, start_response))


def main(argv: Sequence[str] | None = None) -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import run_simple

    parser = argparse.ArgumentParser(prog="python -m dth.devtools.moto_app")
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))  # as moto's own server does: some URLs it makes use it
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, SerializedCloudFormation(app), threaded=True)


if __name__ == "__main__":
    main()
