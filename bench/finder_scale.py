"""How the finder scales: the diff of 100k, 400k and 1M keys, in keys/s and peak RSS.

100k keys are listed from a real server (radosgw, started here); the larger sizes from a generated
stream shaped exactly like ListObjectsV2 pages (1,000 keys a page, in key order, with common prefixes
for delimited listings), since filling a local server with a million objects takes longer than the
benchmark itself. Each size runs in a fresh child process, so that its peak RSS is its own.

Target: peak RSS under 150 MB at every size (the merge-join never holds a listing in memory).

    python3 bench/finder_scale.py [--sizes 100000,400000,1000000] [--no-server]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from dth.s3.copier import ObjectCopier
from dth.s3.finder import Finder
from dth.s3.sides import S3Side
from dth.spec.load import parse_task_spec
from dth.spec.model import S3TaskSpec
from dth.state.queue import SqliteQueue
from dth.state.store import SqliteStatusStore

RSS_TARGET_MB = 150
CHANGED_EVERY = 10  # one key in ten differs at the destination, so a tenth of the keys are queued


def key_of(number: int) -> str:
    # 100 "directories" so that delimited, parallel listings have prefixes to split on.
    return f"dir-{number % 100:03d}/object-{number:09d}.dat"


class GeneratedListing:
    """A paginator over a virtual bucket of `count` keys, answering ListObjectsV2 as S3 does."""

    def __init__(self, count: int, etag_salt: str) -> None:
        self.keys_per_dir = count // 100
        self.count = count
        self.etag_salt = etag_salt

    def _keys(self, prefix: str) -> Iterator[str]:
        directories = [f"dir-{d:03d}/" for d in range(100)]
        for directory in directories:
            if not (directory.startswith(prefix) or prefix.startswith(directory)):
                continue
            digit = int(directory[4:7])
            for position in range(self.keys_per_dir):
                key = key_of(position * 100 + digit)
                if key.startswith(prefix):
                    yield key

    def paginate(self, **arguments: Any) -> Iterator[dict[str, Any]]:
        prefix = arguments.get("Prefix", "")
        if arguments.get("Delimiter"):
            yield {"CommonPrefixes": [{"Prefix": f"dir-{d:03d}/"} for d in range(100)]}
            return
        page: list[dict[str, Any]] = []
        for key in self._keys(prefix):
            number = int(key[-13:-4])
            salt = self.etag_salt if number % CHANGED_EVERY == 0 else ""
            page.append({"Key": key, "Size": 4096, "ETag": f'"{hash((key, salt)) & (2**128 - 1):032x}"'})
            if len(page) == 1000:
                yield {"Contents": page}
                page = []
        if page:
            yield {"Contents": page}


class GeneratedClient:
    def __init__(self, listing: GeneratedListing) -> None:
        self.listing = listing

    def get_paginator(self, name: str) -> GeneratedListing:
        assert name == "list_objects_v2"
        return self.listing


def spec_for(source_bucket: str, dest_bucket: str, endpoint: str) -> S3TaskSpec:
    spec = parse_task_spec(
        {
            "type": "S3",
            "source": {"type": "S3_Compatible", "endpoint": endpoint, "bucket": source_bucket},
            "destination": {"type": "S3_Compatible", "endpoint": endpoint, "bucket": dest_bucket},
        }
    )
    assert isinstance(spec, S3TaskSpec)
    return spec


def peak_rss_mb() -> float:
    """This process's own peak RSS. Not ru_maxrss: across fork and exec it keeps the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def measure(source: S3Side, destination: S3Side, spec: S3TaskSpec, keys: int) -> dict[str, Any]:
    """One full scan into the embedded SQLite queue and store, as `dth s3 sync` runs it."""
    with tempfile.TemporaryDirectory() as state, ThreadPoolExecutor(max_workers=1) as parts:
        store = SqliteStatusStore(Path(state) / "s.db")
        queue = SqliteQueue(Path(state) / "s.db")
        finder = Finder(source, destination, spec, queue, store, ObjectCopier(source, destination, spec.options, parts))
        started = time.perf_counter()
        report = finder.scan(store.start_run("bench"))
        elapsed = time.perf_counter() - started
        queued = queue.depth().visible
    return {
        "keys": keys,
        "seconds": round(elapsed, 2),
        "keys_per_second": round(keys / elapsed),
        "found": report.found,
        "queued": queued,
        "peak_rss_mb": peak_rss_mb(),
    }


