"""`dth console`: serve the web console with uvicorn, locally with a kubeconfig or in a cluster."""

from __future__ import annotations

import argparse
import ipaddress
from pathlib import Path

from dth.errors import DthError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        help="local mode: one person, their own kubeconfig, no sign-in, 127.0.0.1 only. Without it the console "
        "runs in-cluster: its ServiceAccount, impersonating the user signed in with OIDC (DTH_CONSOLE_OIDC_*)",
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from dth.console.app import create_app
    from dth.console.kube import Kube, KubeError
    from dth.console.settings import ConsoleSettings

    settings = ConsoleSettings.from_environment()
    local = args.kubeconfig is not None
    if local and not _loopback(args.host):
        raise DthError("local mode (--kubeconfig) serves 127.0.0.1 only: it signs no one in")
    if not local and not (settings.oidc_issuer and settings.oidc_client_id):
        raise DthError(
            "in-cluster mode needs sign-in: set DTH_CONSOLE_OIDC_ISSUER and DTH_CONSOLE_OIDC_CLIENT_ID "
            "(or pass --kubeconfig for local mode)"
        )
    try:
        if local:
            kube = Kube.from_kubeconfig(args.kubeconfig, impersonate=False)
        elif settings.service_kubeconfig is not None:
            kube = Kube.from_kubeconfig(settings.service_kubeconfig, impersonate=True)
        else:
            kube = Kube.in_cluster()
    except KubeError as error:
        raise DthError(str(error)) from None
    except Exception as error:  # an unreadable kubeconfig
        raise DthError(f"cannot use the kubeconfig: {error}") from None
    app = create_app(settings, kube, local=local)
    print(f"dth console: serving on http://{args.host}:{args.port}/ ({'local' if local else 'in-cluster'} mode)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", proxy_headers=not local)
    return 0
