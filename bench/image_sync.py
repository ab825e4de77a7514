#!/usr/bin/env python3
"""Image sync benchmark: `dth image sync` side by side with `skopeo sync` and a DTH-style copy-everything
run, on 50 repositories x 3 tags (150 images), first sync and no-op re-sync, in one run.

A source docker-registry is filled once (images built in Python, pushed over the registry API); every
tool copies all of it into a fresh destination registry of its own (first sync), then runs again over
the same destination (no-op re-sync: nothing changed at the source). Each run is a child process, timed
by wall clock (a tool's start-up included: it is what a scheduled job pays). After every run the
destination is verified: every repository:tag present with the source's manifest digest; a tool whose
result is wrong is reported FAILED, not timed.

- dth: `python -m dth image sync SRC DST --all` (lists the catalog and tags, compares digests, copies what
  differs with skopeo copy --preserve-digests, 10 at once).
- skopeo sync: `skopeo sync --src yaml --dest docker --all --preserve-digests` with every repository given
  by `images-by-tag-regex: .*` (skopeo has no catalog listing); sequential, as skopeo sync is.
- DTH-style: what Data Transfer Hub's ECR plugin does every day: `skopeo copy --all` of every image,
  unconditionally (DTH runs one such copy per image, 10 at once); its ECS task start-up per image is not
  modelled, so the real DTH is slower than this.

It is a report, not a test: nothing here asserts on timings.

    python3 bench/image_sync.py                # 50 x 3, median of 3 runs per cell
    python3 bench/image_sync.py --repeat 1 --repositories 10
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dth.devtools.oci import Pusher, build_image
from dth.devtools.registry import DockerRegistry, missing_binaries

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"

CONCURRENCY = 10
TIMEOUT = 1800.0


@dataclass
class Cell:
    seconds: list[float] = field(default_factory=list)
    engine_seconds: list[float] = field(default_factory=list)  # dth only: the run itself, without start-up
    copied: list[int] = field(default_factory=list)  # dth only: images it copied
    failure: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds and not self.failure else None


@dataclass
class ToolResult:
    name: str
    first: Cell = field(default_factory=Cell)
    noop: Cell = field(default_factory=Cell)
    # This tool's no-op time over dth's in the same round (seconds apart, under the same load).
    noop_ratios: list[float] = field(default_factory=list)


class Lab:
    def __init__(self, workdir: Path, repositories: int, tags: int, layer_size: int) -> None:
        self.workdir = workdir
        self.source = DockerRegistry(workdir / "source")
        self.source.start()
        self.repositories = [f"app-{n:02d}" for n in range(repositories)]
        self.tags = [f"1.{n}.0" for n in range(tags)]
        self.expected: dict[str, str] = {}
        pusher = Pusher(self.source.url)
        names = [(r, t) for r in self.repositories for t in self.tags]

        def push(name: tuple[str, str]) -> tuple[str, str]:
            repository, tag = name
            image = build_image(f"{repository}:{tag}", layers=2, layer_size=layer_size)
            return f"{repository}:{tag}", pusher.push(repository, tag, image)

        with ThreadPoolExecutor(8) as pool:
            self.expected = dict(pool.map(push, names))

    def destination(self, name: str) -> DockerRegistry:
        registry = DockerRegistry(self.workdir / f"dest-{name}")
        registry.start()
        return registry

    def verify(self, destination: DockerRegistry) -> str | None:
        """None when the destination holds every image with the source's digest; else what is wrong."""
        pusher = Pusher(destination.url)
        wrong = []
        for name, digest in self.expected.items():
            repository, tag = name.rsplit(":", 1)
            found = pusher.digest(repository, tag)
            if found != digest:
                wrong.append(f"{name}: {found or 'missing'}")
        return f"{len(wrong)} of {len(self.expected)} wrong, e.g. {wrong[:3]}" if wrong else None

    def close(self) -> None:
        self.source.close()


def run_child(command: list[str], env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.monotonic()
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=TIMEOUT, env={**os.environ, **(env or {})}, check=False
    )
    return time.monotonic() - started, done


# -- the tools --------------------------------------------------------------------------------


