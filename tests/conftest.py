"""Session-wide local S3 servers: an in-memory Ceph radosgw (two endpoints) and moto server.

Both are real servers in their own processes on 127.0.0.1. When a server's programs are not
installed the tests that need it are skipped, unless the environment variable CI is set: then
they fail, so that a CI machine without them cannot pass by skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import NoReturn

import pytest

from dth.devtools.moto import MOTO_ACCESS_KEY, MOTO_SECRET_KEY, MotoServer, moto_server_command
from dth.devtools.radosgw import RadosGateway, missing_binaries
from dth.devtools.sites import S3Site


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: the test servers are required)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def radosgw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RadosGateway]:
    """A started single-node Ceph radosgw serving the same data on two endpoints."""
    missing = missing_binaries()
    if missing:
        _unavailable(
            f"Ceph radosgw is not installed (missing {', '.join(missing)}; apt-get install radosgw ceph-mon ceph-osd)"
        )
    # Under pytest's temp dir, so the logs outlive a failed session.
    gateway = RadosGateway(tmp_path_factory.mktemp("radosgw"), endpoints=2)
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """A started moto server (S3, SQS, DynamoDB, ... on one endpoint)."""
    if moto_server_command() is None:
        _unavailable("moto server is not installed (pip install 'moto[server]')")
    server = MotoServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def rgw_site(radosgw: RadosGateway) -> S3Site:
    """radosgw through its first endpoint."""
    return S3Site(radosgw.endpoint_urls[0], radosgw.access_key, radosgw.secret_key)


@pytest.fixture(scope="session")
def rgw_site2(radosgw: RadosGateway) -> S3Site:
    """radosgw through its second endpoint: the same data and keys as ``rgw_site``."""
    return S3Site(radosgw.endpoint_urls[1], radosgw.access_key, radosgw.secret_key)


@pytest.fixture(scope="session")
def moto_site(moto_server: MotoServer) -> S3Site:
    """S3 on moto server (moto accepts any credentials)."""
    return S3Site(moto_server.endpoint_url, MOTO_ACCESS_KEY, MOTO_SECRET_KEY)


@pytest.fixture
def unique_name() -> str:
    """A fresh bucket-safe name for this test, like ``t-1a2b3c4d``."""
    return f"t-{uuid.uuid4().hex[:8]}"
