"""The project's images built with buildah, without a daemon, for the local node; cached by content.

- **The base**: Debian bookworm made by debootstrap, with Debian's python3 as ``python`` (the stand-in for
  ``python:slim``, which cannot be pulled here; ``docker/check-build.sh`` does the same).
- **The operator and engine images**: ``docker/operator.Dockerfile`` and ``docker/engine.Dockerfile`` as
  they are, with ``PYTHON_IMAGE`` set to the base: the lock installed with hashes from PyPI, the project,
  the user, skopeo from Debian.

Each result is a docker-archive tarball in ``${DTH_CACHE:-~/.cache/dth}/images/``, named by a hash of
everything that goes into it (for the project's images: the Dockerfile, the lock, ``pyproject.toml``,
``README.md``, ``engines/``, ``operator/``, ``cfn/`` and the base's hash), so a second run with nothing
changed builds nothing. buildah runs as root with ``--isolation chroot``, its storage (overlay driver) kept
in ``images/buildah/`` with ``--layers``: after a change to the code only the steps from ``COPY engines`` on
run again, the hash-checked install of the lock is reused. ``DTH_BUILDAH_DRIVER=vfs`` where overlay cannot
be mounted. One build at a time per cache (a lock file).

``python -m dth.devtools.image_build`` builds all three and prints their archives as one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dth.devtools.node_images import ImageArchive

#: What the stand-in base holds (check-build.sh's list).
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
BASE_NAME = "localhost/dth/python-standin"
#: The project's images: name -> Dockerfile (relative to the repository's root).
PROJECT_IMAGES = {"operator": "docker/operator.Dockerfile", "engine": "docker/engine.Dockerfile"}
#: What the Dockerfiles copy from the build context (besides the Dockerfile itself).
CONTEXT_INPUTS = ("docker/requirements.lock", "pyproject.toml", "README.md", "engines", "operator", "cfn")
#: Files never part of an image's inputs (caches the tests leave behind).
IGNORED_PARTS = frozenset({"__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"})


def cache_dir() -> Path:
    return Path(os.environ.get("DTH_CACHE") or Path.home() / ".cache" / "dth") / "images"


def repository_root() -> Path:
    """The checkout this module is part of (``engines/dth/devtools`` -> the root)."""
    return Path(__file__).resolve().parents[3]


def missing_programs() -> list[str]:
    return [name for name in ("buildah", "debootstrap") if shutil.which(name) is None]


@dataclass
class BuildReport:
    """Seconds each build took (nothing for an image found in the cache)."""

    seconds: dict[str, float] = field(default_factory=dict)
    cached: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ProjectImages:
    base: ImageArchive
    operator: ImageArchive
    engine: ImageArchive


def base_key() -> str:
    return _digest([f"suite={BASE_SUITE}", "variant=minbase", *BASE_PACKAGES])[:16]


def project_key(root: Path, dockerfile: str, base: str) -> str:
    """The hash of everything an image is built from: its Dockerfile, its context's inputs and the base."""
    hasher = hashlib.sha256(f"base={base}\n".encode())
    for path in _input_files(root, [dockerfile, *CONTEXT_INPUTS]):
        hasher.update(f"{path.relative_to(root).as_posix()}\n".encode())
        hasher.update(hashlib.sha256(path.read_bytes()).digest())
    return hasher.hexdigest()[:16]


def build_project_images(
    root: Path | None = None,
    cache: Path | None = None,
    *,
    mirror: str | None = None,
    report: BuildReport | None = None,
) -> ProjectImages:
    """The base, operator and engine images as cached docker archives; builds what the cache lacks."""
    root = root or repository_root()
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    report = report if report is not None else BuildReport()
    missing = missing_programs()
    key = base_key()
    base = ImageArchive(cache / f"python-standin-{key}.tar", f"{BASE_NAME}:{key}")
    names = {image: project_key(root, dockerfile, key) for image, dockerfile in PROJECT_IMAGES.items()}
    archives = {
        image: ImageArchive(cache / f"dth-{image}-{tag}.tar", f"localhost/dth/{image}:{tag}")
        for image, tag in names.items()
    }
    todo = [archive for archive in (base, *archives.values()) if not archive.path.exists()]
    report.cached = [archive.name for archive in (base, *archives.values()) if archive.path.exists()]
    if todo:
        if missing:
            raise RuntimeError(f"cannot build the images: {', '.join(missing)} not installed (bash .ci/node.sh)")
        with _locked(cache / ".lock"), _Buildah(cache) as buildah:
            if not base.path.exists():
                began = time.monotonic()
                buildah.make_base(base, mirror or os.environ.get("DEBIAN_MIRROR") or "http://deb.debian.org/debian")
                report.seconds["base"] = round(time.monotonic() - began, 1)
            else:
                buildah.pull(base)
            for image, archive in archives.items():
                if archive.path.exists():
                    continue
                began = time.monotonic()
                buildah.build(root, PROJECT_IMAGES[image], base.name, archive)
                report.seconds[image] = round(time.monotonic() - began, 1)
    return ProjectImages(base=base, operator=archives["operator"], engine=archives["engine"])


