"""AWS Signature Version 4 for S3, byte for byte what botocore's S3SigV4Auth produces for the same request.

The signing key depends only on the secret, the day, the region and the service: it is derived once per day
instead of four HMACs per request.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Mapping

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# Headers botocore leaves out of the signature (botocore.auth.SIGNED_HEADERS_BLACKLIST).
UNSIGNED_HEADERS = frozenset(
    {
        "connection",
        "expect",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "x-amzn-trace-id",
        "authorization",
    }
)
_MAX_CACHED_KEYS = 32


def amz_date_now() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def canonical_query(pairs: list[tuple[str, str | None]]) -> str:
    """Pairs already percent-encoded; a bare key (`?uploads`) signs as `uploads=`."""
    return "&".join(f"{key}={value or ''}" for key, value in sorted((k, v or "") for k, v in pairs))


class SigV4Signer:
    def __init__(self, service: str = "s3") -> None:
        self._service = service
        self._keys: dict[tuple[str, str, str], bytes] = {}
        self._lock = threading.Lock()

    def _signing_key(self, secret: str, day: str, region: str) -> bytes:
        cache_key = (secret, day, region)
        key = self._keys.get(cache_key)
        if key is None:
            key = hmac.new(("AWS4" + secret).encode(), day.encode(), hashlib.sha256).digest()
            for part in (region, self._service, "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            with self._lock:
                if len(self._keys) >= _MAX_CACHED_KEYS:
                    self._keys.clear()
                self._keys[cache_key] = key
        return key

    def sign(
        self,
        *,
        access_key: str,
        secret_key: str,
        token: str | None,
        region: str,
        method: str,
        host: str,
        path: str,
        query: list[tuple[str, str | None]],
        headers: dict[str, str],
        payload_hash: str,
        amz_date: str | None = None,
    ) -> None:
        """Add X-Amz-Date, X-Amz-Content-SHA256, X-Amz-Security-Token and Authorization to `headers`.
        `path` and `query` are as sent on the wire (already percent-encoded); `host` as the Host header."""
        amz_date = amz_date or amz_date_now()
        headers["X-Amz-Date"] = amz_date
        if token:
            headers["X-Amz-Security-Token"] = token
        headers["X-Amz-Content-SHA256"] = payload_hash
        signed = _signed_headers(headers, host)
        names = ";".join(name for name, _ in signed)
        canonical = "\n".join(
            (
                method,
                path,
                canonical_query(query),
                "".join(f"{name}:{value}\n" for name, value in signed),
                names,
                payload_hash,
            )
        )
        day = amz_date[:8]
        scope = f"{day}/{region}/{self._service}/aws4_request"
        string_to_sign = f"{ALGORITHM}\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(
            self._signing_key(secret_key, day, region), string_to_sign.encode(), hashlib.sha256
        ).hexdigest()
        headers["Authorization"] = (
            f"{ALGORITHM} Credential={access_key}/{scope}, SignedHeaders={names}, Signature={signature}"
        )


def _signed_headers(headers: Mapping[str, str], host: str) -> list[tuple[str, str]]:
    values: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower not in UNSIGNED_HEADERS:
            trimmed = " ".join(str(value).split())
            values[lower] = f"{values[lower]},{trimmed}" if lower in values else trimmed
    if "host" not in values:
        values["host"] = host
    return sorted(values.items())