def run_dth(lab: Lab, destination: DockerRegistry, cell: Cell, state: Path) -> None:
    command = [sys.executable, "-m", "dth", "image", "sync", lab.source.host, destination.host, "--all", "--insecure"]
    command += ["--output", "json", "--state", str(state), "--concurrency", str(CONCURRENCY)]
    seconds, done = run_child(command, {"PYTHONPATH": f"{REPO / 'engines'}{os.pathsep}{REPO / 'operator'}"})
    if done.returncode != 0:
        cell.failure = f"exit {done.returncode}: {done.stderr.strip()[-300:]}"
        return
    report = json.loads(done.stdout)
    cell.seconds.append(seconds)
    cell.engine_seconds.append(float(report["elapsedSeconds"]))
    cell.copied.append(int(report["counters"]["copied"]))


def run_skopeo_sync(lab: Lab, destination: DockerRegistry, cell: Cell, state: Path) -> None:
    config = state.with_suffix(".yaml")
    lines = [f"{lab.source.host}:", "  tls-verify: false", "  images-by-tag-regex:"]
    lines += [f'    {repository}: ".*"' for repository in lab.repositories]
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    command = ["skopeo", "--insecure-policy", "sync", "--src", "yaml", "--dest", "docker", "--all"]
    command += ["--preserve-digests", "--src-no-creds", "--dest-no-creds", "--dest-tls-verify=false"]
    command += [str(config), destination.host]
    seconds, done = run_child(command)
    if done.returncode != 0:
        cell.failure = f"exit {done.returncode}: {done.stderr.strip()[-300:]}"
        return
    cell.seconds.append(seconds)


def run_copy_everything(lab: Lab, destination: DockerRegistry, cell: Cell, state: Path) -> None:
    def copy(name: str) -> subprocess.CompletedProcess[str]:
        command = ["skopeo", "--insecure-policy", "copy", "--all", "--src-tls-verify=false", "--dest-tls-verify=false"]
        command += [f"docker://{lab.source.host}/{name}", f"docker://{destination.host}/{name}"]
        return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, check=False)

    started = time.monotonic()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        results = list(pool.map(copy, lab.expected))
    seconds = time.monotonic() - started
    failed = [r for r in results if r.returncode != 0]
    if failed:
        cell.failure = f"{len(failed)} copies failed: {failed[0].stderr.strip()[-300:]}"
        return
    cell.seconds.append(seconds)


TOOLS: dict[str, Callable[[Lab, DockerRegistry, Cell, Path], None]] = {
    "dth image sync": run_dth,
    "skopeo sync": run_skopeo_sync,
    "DTH-style copy-everything": run_copy_everything,
}


def measure(
    lab: Lab, result: ToolResult, cell: Cell, destination: DockerRegistry, workdir: Path, attempt: int, phase: str
) -> None:
    if cell.failure:
        return
    slug = result.name.split()[0].lower()
    TOOLS[result.name](lab, destination, cell, workdir / f"{slug}-{attempt}.state")
    problem = cell.failure or lab.verify(destination)
    if problem:
        cell.failure = problem
    print(
        f"  run {attempt + 1}, {result.name}, {phase}: "
        + (f"FAILED: {problem}" if problem else f"{cell.seconds[-1]:.2f} s, verified"),
        flush=True,
    )


# -- report -----------------------------------------------------------------------------------


def fmt(value: float | None, unit: str = " s") -> str:
    return "FAILED" if value is None else f"{value:.2f}{unit}"


