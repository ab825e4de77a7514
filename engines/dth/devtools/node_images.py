"""Container images for the local node, made here: nothing is pulled.

Small images (the pause sandbox, a busybox one for tests) are written directly as docker-archive tarballs
(``manifest.json`` + config + one layer), byte for byte the same for the same inputs, and imported with
``ctr import`` into containerd's ``k8s.io`` namespace, where kubelet finds them.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

#: ``ctr`` bound to a node: arguments in, the finished process out (raises on failure).
Ctr = Callable[..., subprocess.CompletedProcess[str]]


@dataclass(frozen=True)
class ImageArchive:
    """A docker-archive tarball on disk and the image name it carries."""

    path: Path
    name: str


@dataclass(frozen=True)
class LayerFile:
    """A file of an image layer: its content from ``source`` (or a symlink to ``link``)."""

    path: str
    source: Path | None = None
    link: str | None = None
    mode: int = 0o755


def pause_image_name(pause_binary: Path) -> str:
    """``localhost/dth/pause:<hash>``: named by the binary's content, so a rebuilt pause is a new image."""
    return f"localhost/dth/pause:{_file_digest(pause_binary)[:16]}"


def pause_archive(pause_binary: Path, folder: Path) -> ImageArchive:
    """The sandbox image: the static ``pause`` from the Kubernetes source (build/pause) as ``/pause``."""
    return write_archive(
        folder,
        pause_image_name(pause_binary),
        [LayerFile("pause", pause_binary)],
        entrypoint=["/pause"],
        user="65535:65535",
    )


def busybox_archive(
    busybox_binary: Path, folder: Path, applets: Sequence[str] = ("sh", "wget", "cat", "id")
) -> ImageArchive:
    """A busybox image (Debian's busybox-static as ``/bin/busybox`` and some applets): for tests of the node."""
    files = [LayerFile("bin/busybox", busybox_binary)]
    files += [LayerFile(f"bin/{applet}", link="busybox") for applet in applets]
    name = f"localhost/dth/busybox:{_file_digest(busybox_binary)[:16]}"
    return write_archive(folder, name, files, entrypoint=["/bin/sh"], env={"PATH": "/bin"})


def write_archive(
    folder: Path,
    name: str,
    files: Sequence[LayerFile],
    *,
    entrypoint: Sequence[str],
    env: Mapping[str, str] | None = None,
    user: str = "",
) -> ImageArchive:
    """A docker-archive of one layer holding ``files``, written to ``folder`` (kept when already there)."""
    folder.mkdir(parents=True, exist_ok=True)
    layer = _layer(files)
    layer_digest = hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": list(entrypoint),
            "Env": [f"{key}={value}" for key, value in (env or {}).items()],
            "User": user,
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
        "history": [{"created_by": "dth.devtools.node_images"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_digest = hashlib.sha256(config_bytes).hexdigest()
    manifest = [{"Config": f"{config_digest}.json", "RepoTags": [name], "Layers": [f"{layer_digest}/layer.tar"]}]
    path = folder / f"{name.rsplit('/', 1)[-1].replace(':', '-')}-{config_digest[:12]}.tar"
    if not path.exists():
        partial = path.with_suffix(".partial")
        with tarfile.open(partial, "w", format=tarfile.USTAR_FORMAT) as archive:
            _add(archive, f"{config_digest}.json", config_bytes)
            _add(archive, f"{layer_digest}/layer.tar", layer)
            _add(archive, "manifest.json", json.dumps(manifest).encode())
        partial.replace(path)
    return ImageArchive(path, name)


def import_archive(ctr: Ctr, archive: ImageArchive, snapshotter: str) -> None:
    """Import ``archive`` with ``ctr import`` (its name from the archive's RepoTags), unpacked for the
    snapshotter the CRI uses."""
    ctr("images", "import", f"--snapshotter={snapshotter}", str(archive.path))


def _layer(files: Sequence[LayerFile]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as layer:
        folders: set[str] = set()
        for item in sorted(files, key=lambda f: f.path):
            parts = item.path.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                folder = "/".join(parts[:depth])
                if folder not in folders:
                    folders.add(folder)
                    info = tarfile.TarInfo(folder)
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    layer.addfile(info)
            info = tarfile.TarInfo(item.path)
            info.mode = item.mode
            if item.link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, item.link
                layer.addfile(info)
            elif item.source is not None:
                data = item.source.read_bytes()
                info.size = len(data)
                layer.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    archive.addfile(info, io.BytesIO(data))


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