def child_generated(keys: int) -> dict[str, Any]:
    spec = spec_for("bench-source", "bench-destination", "http://127.0.0.1:1")

    def side(role: str, salt: str) -> S3Side:
        location = spec.source if role == "source" else spec.destination
        return S3Side(role, location, GeneratedClient(GeneratedListing(keys, salt)), "generated", "key")

    return measure(side("source", "v2"), side("destination", "v1"), spec, keys)


def child_server(keys: int, endpoint: str, access_key: str, secret_key: str) -> dict[str, Any]:
    from dth.s3.credentials import KeyPair, session_from_key_pair
    from dth.s3.sides import connect

    spec = spec_for("scale-source", "scale-destination", endpoint)
    session = session_from_key_pair(KeyPair(access_key, secret_key))
    return measure(
        connect("source", spec.source, session=session),
        connect("destination", spec.destination, session=session),
        spec,
        keys,
    )


def fill_server(site: Any, keys: int) -> None:
    client = site.client(max_pool_connections=32)
    client.create_bucket(Bucket="scale-source")
    client.create_bucket(Bucket="scale-destination")

    def put(number: int) -> None:
        client.put_object(Bucket="scale-source", Key=key_of(number), Body=b"s")
        if number % CHANGED_EVERY:
            client.put_object(Bucket="scale-destination", Key=key_of(number), Body=b"s")

    with ThreadPoolExecutor(max_workers=32) as pool:
        list(pool.map(put, range(keys)))


def run_child(*arguments: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, "--child", *arguments], capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,400000,1000000")
    parser.add_argument("--server-keys", type=int, default=100_000, help="keys listed from radosgw")
    parser.add_argument("--no-server", action="store_true")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, keys, *rest = args.child
        result = child_generated(int(keys)) if kind == "generated" else child_server(int(keys), *rest)
        print(json.dumps(result))
        return 0

    print(
        f"finder scale (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores); target: peak RSS < {RSS_TARGET_MB} MB"
    )
    print(f"{'listing':<10} {'keys':>9} {'seconds':>8} {'keys/s':>8} {'queued':>8} {'peak RSS MB':>12}  target")
    rows = []
    if not args.no_server:
        from dth.devtools.radosgw import RadosGateway
        from dth.devtools.sites import S3Site

        with RadosGateway(endpoints=1, memstore_bytes=1024 * 1024 * 1024) as gateway:
            site = S3Site(gateway.endpoint_urls[0], gateway.access_key, gateway.secret_key)
            started = time.perf_counter()
            fill_server(site, args.server_keys)
            print(
                f"(filled radosgw with {args.server_keys * 2 - args.server_keys // CHANGED_EVERY} objects in {time.perf_counter() - started:.0f} s)"
            )
            result = run_child("server", str(args.server_keys), site.url, site.access_key, site.secret_key)
            rows.append(("radosgw", result))
            print_row("radosgw", result)
    for size in (int(s) for s in args.sizes.split(",")):
        result = run_child("generated", str(size))
        rows.append(("generated", result))
        print_row("generated", result)
    out = Path(__file__).parent / "results" / f"finder_scale-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps([{"listing": kind, **row} for kind, row in rows], indent=2))
    print(f"results: {out}")
    return 0


def print_row(kind: str, result: dict[str, Any]) -> None:
    verdict = "met" if result["peak_rss_mb"] < RSS_TARGET_MB else "MISSED"
    print(
        f"{kind:<10} {result['keys']:>9} {result['seconds']:>8} {result['keys_per_second']:>8} "
        f"{result['queued']:>8} {result['peak_rss_mb']:>12}  {verdict}"
    )


if __name__ == "__main__":
    sys.exit(main())
