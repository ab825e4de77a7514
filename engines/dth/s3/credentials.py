"""Turning a spec's credential reference into a boto3 session. Secret values never leave this module
except inside the session, and never appear in a repr, a log line or an error."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field

import boto3
import botocore.exceptions

from dth.errors import AccessError
from dth.spec.model import Credentials

ACCESS_KEY_FIELD = "access_key_id"
SECRET_KEY_FIELD = "secret_access_key"


@dataclass(frozen=True)
class KeyPair:
    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


def _key_pair_from_mapping(values: dict[str, str], where: str) -> KeyPair:
    missing = [name for name in (ACCESS_KEY_FIELD, SECRET_KEY_FIELD) if not values.get(name)]
    if missing:
        raise AccessError(f"{where} has no {' or '.join(missing)}")
    return KeyPair(values[ACCESS_KEY_FIELD], values[SECRET_KEY_FIELD], values.get("session_token"))


def key_pair_from_secrets_manager(arn: str, session: boto3.Session | None = None) -> KeyPair:
    client = (session or boto3.Session()).client("secretsmanager", region_name=arn.split(":")[3])
    try:
        secret = client.get_secret_value(SecretId=arn)["SecretString"]
    except botocore.exceptions.ClientError as error:
        code = error.response.get("Error", {}).get("Code", "Error")
        raise AccessError(f"cannot read Secrets Manager secret {arn}: {code}") from None
    try:
        values = json.loads(secret)
    except json.JSONDecodeError:
        raise AccessError(f"Secrets Manager secret {arn} is not JSON") from None
    return _key_pair_from_mapping(values, f"Secrets Manager secret {arn}")


def key_pair_from_kubernetes(name: str, namespace: str) -> KeyPair:
    # Imported here: engines running on ECS never talk to Kubernetes.
    import kubernetes

    try:
        try:
            kubernetes.config.load_incluster_config()
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config()
        secret = kubernetes.client.CoreV1Api().read_namespaced_secret(name, namespace)
    except kubernetes.config.ConfigException:
        raise AccessError(f"credentials name Kubernetes Secret {name!r}, but no cluster is configured") from None
    except kubernetes.client.ApiException as error:
        raise AccessError(f"cannot read Kubernetes Secret {namespace}/{name}: {error.reason}") from None
    data = {key: base64.b64decode(value).decode() for key, value in (secret.data or {}).items()}
    return _key_pair_from_mapping(data, f"Kubernetes Secret {namespace}/{name}")


def session_for(credentials: Credentials | None, namespace: str = "default") -> boto3.Session:
    """A boto3 session holding the credentials the spec names (ambient ones when it names none)."""
    if credentials is None:
        return boto3.Session()
    if credentials.profile:
        try:
            return boto3.Session(profile_name=credentials.profile)
        except botocore.exceptions.ProfileNotFound:
            raise AccessError(f"AWS profile {credentials.profile!r} is not configured") from None
    if credentials.secrets_manager_arn:
        pair = key_pair_from_secrets_manager(credentials.secrets_manager_arn)
    else:
        assert credentials.secret_name is not None  # the model guarantees exactly one source
        pair = key_pair_from_kubernetes(credentials.secret_name, namespace)
    return session_from_key_pair(pair)


def session_from_key_pair(pair: KeyPair) -> boto3.Session:
    return boto3.Session(
        aws_access_key_id=pair.access_key_id,
        aws_secret_access_key=pair.secret_access_key,
        aws_session_token=pair.session_token,
    )


def access_key_of(session: boto3.Session) -> str | None:
    """The public half of the key pair, to tell whether two sides share an identity."""
    credentials = session.get_credentials()
    return credentials.access_key if credentials else None