def table(results: list[ToolResult]) -> str:
    header = ["tool", "first sync", "no-op re-sync", "no-op time / dth's", "images copied (first / no-op)"]
    rows = [header]
    for result in results:
        if result is results[0]:
            ratio = "1.0" if result.noop.median else "-"
        elif result.noop_ratios:
            ratio = f"{statistics.median(result.noop_ratios):.1f}"
        else:
            ratio = "-"
        if result.first.copied:
            copied = f"{max(result.first.copied)} / {max(result.noop.copied) if result.noop.copied else '-'}"
        elif result.name == "skopeo sync":
            copied = "all / none (skips present images)"
        else:
            copied = "all / all"
        rows.append([result.name, fmt(result.first.median), fmt(result.noop.median), ratio, copied])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            c.ljust(w) if i in (0, len(row) - 1) else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def verdict(results: list[ToolResult]) -> list[str]:
    by_name = {r.name: r for r in results}
    out = []
    skopeo = by_name["skopeo sync"].noop_ratios
    if skopeo:
        ratio = statistics.median(skopeo)
        out.append(
            f"target 1, no-op re-sync at least as fast as skopeo sync: {'met' if ratio >= 1 else 'NOT met'} "
            f"(skopeo sync's no-op takes {ratio:.2f}x dth's, median of {len(skopeo)} rounds; "
            f"per round: {', '.join(f'{r:.2f}' for r in skopeo)})"
        )
    everything = by_name["DTH-style copy-everything"].noop_ratios
    if everything:
        ratio = statistics.median(everything)
        out.append(
            f"target 2, no-op re-sync 10x faster than copy-everything: {'met' if ratio >= 10 else 'NOT met'} "
            f"(copy-everything's re-run takes {ratio:.1f}x dth's no-op, median of {len(everything)} rounds; "
            f"per round: {', '.join(f'{r:.1f}' for r in everything)})"
        )
    dth = by_name["dth image sync"].noop
    if dth.engine_seconds and dth.median:
        engine = statistics.median(dth.engine_seconds)
        out.append(
            f"dth's no-op inside the process (its elapsedSeconds): {engine:.2f} s of {dth.median:.2f} s; the rest is "
            f"starting Python and importing the dth command (boto3, pydantic, the S3 engine)"
        )
        copy_all = by_name["DTH-style copy-everything"].noop.median
        if copy_all:
            out.append(f"  copy-everything's re-run / dth's in-process no-op: {copy_all / engine:.1f}x")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repositories", type=int, default=50)
    parser.add_argument("--tags", type=int, default=3)
    parser.add_argument("--layer-kib", type=int, default=64, help="size of each of an image's 2 layers")
    parser.add_argument("--repeat", type=int, default=3, help="first syncs per tool (fresh destinations)")
    parser.add_argument("--noop-rounds", type=int, default=3, help="no-op re-syncs per tool after each first sync")
    parser.add_argument("--json", type=Path, help="results file (default bench/results/image_sync-<date>.json)")
    args = parser.parse_args(argv)
    missing = missing_binaries(htpasswd=False) + ([] if shutil.which("skopeo") else ["skopeo"])
    if missing:
        print(f"missing: {', '.join(missing)} (apt-get install docker-registry skopeo)")
        return 2
    started = dt.datetime.now()
    one, five, _ = os.getloadavg()
    print(
        f"image_sync benchmark {started:%Y-%m-%d %H:%M:%S}: {args.repositories} repositories x {args.tags} tags, "
        f"2 x {args.layer_kib} KiB layers each; {args.repeat} first syncs and {args.repeat * args.noop_rounds} no-op "
        f"re-syncs per tool, medians; load average {one:.1f} {five:.1f} "
        f"on {os.cpu_count()} CPUs",
        flush=True,
    )
    results = [ToolResult(name) for name in TOOLS]
    with tempfile.TemporaryDirectory(prefix="dth-image-bench-") as tmp:
        workdir = Path(tmp)
        t0 = time.monotonic()
        lab = Lab(workdir, args.repositories, args.tags, args.layer_kib * 1024)
        print(f"source filled with {len(lab.expected)} images in {time.monotonic() - t0:.1f} s", flush=True)
        try:
            for attempt in range(args.repeat):
                destinations = {r.name: lab.destination(f"{n}-{attempt}") for n, r in enumerate(results)}
                try:
                    for result in results:
                        measure(lab, result, result.first, destinations[result.name], workdir, attempt, "first")
                    # The no-op runs of all tools back to back, round after round: each round's ratios
                    # compare runs made seconds apart, under the same load from whatever else runs here.
                    for round_ in range(args.noop_rounds):
                        times: dict[str, float] = {}
                        for result in results:
                            cell = result.noop
                            before = len(cell.seconds)
                            measure(
                                lab, result, cell, destinations[result.name], workdir, attempt, f"no-op {round_ + 1}"
                            )
                            if len(cell.seconds) > before:
                                times[result.name] = cell.seconds[-1]
                        base = times.get(results[0].name)
                        for result in results[1:]:
                            if base and result.name in times:
                                result.noop_ratios.append(times[result.name] / base)
                finally:
                    for destination in destinations.values():
                        destination.close()
        finally:
            lab.close()
    print()
    print(table(results))
    print()
    for line in verdict(results):
        print(line)
    RESULTS_DIR.mkdir(exist_ok=True)
    path = args.json or RESULTS_DIR / f"image_sync-{started:%Y-%m-%d}.json"
    path.write_text(
        json.dumps(
            {
                "started": started.isoformat(timespec="seconds"),
                "parameters": vars(args) | {"json": str(args.json) if args.json else None},
                "host": {"cpus": os.cpu_count(), "load": os.getloadavg(), "python": platform.python_version()},
                "results": [asdict(r) for r in results],
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    print(f"\nresults: {path}")
    failed = any(r.first.failure or r.noop.failure for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
