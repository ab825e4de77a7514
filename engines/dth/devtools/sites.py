"""Where an S3 service is and how to reach it: shared by the tests and the benchmarks."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

# botocore session variables that would otherwise come from the environment or ~/.aws:
# a site's client must not depend on AWS_PROFILE, AWS_CONFIG_FILE or the files they name.
_ISOLATED_SESSION_VARS: dict[str, tuple[str | None, str | None, str | None, None]] = {
    "profile": (None, None, None, None),
    "config_file": (None, None, os.devnull, None),
    "credentials_file": (None, None, os.devnull, None),
}


@dataclass(frozen=True)
class S3Site:
    """An S3 endpoint with explicit credentials (ambient AWS_* variables and profiles are not used)."""

    url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def client(
        self,
        *,
        max_pool_connections: int = 10,
        max_attempts: int = 3,
        connect_timeout: float = 10,
        read_timeout: float = 60,
    ) -> Any:
        """A boto3 S3 client for this site: path-style addressing, checksums only when required."""
        import boto3
        import botocore.session
        from botocore.config import Config

        session = boto3.session.Session(
            botocore_session=botocore.session.Session(session_vars=_ISOLATED_SESSION_VARS),
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )
        return session.client(
            "s3",
            endpoint_url=self.url,
            config=Config(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                max_pool_connections=max_pool_connections,
                retries={"max_attempts": max_attempts, "mode": "standard"},
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
            ),
        )

    def with_keys(self, access_key: str, secret_key: str) -> S3Site:
        """The same endpoint with other credentials."""
        return S3Site(self.url, access_key, secret_key, self.region)

    def env(self) -> dict[str, str]:
        """Environment variables that point AWS tools (aws-cli, s5cmd) at this site."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
        }
