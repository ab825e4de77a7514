"""A source object encrypted with SSE-KMS has an ETag that is not the MD5 of its content (on AWS), so its copy at
an unencrypted destination has another ETag: compared by ETag alone, it was copied again on every run.

moto stores SSE-KMS objects and says so (`ServerSideEncryption: aws:kms` on HEAD and GET), but gives them their
MD5 as ETag all the same. The test's fake says so openly: a client hook that plays AWS for the source's KMS
objects only, showing a non-MD5 ETag in the source's listings, HEADs, GETs and copy results, and translating it
back in conditions (If-Match, x-amz-copy-source-if-match) before they reach moto. Everything else is moto."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from dth.devtools.sites import S3Site
from dth.s3.compare import SOURCE_ETAG_METADATA
from dth.s3.sides import S3Side
from dth.s3.sync import StandaloneSync
from dth.spec.load import parse_task_spec
from dth.spec.model import S3TaskSpec


class AwsKmsEtags:
    """Shows the KMS objects of one bucket with ETags as AWS gives them: not their MD5."""

    def __init__(self, bucket: str, md5_of_kms_objects: set[str]) -> None:
        self.bucket = bucket
        self.fake = {
            real: hashlib.md5(b"kms:" + real.encode(), usedforsecurity=False).hexdigest() for real in md5_of_kms_objects
        }
        self.real = {fake: real for real, fake in self.fake.items()}

    def install(self, side: S3Side) -> None:
        events = side.client.meta.events
        events.register("provide-client-params.s3.*", self._translate_conditions)
        events.register("after-call.s3.*", self._show_fake_etags)

    def _translate_conditions(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["test-bucket"] = params.get("Bucket")
        source = params.get("CopySource")
        context["test-copy-source"] = source.get("Bucket") if isinstance(source, dict) else None
        for name in ("IfMatch", "CopySourceIfMatch"):
            etag = str(params.get(name, "")).strip('"')
            if etag in self.real:
                params[name] = f'"{self.real[etag]}"'

    def _fake(self, etag: Any) -> Any:
        bare = str(etag or "").strip('"')
        return f'"{self.fake[bare]}"' if bare in self.fake else etag

    def _show_fake_etags(self, parsed: dict[str, Any], context: dict[str, Any], model: Any, **_: Any) -> None:
        if context.get("test-bucket") != self.bucket:
            return  # the destination is not encrypted with KMS: its ETags are MD5s, as on AWS
        for entry in parsed.get("Contents", []):
            entry["ETag"] = self._fake(entry.get("ETag"))
        if model.name in {"HeadObject", "GetObject"}:
            parsed["ETag"] = self._fake(parsed.get("ETag"))


class SyncPlayingAws(StandaloneSync):
    def __init__(self, spec: S3TaskSpec, kms: AwsKmsEtags, **kwargs: Any) -> None:
        super().__init__(spec, **kwargs)
        self.kms = kms

    def _connect(self) -> tuple[S3Side, S3Side]:
        source, destination = super()._connect()
        self.kms.install(source)
        self.kms.install(destination)
        return source, destination


def test_a_kms_encrypted_source_is_recognised_as_copied_on_the_next_run(
    moto_site: S3Site, unique_name: str, tmp_path: Path, monkeypatch: Any
) -> None:
    client = moto_site.client()
    client.create_bucket(Bucket=unique_name)
    client.create_bucket(Bucket=f"{unique_name}-dst")
    secret = client.put_object(Bucket=unique_name, Key="secret.txt", Body=b"classified", ServerSideEncryption="aws:kms")
    client.put_object(Bucket=unique_name, Key="plain.txt", Body=b"public")
    kms = AwsKmsEtags(unique_name, {secret["ETag"].strip('"')})
    # The fake plays AWS through botocore's event hooks, which only boto3's client fires; what is tested (the
    # copier's record and the compare strategy) is the same code on the lean client.
    monkeypatch.setenv("DTH_S3_CLIENT", "boto3")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto_site.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto_site.secret_key)
    for streamed in (False, True):  # server side (CopyObject), and through this machine (GET, PUT)
        destination = f"{unique_name}-dst"
        prefix = "streamed/" if streamed else "copied/"
        spec = parse_task_spec(
            {
                "type": "S3",
                "source": {"type": "S3_Compatible", "endpoint": moto_site.url, "bucket": unique_name},
                "destination": {
                    "type": "S3_Compatible",
                    # Another name for the same server: the engine cannot copy server side, so it streams.
                    "endpoint": moto_site.url.replace("127.0.0.1", "localhost") if streamed else moto_site.url,
                    "bucket": destination,
                    "prefix": prefix,
                },
                "options": {"workers": 2},
            }
        )
        assert isinstance(spec, S3TaskSpec)
        runs = [
            SyncPlayingAws(spec, kms, task_name=f"kms-{prefix}", state_path=tmp_path / f"{streamed}.db").run()
            for _ in range(2)
        ]
        assert [(run.counters.copied, run.counters.skipped, run.counters.failed) for run in runs] == [
            (2, 0, 0),
            (0, 2, 0),
        ]
        copy = client.head_object(Bucket=destination, Key=f"{prefix}secret.txt")
        assert copy["Metadata"][SOURCE_ETAG_METADATA] == kms.fake[secret["ETag"].strip('"')]
        assert client.get_object(Bucket=destination, Key=f"{prefix}secret.txt")["Body"].read() == b"classified"
