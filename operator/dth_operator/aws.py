"""AWS clients for the operator, and what their errors mean for a reconcile: worth a retry, or a
problem to report on the resource."""

from __future__ import annotations

from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import kopf

from dth_operator import metrics

# Worth trying again: the service is busy, or failed on its side.
RETRYABLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "SlowDown",
        "InternalFailure",
        "InternalError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
    }
)


class Clients:
    """One boto3 session per operator; clients are thread-safe and reused across handlers."""

    def __init__(self, region: str) -> None:
        config = botocore.config.Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5)
        session = boto3.Session(region_name=region)
        self.cloudformation: Any = session.client("cloudformation", config=config)
        self.secretsmanager: Any = session.client("secretsmanager", config=config)
        self.dynamodb: Any = session.client("dynamodb", config=config)
        self.sqs: Any = session.client("sqs", config=config)
        self.ecs: Any = session.client("ecs", config=config)  # "run now" starts a finder task
        # The liveness probe must answer within the kubelet's timeout: one attempt, short timeouts.
        quick = botocore.config.Config(
            retries={"mode": "standard", "max_attempts": 1}, connect_timeout=2, read_timeout=3
        )
        self.probe: Any = session.client("cloudformation", config=quick)


def error_code(error: botocore.exceptions.ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", "Unknown"))


def error_message(error: botocore.exceptions.ClientError) -> str:
    return str(error.response.get("Error", {}).get("Message", "")) or error_code(error)


def is_retryable(error: Exception) -> bool:
    if isinstance(error, botocore.exceptions.ClientError):
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        return error_code(error) in RETRYABLE_CODES or status >= 500
    return isinstance(error, botocore.exceptions.BotoCoreError)


def temporary(error: Exception, service: str, delay: float = 10.0) -> kopf.TemporaryError:
    """Count the error and turn it into a retry of the handler after `delay` seconds."""
    code = error_code(error) if isinstance(error, botocore.exceptions.ClientError) else type(error).__name__
    metrics.AWS_ERRORS.labels(service=service, code=code).inc()
    return kopf.TemporaryError(f"{service}: {code}; retrying", delay=delay)


def count(error: Exception, service: str) -> None:
    code = error_code(error) if isinstance(error, botocore.exceptions.ClientError) else type(error).__name__
    metrics.AWS_ERRORS.labels(service=service, code=code).inc()
