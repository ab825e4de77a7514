"""Registry credentials from a spec's reference: a Kubernetes Secret, a Secrets Manager secret or, for
standalone runs, environment variables. Passwords stay inside `Login` (never in a repr, log or error)."""

from __future__ import annotations

import base64
import binascii
import json
import os
from typing import Any

from dth.errors import AccessError
from dth.image.refs import DOCKER_HUB_NAMES
from dth.image.registry import Login
from dth.secret_sources import kubernetes_secret_fields, secrets_manager_fields
from dth.spec.image import ImageCredentials

USERNAME_FIELD = "username"
PASSWORD_FIELD = "password"
DOCKER_CONFIG_FIELD = ".dockerconfigjson"


def _login_from_mapping(values: dict[str, Any], host: str, where: str) -> Login:
    if DOCKER_CONFIG_FIELD in values and USERNAME_FIELD not in values:
        try:
            config = json.loads(values[DOCKER_CONFIG_FIELD])
        except (TypeError, ValueError):
            raise AccessError(f"{where}: {DOCKER_CONFIG_FIELD} is not JSON") from None
        login = login_from_docker_config(config, host)
        if login is None:
            raise AccessError(f"{where}: {DOCKER_CONFIG_FIELD} has no entry for {host}")
        return login
    missing = [name for name in (USERNAME_FIELD, PASSWORD_FIELD) if not values.get(name)]
    if missing:
        raise AccessError(f"{where} has no {' or '.join(missing)}")
    return Login(str(values[USERNAME_FIELD]), str(values[PASSWORD_FIELD]))


def login_from_docker_config(config: dict[str, Any], host: str) -> Login | None:
    """The entry for `host` in a Docker/containers auth file ({"auths": {host: {"auth": b64(user:pass)}}})."""
    auths = config.get("auths")
    if not isinstance(auths, dict):
        return None
    wanted = {host.lower()}
    if host.lower() in DOCKER_HUB_NAMES:
        wanted |= set(DOCKER_HUB_NAMES) | {"https://index.docker.io/v1/"}
    for key, entry in auths.items():
        name = str(key).lower().removeprefix("https://").removeprefix("http://").rstrip("/")
        if (str(key).lower() in wanted or name in wanted) and isinstance(entry, dict):
            if entry.get("username") and entry.get("password"):
                return Login(str(entry["username"]), str(entry["password"]))
            try:
                user, _, password = base64.b64decode(str(entry.get("auth", ""))).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None
            if user and password:
                return Login(user, password)
    return None


def login_from_env(prefix: str) -> Login:
    username = os.environ.get(f"{prefix}_USERNAME")
    password = os.environ.get(f"{prefix}_PASSWORD")
    missing = [
        name for name, value in ((f"{prefix}_USERNAME", username), (f"{prefix}_PASSWORD", password)) if not value
    ]
    if missing:
        raise AccessError(f"credentials name environment variables {prefix}_*, but {' and '.join(missing)} is not set")
    assert username is not None and password is not None
    return Login(username, password)


def login_from_secrets_manager(arn: str, host: str) -> Login:
    values, where = secrets_manager_fields(arn)
    return _login_from_mapping(values, host, where)


def login_from_kubernetes(name: str, namespace: str, host: str) -> Login:
    data, where = kubernetes_secret_fields(name, namespace)
    return _login_from_mapping(data, host, where)


def registry_login(credentials: ImageCredentials | None, host: str, namespace: str = "default") -> Login | None:
    """The username and password a Registry side names; None for anonymous access."""
    if credentials is None:
        return None
    if credentials.env:
        return login_from_env(credentials.env)
    if credentials.secrets_manager_arn:
        return login_from_secrets_manager(credentials.secrets_manager_arn, host)
    if credentials.secret_name:
        return login_from_kubernetes(credentials.secret_name, namespace, host)
    raise AccessError("credentials.profile names an AWS profile: a Registry needs env, secretName or secretsManagerArn")
