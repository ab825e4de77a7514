"""The operator's own calls to the Kubernetes API (kopf's have their own settings): every one with a timeout,
so that an API server that accepts a connection and never answers fails the call instead of hanging it."""

from __future__ import annotations

import kopf
import urllib3

#: Seconds to connect, and to wait for the answer. Read at each call (tests shorten it).
REQUEST_TIMEOUT: tuple[float, float] = (10.0, 30.0)

#: What the kubernetes client raises when the server is unreachable or silent (not an ApiException).
UNANSWERED = (urllib3.exceptions.HTTPError, OSError)


def unanswered(what: str, error: Exception) -> kopf.TemporaryError:
    return kopf.TemporaryError(f"the API server did not answer {what}: {type(error).__name__}", delay=10)
