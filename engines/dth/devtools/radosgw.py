"""A throwaway single-node Ceph cluster with radosgw: the real S3 implementation for local tests.

One ``ceph-mon``, one ``ceph-osd`` with the in-memory ``memstore`` object store and one
``radosgw`` (beast frontend) listening on one or more ports of 127.0.0.1. Everything the
daemons write (config, mon store, pid files, admin sockets, logs) stays under a working
directory; nothing touches /etc/ceph or /var/lib/ceph. Authentication inside the cluster is
off (``auth ... = none``); S3 requests are still signed and checked by radosgw.

Run ``python -m dth.devtools.radosgw`` to start one in the foreground: it prints the
endpoint URLs and keys as one JSON line on stdout and runs until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dth.devtools.ports import LOOPBACK, free_ports
from dth.devtools.processes import ServerProcesses, kill_group
from dth.devtools.sites import S3Site

GiB = 1024**3
MiB = 1024**2

#: Executables a cluster needs (Debian packages ``ceph-mon``, ``ceph-osd``, ``radosgw``, ``ceph-common``).
REQUIRED_BINARIES = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "monmaptool", "ceph")

# Unix socket paths must fit in sockaddr_un.sun_path (108 bytes with the terminating NUL).
_MAX_SOCKET_PATH = 100


def missing_binaries() -> list[str]:
    """The names from :data:`REQUIRED_BINARIES` that are not on ``PATH``."""
    return [name for name in REQUIRED_BINARIES if shutil.which(name) is None]


class RadosGateway(ServerProcesses):
    """A single-node, in-memory Ceph cluster serving S3 on ``endpoints`` loopback ports.

    All endpoints are served by the same radosgw process, so they show the same buckets and
    objects: tests use them as two "different" S3 services holding the same data.

    ``memstore_bytes`` is the OSD's RAM budget: the capacity its in-memory device reports.
    It is not a hard cap: the OSD's resident memory is about twice the data stored, and once
    the mon sees the OSD full (a few seconds after about 95 % of the budget is used) writes
    hang instead of failing, as on any full Ceph cluster. Size it for the data a session
    writes. Deleted objects' tails are freed by radosgw's garbage collector after about a
    minute. ``config`` adds or overrides ``[global]`` options of the generated ceph.conf. With ``die_with_parent`` (and util-linux ``setpriv``
    on PATH) the kernel kills the daemons when the thread that started them dies, even by
    SIGKILL: start the cluster from a thread that outlives it (the main thread).
    """

    _workdir_prefix = "dth-rgw-"
    _log_suffix = ".out"
    _what = "the radosgw cluster"
    _stop_grace = 5.0

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        access_key: str = "dthtestaccess",
        secret_key: str = "dthtestsecret",
        endpoints: int = 2,
        memstore_bytes: int = 2 * GiB,
        log_level: int = 1,
        config: Mapping[str, str] | None = None,
        die_with_parent: bool = True,
    ) -> None:
        if endpoints < 1:
            raise ValueError("endpoints must be at least 1")
        if memstore_bytes < 256 * MiB:
            raise ValueError("memstore_bytes must be at least 256 MiB")
        super().__init__(workdir, die_with_parent=die_with_parent)
        self._access_key = access_key
        self._secret_key = secret_key
        self._endpoint_count = endpoints
        self._memstore_bytes = memstore_bytes
        self._log_level = log_level
        self._extra_config = dict(config or {})
        self._socket_dir: Path | None = None
        self._owns_socket_dir = False
        self._mon_port = 0
        self._rgw_ports: list[int] = []

    # -- public properties -------------------------------------------------------------------

    @property
    def access_key(self) -> str:
        return self._access_key

    @property
    def secret_key(self) -> str:
        return self._secret_key

    @property
    def endpoint_urls(self) -> list[str]:
        """``http://127.0.0.1:PORT`` for every port radosgw listens on (empty before start)."""
        return [f"http://{LOOPBACK}:{port}" for port in self._rgw_ports]

    @property
    def conf_path(self) -> Path:
        """The generated ceph.conf: pass it as ``-c`` to ``ceph``, ``rados`` or ``radosgw-admin``."""
        return self.workdir / "ceph.conf"

    # -- life cycle --------------------------------------------------------------------------

    def _check_binaries(self) -> None:
        missing = missing_binaries()
        if missing:
            raise RuntimeError(f"Ceph binaries not found on PATH: {', '.join(missing)}")

    def _release(self) -> None:
        if self._owns_socket_dir and self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None
            self._owns_socket_dir = False
        self._rgw_ports = []

    # -- administration ----------------------------------------------------------------------

    def create_user(self, uid: str, access_key: str, secret_key: str, display_name: str | None = None) -> None:
        """Add an S3 user with the given keys (``radosgw-admin user create``).

        Creating a user that already exists with these keys does nothing, so session-wide
        tests may each ask for the same user.
        """
        try:
            self.admin(
                "user",
                "create",
                f"--uid={uid}",
                f"--display-name={display_name or uid}",
                f"--access-key={access_key}",
                f"--secret-key={secret_key}",
            )
        except RuntimeError:
            if not self._user_has_keys(uid, access_key, secret_key):
                raise

    def _user_has_keys(self, uid: str, access_key: str, secret_key: str) -> bool:
        try:
            info = json.loads(self.admin("user", "info", f"--uid={uid}"))
        except (RuntimeError, ValueError):
            return False
        keys = info.get("keys", []) if isinstance(info, dict) else []
        return any(k.get("access_key") == access_key and k.get("secret_key") == secret_key for k in keys)

    def admin(self, *args: str, timeout: float = 60) -> str:
        """Run ``radosgw-admin`` against this cluster and return its standard output."""
        return self._run(["radosgw-admin", "-c", str(self.conf_path), *args], timeout=timeout, logs=False)

    def ceph(self, *args: str, timeout: float = 60) -> str:
        """Run the ``ceph`` command line tool against this cluster and return its standard output."""
        return self._run(["ceph", "-c", str(self.conf_path), *args], timeout=timeout, logs=False)

    # -- internals ---------------------------------------------------------------------------

    def _prepare_workdir(self) -> None:
        super()._prepare_workdir()
        assert self._workdir is not None
        socket_dir = self._workdir / "run"
        if len(str(socket_dir / "ceph-client.admin.12345.123456789.asok")) > _MAX_SOCKET_PATH:
            self._socket_dir = Path(tempfile.mkdtemp(prefix="dth-rgw-asok-"))
            self._owns_socket_dir = True
        else:
            self._socket_dir = socket_dir

    def _reset_layout(self) -> None:
        workdir = self.workdir
        for name in ("mon", "osd", "run", "log", "crash", "rgw"):
            shutil.rmtree(workdir / name, ignore_errors=True)
            (workdir / name).mkdir(parents=True)
        for name in ("ceph.conf", "monmap"):
            (workdir / name).unlink(missing_ok=True)
        assert self._socket_dir is not None
        self._socket_dir.mkdir(parents=True, exist_ok=True)
        (workdir / "mon" / "a").mkdir()
        (workdir / "osd" / "0").mkdir()

    def _start_once(self, deadline: float) -> None:
        self._reset_layout()
        ports = free_ports(1 + self._endpoint_count)
        self._mon_port, self._rgw_ports = ports[0], ports[1:]
        fsid = str(uuid.uuid4())
        osd_uuid = str(uuid.uuid4())
        conf = self.conf_path
        conf.write_text(self._render_config(fsid, deadline))
        c = ["-c", str(conf)]
        monmap = str(self.workdir / "monmap")
        mon_addr = f"[v2:{LOOPBACK}:{self._mon_port}]"
        self._run(["monmaptool", "--create", "--fsid", fsid, "--addv", "a", mon_addr, monmap], deadline=deadline)
        self._run(["ceph-mon", *c, "--mkfs", "-i", "a", "--monmap", monmap], deadline=deadline)
        self._spawn("mon", ["ceph-mon", *c, "-i", "a", "-f"])
        self._wait_mon_leader(deadline)
        self._phase("mon leader")
        # The OSD's data directory can be made while the mon registers the OSD's id.
        mkfs = self._popen("osd-mkfs", ["ceph-osd", *c, "-i", "0", "--mkfs", "--osd-uuid", osd_uuid])
        connect_timeout = str(max(1, int(deadline - time.monotonic())))
        self._run(["ceph", *c, "--connect-timeout", connect_timeout, "osd", "new", osd_uuid, "0"], deadline=deadline)
        self._phase("osd registered")
        self._wait_process(mkfs, "ceph-osd --mkfs", deadline)
        self._spawn("osd", ["ceph-osd", *c, "-i", "0", "-f"])
        # Pools created while the OSD still boots stay unusable until a 5 s tick: wait for it.
        self._wait_osd_active(deadline)
        self._phase("osd active")
        # radosgw-admin waits for the OSD, creates the default zone and its pools, and the user.
        user = [f"--uid={self._access_key}", f"--display-name={self._access_key}"]
        keys = [f"--access-key={self._access_key}", f"--secret-key={self._secret_key}"]
        self._run(["radosgw-admin", *c, "user", "create", *user, *keys], deadline=deadline)
        self._phase("user created")
        self._check_alive()
        self._spawn("rgw", ["radosgw", *c, "-n", "client.rgw", "-f"])
        self._wait_ready(deadline)
        self._phase("s3 ready")

    def _phase(self, name: str) -> None:
        self.startup_phases[name] = round(time.monotonic() - self._began, 3)

    def _render_config(self, fsid: str, deadline: float) -> str:
        workdir = self.workdir
        assert self._socket_dir is not None
        frontends = " ".join(f"endpoint={LOOPBACK}:{port}" for port in self._rgw_ports)
        init_timeout = max(30, int(deadline - time.monotonic()) + 5)
        options: dict[str, str] = {
            "fsid": fsid,
            "mon host": f"v2:{LOOPBACK}:{self._mon_port}",
            "mon initial members": "a",
            "public addr": LOOPBACK,
            "cluster addr": LOOPBACK,
            "ms bind msgr1": "false",
            "ms bind msgr2": "true",
            "ms bind ipv6": "false",
            # No cephx inside the cluster. radosgw hangs for 300 s at start unless the
            # client messenger modes are crc as well.
            "auth cluster required": "none",
            "auth service required": "none",
            "auth client required": "none",
            "auth supported": "none",
            "ms mon client mode": "crc",
            "ms client mode": "crc",
            "ms cluster mode": "crc",
            "ms service mode": "crc",
            "ms mon cluster mode": "crc",
            "ms mon service mode": "crc",
            # Every path under the working directory.
            "run dir": str(workdir / "run"),
            "admin socket": str(self._socket_dir / "$cluster-$name.$pid.$cctid.asok"),
            "pid file": str(workdir / "run" / "$name.pid"),
            "log file": str(workdir / "log" / "$name.log"),
            "mon cluster log file": str(workdir / "log" / "cluster.log"),
            "log to stderr": "false",
            "err to stderr": "true",
            "crash dir": str(workdir / "crash"),
            "keyring": str(workdir / "keyring"),
            "mon data": str(workdir / "mon" / "$id"),
            "osd data": str(workdir / "osd" / "$id"),
            "rgw data": str(workdir / "rgw"),
            "mon data avail warn": "1",
            "mon data avail crit": "0",
            # Fast map changes: each osdmap epoch otherwise waits for a 1 s paxos proposal.
            "paxos propose interval": "0.01",
            "paxos min wait": "0.001",
            "osd mon report interval": "1",
            # One in-memory OSD, pools of size 1.
            "osd objectstore": "memstore",
            "memstore device bytes": str(self._memstore_bytes),
            "osd pool default size": "1",
            "osd pool default min size": "1",
            "mon allow pool size one": "true",
            "mon warn on pool no redundancy": "false",
            "mon warn on insecure global id reclaim allowed": "false",
            "osd crush chooseleaf type": "0",
            "osd pool default pg num": "8",
            "osd pool default pgp num": "8",
            "osd pool default pg autoscale mode": "off",
            "mon max pg per osd": "1000",
            "osd fast shutdown": "true",
            # radosgw: loopback only, Nagle off (single-stream GETs crawl without it).
            "rgw frontends": f"beast {frontends} tcp_nodelay=1",
            "rgw init timeout": str(init_timeout),
            "rgw enable usage log": "false",
            "rgw gc obj min wait": "60",
            "rgw gc processor period": "60",
            "debug rgw": str(self._log_level),
            "debug ms": "0",
        }
        options.update(self._extra_config)
        client = {"ms mon client mode": "crc", "ms client mode": "crc"}
        lines = ["# generated by dth.devtools.radosgw", "[global]"]
        lines += [f"{key} = {value}" for key, value in options.items()]
        lines += ["", "[client]"]
        lines += [f"{key} = {value}" for key, value in client.items()]
        return "\n".join(lines) + "\n"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CEPH_", "PYTHON"))}
        env["CEPH_CONF"] = str(self.conf_path)
        return env

    def _run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        deadline: float | None = None,
        logs: bool = True,
    ) -> str:
        """Run a command to completion; on failure raise RuntimeError with its output (and logs)."""
        if deadline is not None:
            timeout = max(1.0, deadline - time.monotonic())

        def tails() -> str:
            return "\n" + self.log_tails() if logs else ""

        try:
            done = subprocess.run(
                list(argv),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                cwd=self.workdir,
                env=self._env(),
                timeout=timeout,
                check=False,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"{argv[0]} timed out after {timeout:.0f} s{tails()}") from exc
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace").strip()
            raise RuntimeError(f"{' '.join(argv)} failed with exit code {done.returncode}: {output}{tails()}")
        return done.stdout.decode(errors="replace")

    def _wait_process(self, proc: subprocess.Popen[bytes], what: str, deadline: float) -> None:
        try:
            code = proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            kill_group(proc, signal.SIGKILL)
            proc.wait()
            raise RuntimeError(f"{what} timed out\n{self.log_tails()}") from None
        if code != 0:
            raise RuntimeError(f"{what} failed with exit code {code}\n{self.log_tails()}")

    def _wait_mon_leader(self, deadline: float) -> None:
        # Not just "the port is open": another process may have taken the port since it was
        # picked, and ceph-mon then retries its bind every 5 s instead of exiting.
        self._wait_log("mon.a.log", "@0(leader)", "ceph-mon", deadline, failure="unable to bind")

    def _wait_osd_active(self, deadline: float) -> None:
        self._wait_log("osd.0.log", "state: booting -> active", "ceph-osd", deadline)

    def _wait_log(self, name: str, text: str, what: str, deadline: float, failure: str | None = None) -> None:
        """Wait until the daemon's log file holds ``text``; raise when it holds ``failure``."""
        log = self.log_dir / name
        while time.monotonic() < deadline:
            self._check_alive()
            with contextlib.suppress(FileNotFoundError):
                content = log.read_text(errors="replace")
                if text in content:
                    return
                if failure is not None and failure in content:
                    raise RuntimeError(f"{what} failed: {failure}\n{self.log_tails()}")
            time.sleep(0.02)
        raise RuntimeError(f"{what} did not get ready in time (no {text!r} in {name})\n{self.log_tails()}")

    def _check_alive(self) -> None:
        for name, proc in self._procs.items():
            code = proc.poll()
            if code is not None:
                raise RuntimeError(f"Ceph daemon {name} exited with code {code}\n{self.log_tails()}")

    def _wait_ready(self, deadline: float) -> None:
        clients = {url: self._s3_client(url) for url in self.endpoint_urls}
        pending = list(clients)
        last_error = "no attempt"
        log = self.log_dir / "client.rgw.log"
        while True:
            self._check_alive()
            with contextlib.suppress(FileNotFoundError):
                if "failed initializing frontend" in log.read_text(errors="replace"):
                    # Typically a port taken by someone else since it was picked.
                    raise RuntimeError(f"radosgw failed to start its frontend\n{self.log_tails()}")
            for url in list(pending):
                try:
                    clients[url].list_buckets()
                except Exception as exc:
                    last_error = f"{url}: {exc!r}"
                else:
                    pending.remove(url)
            if not pending:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"radosgw did not answer ListBuckets in time ({last_error})\n{self.log_tails()}")
            time.sleep(0.05)

    def _s3_client(self, url: str) -> Any:
        site = S3Site(url, self._access_key, self._secret_key)
        return site.client(max_attempts=1, connect_timeout=1, read_timeout=5)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dth.devtools.radosgw",
        description="Run a throwaway in-memory Ceph radosgw on 127.0.0.1 until SIGINT/SIGTERM.",
    )
    parser.add_argument("--workdir", type=Path, help="keep the cluster's files here (default: a temp dir)")
    parser.add_argument("--endpoints", type=int, default=2, help="number of S3 ports (default 2)")
    parser.add_argument("--access-key", default="dthtestaccess")
    parser.add_argument("--secret-key", default="dthtestsecret")
    parser.add_argument("--memstore-mib", type=int, default=2048, help="OSD RAM budget in MiB (default 2048)")
    parser.add_argument("--timeout", type=float, default=60.0, help="start-up timeout in seconds")
    args = parser.parse_args(argv)
    gateway = RadosGateway(
        args.workdir,
        access_key=args.access_key,
        secret_key=args.secret_key,
        endpoints=args.endpoints,
        memstore_bytes=args.memstore_mib * MiB,
    )
    return gateway.run_in_foreground(
        args.timeout,
        lambda: {
            "endpoint_urls": gateway.endpoint_urls,
            "access_key": gateway.access_key,
            "secret_key": gateway.secret_key,
            "region": "us-east-1",
            "conf": str(gateway.conf_path),
        },
    )


if __name__ == "__main__":
    sys.exit(main())
