"""Reading a secret's fields from where a spec says they are: an AWS Secrets Manager secret (a JSON object) or
a Kubernetes Secret. The S3 engine takes key pairs from them, the image engine registry logins."""

from __future__ import annotations

import base64
import json
from typing import Any

from dth.errors import AccessError


def secrets_manager_fields(arn: str, session: Any = None) -> tuple[dict[str, Any], str]:
    """The secret's JSON object and a description of where it came from, for error messages."""
    import boto3
    import botocore.exceptions

    client = (session or boto3.Session()).client("secretsmanager", region_name=arn.split(":")[3])
    try:
        secret = client.get_secret_value(SecretId=arn)["SecretString"]
    except botocore.exceptions.ClientError as error:
        code = error.response.get("Error", {}).get("Code", "Error")
        raise AccessError(f"cannot read Secrets Manager secret {arn}: {code}") from None
    except botocore.exceptions.BotoCoreError as error:
        raise AccessError(f"cannot read Secrets Manager secret {arn}: {error}") from None
    try:
        values = json.loads(secret)
    except json.JSONDecodeError:
        raise AccessError(f"Secrets Manager secret {arn} is not JSON") from None
    if not isinstance(values, dict):
        raise AccessError(f"Secrets Manager secret {arn} is not a JSON object")
    return values, f"Secrets Manager secret {arn}"


def kubernetes_secret_fields(name: str, namespace: str) -> tuple[dict[str, str], str]:
    """The Secret's data, decoded, and a description of where it came from."""
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
    return data, f"Kubernetes Secret {namespace}/{name}"
