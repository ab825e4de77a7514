"""Worker mode for S3 event notifications, on radosgw, with notifications shaped as S3 sends them."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest

from dth.devtools.sites import S3Site
from dth.s3.copier import ObjectCopier
from dth.s3.credentials import KeyPair, session_from_key_pair
from dth.s3.events import EventKind, EventTranslator, parse_event_body
from dth.s3.sides import connect
from dth.s3.worker import RetryPolicy, Worker
from dth.spec.load import parse_task_spec
from dth.spec.model import S3TaskSpec
from dth.state.queue import SqliteQueue
from dth.state.store import SqliteStatusStore


def notification(bucket: str, key: str, name: str, sequencer: str, size: int = 0, etag: str = "") -> str:
    obj: dict[str, Any] = {"key": quote_plus(key), "sequencer": sequencer}
    if name.startswith("ObjectCreated"):
        obj.update(size=size, eTag=etag)
    return json.dumps(
        {
            "Records": [
                {
                    "eventVersion": "2.1",
                    "eventSource": "aws:s3",
                    "eventName": name,
                    "s3": {"bucket": {"name": bucket}, "object": obj},
                }
            ]
        }
    )


def test_parse_event_body_decodes_keys_and_ignores_other_messages() -> None:
    body = notification("b", "dir/a key+plus.txt", "ObjectCreated:Put", "0055AED6DCD90281E5", 5, '"abc"')
    (event,) = parse_event_body(body) or []
    assert event.kind is EventKind.CREATED
    assert event.key == "dir/a key+plus.txt"
    assert (event.size, event.etag, event.sequencer) == (5, "abc", "0055AED6DCD90281E5")
    assert parse_event_body(json.dumps({"Event": "s3:TestEvent", "Bucket": "b"})) == []
    assert parse_event_body("not json") is None
    assert parse_event_body(json.dumps({"Records": [{"eventName": "ObjectRestore:Post"}]})) == []


@pytest.mark.parametrize("mode", ["Create", "CreateAndDelete"])
def test_events_copy_deletes_only_in_create_and_delete_mode_and_drop_stale_ones(
    rgw_site: S3Site, unique_name: str, tmp_path: Path, mode: str
) -> None:
    client = rgw_site.client()
    src, dst = f"{unique_name}-src", f"{unique_name}-dst"
    client.create_bucket(Bucket=src)
    client.create_bucket(Bucket=dst)
    new = client.put_object(Bucket=src, Key="in/new file", Body=b"fresh")["ETag"]
    client.put_object(Bucket=dst, Key="out/gone", Body=b"old copy")
    client.put_object(Bucket=src, Key="in/raced", Body=b"second version")
    raced = client.head_object(Bucket=src, Key="in/raced")["ETag"]
    client.put_object(Bucket=src, Key="elsewhere/x", Body=b"not under the prefix")

    spec = parse_task_spec(
        {
            "type": "S3",
            "source": {"type": "S3_Compatible", "endpoint": rgw_site.url, "bucket": src, "prefix": "in/"},
            "destination": {"type": "S3_Compatible", "endpoint": rgw_site.url, "bucket": dst, "prefix": "out/"},
            "events": mode,
        }
    )
    assert isinstance(spec, S3TaskSpec)
    state = tmp_path / "state.db"
    store = SqliteStatusStore(state)
    queue = SqliteQueue(state, name="events")
    queue.send(
        [
            notification(src, "in/new file", "ObjectCreated:Put", "0A", 5, new),
            notification(src, "in/gone", "ObjectRemoved:Delete", "0B"),
            # The newer event for "raced" arrives first; the older one after it must be dropped.
            notification(src, "in/raced", "ObjectCreated:Put", "0100", 14, raced),
            notification(src, "in/raced", "ObjectCreated:Put", "00FF", 1, '"0123456789abcdef0123456789abcdef"'),
            notification(src, "elsewhere/x", "ObjectCreated:Put", "0C", 20, "e"),
            json.dumps({"Event": "s3:TestEvent"}),
        ]
    )
    session = session_from_key_pair(KeyPair(rgw_site.access_key, rgw_site.secret_key))
    source = connect("source", spec.source, session=session)
    destination = connect("destination", spec.destination, session=session)
    with ThreadPoolExecutor(max_workers=2) as parts:
        worker = Worker(
            ObjectCopier(source, destination, spec.options, parts),
            queue,
            store,
            workers=2,
            retry=RetryPolicy(max_retries=1, base_delay=0.05),
            events=EventTranslator("events-task", spec, store),
        )
        worker.run(done=lambda: True)

    keys = {item["Key"] for item in client.list_objects_v2(Bucket=dst).get("Contents", [])}
    expected = {"out/new file", "out/raced"} | (set() if mode == "CreateAndDelete" else {"out/gone"})
    assert keys == expected
    assert client.get_object(Bucket=dst, Key="out/raced")["Body"].read() == b"second version"
    assert queue.depth().dead == 0
    run = store.latest_run("events-task")
    assert run is not None
    counters = store.counters(run)
    assert counters.copied == 2
    assert counters.deleted == (1 if mode == "CreateAndDelete" else 0)
