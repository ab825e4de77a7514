"""The engine's S3 clients (dth.s3.sides.connect) on radosgw: what they change of botocore's defaults for speed,
and that nothing else changes."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import boto3
import pytest

from dth.devtools.sites import S3Site
from dth.s3.sides import connect, connect_pair, same_connection, shares_service
from dth.spec.model import S3Location


def session_for(site: S3Site) -> boto3.Session:
    return boto3.Session(
        aws_access_key_id=site.access_key, aws_secret_access_key=site.secret_key, region_name="us-east-1"
    )


def test_listings_keep_timestamps_as_text_and_other_clients_keep_datetimes(rgw_site: S3Site, unique_name: str) -> None:
    session = session_for(rgw_site)
    location = S3Location.model_validate({"type": "S3_Compatible", "endpoint": rgw_site.url, "bucket": unique_name})
    side = connect("source", location, session=session)
    side.client.create_bucket(Bucket=unique_name)
    side.client.put_object(Bucket=unique_name, Key="a", Body=b"x")
    listed = side.client.list_objects_v2(Bucket=unique_name)["Contents"][0]["LastModified"]
    assert isinstance(listed, str) and listed.startswith("20")
    # The same session's next client is botocore's default again.
    plain = session.client("s3", endpoint_url=rgw_site.url)
    assert isinstance(plain.list_objects_v2(Bucket=unique_name)["Contents"][0]["LastModified"], datetime)


def test_endpoints_are_resolved_per_bucket_not_per_key(
    rgw_site: S3Site, unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    location = S3Location.model_validate({"type": "S3_Compatible", "endpoint": rgw_site.url, "bucket": unique_name})
    side = connect("destination", location, session=session_for(rgw_site))
    # boto3's own client (the lean client, where it is on, resolves a bucket's endpoint once: no calls at all).
    client = getattr(side.client, "boto3_client", side.client)
    client.create_bucket(Bucket=unique_name)
    client.put_object(Bucket=unique_name, Key="source", Body=b"payload")
    with caplog.at_level(logging.DEBUG, logger="botocore.regions"):
        for number in range(3):
            client.copy_object(
                Bucket=unique_name, Key=f"copy-{number}", CopySource={"Bucket": unique_name, "Key": "source"}
            )
    calls = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Calling endpoint provider")]
    assert len(calls) == 3 and all("'Bucket'" in call for call in calls)
    assert not any("'Key'" in call or "'CopySource'" in call for call in calls)  # one cache entry for all three
    for number in range(3):
        assert side.client.get_object(Bucket=unique_name, Key=f"copy-{number}")["Body"].read() == b"payload"


def test_sides_on_one_service_with_one_identity_share_a_client_and_others_do_not(
    rgw_site: S3Site, rgw_site2: S3Site, unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", rgw_site.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", rgw_site.secret_key)

    def location(site: S3Site, bucket: str, **extra: Any) -> S3Location:
        return S3Location.model_validate({"type": "S3_Compatible", "endpoint": site.url, "bucket": bucket, **extra})

    rgw_site.client().create_bucket(Bucket=unique_name)
    rgw_site.client().put_object(Bucket=unique_name, Key="a/x", Body=b"1")
    source, destination = connect_pair(location(rgw_site, unique_name, prefix="a/"), location(rgw_site, "other"))
    assert destination.client is source.client  # one client, one session, one pool
    assert (source.role, source.bucket, source.prefix) == ("source", unique_name, "a/")
    assert (destination.role, destination.bucket, destination.prefix) == ("destination", "other", "")
    assert shares_service(source, destination)
    assert [o["Key"] for o in source.client.list_objects_v2(Bucket=unique_name)["Contents"]] == ["a/x"]

    for other in (
        location(rgw_site2, "other"),  # another endpoint
        location(rgw_site, "other", region="eu-west-1"),
        location(rgw_site, "other", credentials={"profile": "elsewhere"}),
    ):
        assert not same_connection(source.location, other)
    source, destination = connect_pair(location(rgw_site, unique_name), location(rgw_site2, "other"))
    assert destination.client is not source.client