class _Buildah:
    """buildah on vfs storage in a temporary folder (deleted on exit), as root, chroot isolation."""

    def __init__(self, cache: Path) -> None:
        self._storage = cache / "buildah"
        self._driver = os.environ.get("DTH_BUILDAH_DRIVER") or "overlay"
        self._work = Path(tempfile.mkdtemp(prefix="dth-buildah-"))

    def __enter__(self) -> _Buildah:
        return self

    def __exit__(self, *exc: object) -> None:
        self._run(["rm", "--all"], check=False)
        shutil.rmtree(self._work, ignore_errors=True)

    def make_base(self, archive: ImageArchive, mirror: str) -> None:
        rootfs = self._work / "rootfs"
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                BASE_SUITE,
                str(rootfs),
                mirror,
            ],
            what="debootstrap",
        )
        context = self._work / "base"
        context.mkdir()
        _run(["tar", "-C", str(rootfs), "-cf", str(context / "rootfs.tar"), "."], what="tar of the base")
        shutil.rmtree(rootfs, ignore_errors=True)
        (context / "Containerfile").write_text('FROM scratch\nADD rootfs.tar /\nENV LANG=C.UTF-8\nCMD ["python3"]\n')
        self._run(["bud", "--isolation", "chroot", "-q", "-t", archive.name, str(context)])
        shutil.rmtree(context, ignore_errors=True)
        self.push(archive)

    def pull(self, archive: ImageArchive) -> None:
        self._run(["pull", "-q", f"docker-archive:{archive.path}"])

    def build(self, root: Path, dockerfile: str, base: str, archive: ImageArchive) -> None:
        # The host's CA bundle, for machines whose HTTPS goes through an inspecting proxy (only while building).
        pip_conf = self._work / "pip.conf"
        pip_conf.write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")
        self._run(
            [
                "bud",
                "--isolation",
                "chroot",
                "--layers",
                "--build-arg",
                f"PYTHON_IMAGE={base}",
                "-v",
                "/etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro",
                "-v",
                f"{pip_conf}:/etc/pip.conf:ro",
                "-f",
                dockerfile,
                "-t",
                archive.name,
                ".",
            ],
            cwd=root,
        )
        self.push(archive)

    def push(self, archive: ImageArchive) -> None:
        partial = archive.path.with_name(archive.path.name + ".partial")
        partial.unlink(missing_ok=True)
        self._run(["push", "-q", archive.name, f"docker-archive:{partial}:{archive.name}"])
        partial.replace(archive.path)

    def _run(self, args: Sequence[str], *, cwd: Path | None = None, check: bool = True) -> None:
        argv = [
            "buildah",
            "--root",
            str(self._storage / self._driver),
            "--runroot",
            str(self._storage / f"run-{self._driver}"),
            "--storage-driver",
            self._driver,
            *args,
        ]
        _run(argv, what=f"buildah {args[0]}", cwd=cwd, check=check)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(argv: Sequence[str], *, what: str, cwd: Path | None = None, check: bool = True) -> None:
    done = subprocess.run(list(argv), capture_output=True, text=True, cwd=cwd, check=False)
    if check and done.returncode != 0:
        output = (done.stdout + done.stderr).strip().splitlines()[-40:]
        raise RuntimeError(f"{what} failed ({done.returncode}):\n" + "\n".join(output))


def _input_files(root: Path, inputs: Iterable[str]) -> list[Path]:
    files: list[Path] = []
    for name in inputs:
        path = root / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files.extend(
                p
                for p in path.rglob("*")
                if p.is_file()
                and not IGNORED_PARTS.intersection(p.relative_to(root).parts)
                and not any(part.endswith(".egg-info") for part in p.relative_to(root).parts)
                and p.suffix != ".pyc"
            )
    return sorted(files)


def _digest(parts: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dth.devtools.image_build",
        description="Build the debootstrap base and the operator and engine images with buildah (cached).",
    )
    parser.parse_args(argv)
    report = BuildReport()
    try:
        images = build_project_images(report=report)
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(
        json.dumps(
            {
                "base": str(images.base.path),
                "operator": {"archive": str(images.operator.path), "name": images.operator.name},
                "engine": {"archive": str(images.engine.path), "name": images.engine.name},
                "seconds": report.seconds,
                "cached": report.cached,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
