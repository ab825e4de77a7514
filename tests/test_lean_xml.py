"""The one-scan reading of a ListObjectsV2 page (entries of the flat form every S3 look-alike writes) gives what
the entry-by-entry reading gives, for odd keys in both encodings; a page with any other entry is read entry by
entry. A narrow unit test: answers from real servers are compared with boto3's in tests/test_lean_client.py."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape

import pytest

from dth.s3.lean import xml
from dth.s3.lean.model import s3_service_model

KEYS = [
    "plain.txt",
    "with space",
    "plus+sign",
    "percent%41%2F",
    "unicodé/ü/日本",
    "line\nbreak",
    "tab\tand\x01control",
    "amp&lt;tag>'apos\"quote",
    "incomplete %C3 escape",
]


def _page(keys: list[str], url: bool, extra: str = "") -> bytes:
    entries = "".join(
        f"<Contents><Key>{escape(quote(key, safe='/') if url else key)}</Key>"
        f"<LastModified>2026-01-02T03:04:05.000Z</LastModified><ETag>&quot;{index:032x}&quot;</ETag>"
        f"<Size>{index}</Size><StorageClass>STANDARD</StorageClass>{extra}</Contents>"
        for index, key in enumerate(keys)
    )
    encoding = "<EncodingType>url</EncodingType>" if url else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        f"<Name>b</Name><Prefix></Prefix><KeyCount>{len(keys)}</KeyCount><MaxKeys>1000</MaxKeys>"
        f"<IsTruncated>false</IsTruncated>{entries}"
        f"<CommonPrefixes><Prefix>dir/</Prefix></CommonPrefixes>{encoding}</ListBucketResult>"
    ).encode()


def _entry_by_entry(shape: Any, body: bytes, decode: bool) -> dict[str, Any]:
    original = xml._flat_contents
    try:
        xml._flat_contents = lambda *_: None  # type: ignore[assignment]
        return xml.parse_list_objects_v2(shape, body, decode)
    finally:
        xml._flat_contents = original


# A line break in a key takes the page's keys through unquote_plus one by one, not joined: both ways are read.
@pytest.mark.parametrize("keys", [KEYS, [k for k in KEYS if "\n" not in k]], ids=["line-break", "joined"])
@pytest.mark.parametrize("url", [True, False], ids=["url-encoded", "plain"])
@pytest.mark.parametrize("extra", ["", "<Type>Normal</Type>"], ids=["s3", "radosgw"])
def test_one_scan_reads_a_page_as_entry_by_entry_reading_does(keys: list[str], url: bool, extra: str) -> None:
    shape = s3_service_model().operation_model("ListObjectsV2").output_shape
    body = _page(keys, url, extra)
    fast = xml.parse_list_objects_v2(shape, body, url)
    assert xml._flat_contents(body.decode(), url, frozenset(shape.members["Contents"].member.members)) is not None
    assert fast == _entry_by_entry(shape, body, url)
    assert [entry["Key"] for entry in fast["Contents"]] == keys
    assert fast["CommonPrefixes"] == [{"Prefix": "dir/"}]


def test_a_page_with_other_entries_is_read_entry_by_entry() -> None:
    shape = s3_service_model().operation_model("ListObjectsV2").output_shape
    body = _page(KEYS, True, "<Owner><ID>me</ID></Owner>")
    assert xml._flat_contents(body.decode(), True, frozenset(shape.members["Contents"].member.members)) is None
    parsed = xml.parse_list_objects_v2(shape, body, True)
    assert [entry["Key"] for entry in parsed["Contents"]] == KEYS
    assert parsed["Contents"][0]["Owner"] == {"ID": "me"}
