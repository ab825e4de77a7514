"""`skopeo copy`, with credentials in private auth files (never on a command line, so never in `ps`, a log
or an error message) and its failures sorted into the ones worth retrying and the ones that are not."""

from __future__ import annotations

import base64
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from dth.errors import DthError
from dth.image.errors import NotFoundError, RegistryAuthError, RegistryError
from dth.image.registry import Login

log = logging.getLogger(__name__)

SKOPEO = "skopeo"
COPY_TIMEOUT_SECONDS = 3600.0

# Go's names for `uname -m`'s, as skopeo's --override-arch wants them.
_GO_ARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "i386": "386",
    "i686": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}
_GO_VARIANT = {"armv7l": "v7", "armv6l": "v6"}

_RETRYABLE = re.compile(
    r"connection refused|i/o timeout|connection reset|\bEOF\b|TLS handshake timeout|too ?many ?requests"
    r"|(?:status|code)\W*(?:429|50[0-4])\b",
    re.I,
)
_PERMANENT = (
    (re.compile(r"unauthorized|authentication required|denied|forbidden|403", re.I), RegistryAuthError),
    (re.compile(r"manifest unknown|name unknown|not found|no image found|does not exist", re.I), NotFoundError),
)


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")

    def matches(self, entry: dict[str, object]) -> bool:
        """Whether an index entry's `platform` is this one (a missing variant matches any)."""
        if entry.get("os") != self.os or entry.get("architecture") != self.architecture:
            return False
        variant = entry.get("variant")
        return self.variant is None or variant is None or variant == self.variant


def system_platform() -> Platform:
    """The platform skopeo picks from an index on this machine (its `system` choice)."""
    machine = platform.machine().lower()
    return Platform("linux", _GO_ARCH.get(machine, machine), _GO_VARIANT.get(machine))


def skopeo_available(binary: str = SKOPEO) -> bool:
    return shutil.which(binary) is not None


@dataclass(frozen=True)
class Endpoint:
    """One side of a copy as skopeo sees it."""

    host: str
    insecure: bool
    authfile: Path | None


class Skopeo:
    """Runs skopeo copies; keeps one private directory of auth files, removed by `close()`."""

    def __init__(self, binary: str = SKOPEO, *, timeout: float = COPY_TIMEOUT_SECONDS) -> None:
        path = shutil.which(binary)
        if path is None:
            raise DthError(f"{binary} is not installed (apt-get install skopeo)")
        self.binary = path
        self.timeout = timeout
        self._dir = Path(tempfile.mkdtemp(prefix="dth-skopeo-"))  # mode 0700
        self._lock = threading.Lock()
        self._written: dict[str, tuple[str, str, str]] = {}

    def authfile(self, name: str, host: str, login: Login | None) -> Path | None:
        """An auth file holding `login` for `host` (rewritten when the login changes); None for anonymous."""
        if login is None:
            return None
        path = self._dir / f"{name}.json"
        with self._lock:
            if self._written.get(name) != (host, login.username, login.password):
                token = base64.b64encode(f"{login.username}:{login.password}".encode()).decode()
                data = json.dumps({"auths": {host: {"auth": token}}}).encode()
                fd, temporary = tempfile.mkstemp(dir=self._dir, prefix=f".{name}-")  # created 0600
                try:
                    os.write(fd, data)
                finally:
                    os.close(fd)
                Path(temporary).replace(path)  # atomic: a copy starting now reads the old or the new file whole
                self._written[name] = (host, login.username, login.password)
        return path

    def copy(
        self,
        source: Endpoint,
        source_ref: str,
        destination: Endpoint,
        destination_ref: str,
        *,
        all_platforms: bool,
        platform_: Platform,
    ) -> str:
        """Copy docker://source/source_ref to docker://destination/destination_ref; returns the digest
        written at the destination. Raises RegistryError (retryable or not) on failure."""
        digest_file = Path(tempfile.mkstemp(dir=self._dir, prefix=".digest-")[1])
        command = [self.binary, "--insecure-policy", "copy", "--quiet", "--preserve-digests", "--retry-times", "0"]
        if all_platforms:
            command += ["--multi-arch", "all"]
        else:
            command += [
                "--multi-arch",
                "system",
                "--override-os",
                platform_.os,
                "--override-arch",
                platform_.architecture,
            ]
            if platform_.variant:
                command += ["--override-variant", platform_.variant]
        for flag, side in (("src", source), ("dest", destination)):
            command.append(f"--{flag}-tls-verify={'false' if side.insecure else 'true'}")
            command += [f"--{flag}-authfile", str(side.authfile)] if side.authfile else [f"--{flag}-no-creds"]
        command += ["--digestfile", str(digest_file)]
        command += [f"docker://{source.host}/{source_ref}", f"docker://{destination.host}/{destination_ref}"]
        env = {k: v for k, v in os.environ.items() if k not in ("REGISTRY_AUTH_FILE", "DOCKER_CONFIG")}
        started = time.monotonic()
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=self.timeout, env=env, stdin=subprocess.DEVNULL
            )
            log.debug(
                "skopeo copy %s -> %s: exit %d in %.2f s",
                source_ref,
                destination_ref,
                done.returncode,
                time.monotonic() - started,
            )
            if done.returncode != 0:
                raise classify(skopeo_message(done.stderr))
            digest = digest_file.read_text(encoding="utf-8").strip()
        except subprocess.TimeoutExpired:
            raise RegistryError(f"skopeo copy did not finish in {self.timeout:.0f} s", retryable=True) from None
        finally:
            digest_file.unlink(missing_ok=True)
        return digest

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


def skopeo_message(stderr: str) -> str:
    """The `msg="..."` of skopeo's fatal log line (the whole output when there is none), one line."""
    messages = re.findall(r'msg="((?:[^"\\]|\\.)*)"', stderr)
    text = messages[-1].replace('\\"', '"') if messages else stderr.strip()
    return " ".join(text.split())[:500] or "skopeo failed without a message"


def classify(message: str) -> RegistryError:
    """A failure worth retrying (network, server errors, anything unknown) or one that is not."""
    if _RETRYABLE.search(message):
        return RegistryError(message, retryable=True)
    for pattern, kind in _PERMANENT:
        if pattern.search(message):
            return kind(message, retryable=False)
    return RegistryError(message, retryable=True)
