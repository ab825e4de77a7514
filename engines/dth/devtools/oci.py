"""Container images built in Python, without Docker, and pushed straight to a registry's /v2/ API.

Every image is a real one: gzip'd tar layers, a config whose diff_ids match them, an OCI (or Docker v2
schema 2) manifest, optionally gathered in a multi-platform index. Content is derived from a seed, so the
same seed gives the same digests and a new seed a new image. Independent of the engine under test.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import io
import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MANIFEST_TYPES = (OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST)

Format = Literal["oci", "docker"]


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes = field(repr=False)

    @property
    def digest(self) -> str:
        return sha256_digest(self.data)

    def descriptor(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data)}


@dataclass(frozen=True)
class Image:
    """One platform's image: its manifest and the blobs (config first) it names."""

    media_type: str
    manifest: bytes = field(repr=False)
    blobs: tuple[Blob, ...] = field(repr=False)
    platform: tuple[str, str] = ("linux", "amd64")

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest)

    @property
    def size(self) -> int:
        return len(self.manifest) + sum(len(b.data) for b in self.blobs)


@dataclass(frozen=True)
class Index:
    """A multi-platform image: an index (or Docker manifest list) of images."""

    media_type: str
    manifest: bytes = field(repr=False)
    images: tuple[Image, ...] = field(repr=False)

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest)

    def image_for(self, os_name: str, architecture: str) -> Image:
        for image in self.images:
            if image.platform == (os_name, architecture):
                return image
        raise KeyError(f"{os_name}/{architecture}")


def _layer(seed: str, number: int, size: int) -> tuple[bytes, bytes]:
    """(gzip'd tar, tar) of one file of `size` pseudo-random bytes: reproducible from the seed."""
    content = bytearray()
    counter = 0
    while len(content) < size:
        content += hashlib.sha256(f"{seed}/{number}/{counter}".encode()).digest()
        counter += 1
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(f"data/{number}.bin")
        info.size = size
        info.mtime = 0
        tar.addfile(info, io.BytesIO(bytes(content[:size])))
    tar_bytes = raw.getvalue()
    return gzip.compress(tar_bytes, mtime=0), tar_bytes


def build_image(
    seed: str,
    *,
    layers: int = 1,
    layer_size: int = 1024,
    platform: tuple[str, str] = ("linux", "amd64"),
    fmt: Format = "oci",
) -> Image:
    """A runnable-shaped image whose every byte follows from `seed`."""
    compressed = [_layer(seed, n, layer_size) for n in range(layers)]
    os_name, architecture = platform
    config = {
        "architecture": architecture,
        "os": os_name,
        "config": {"Labels": {"dth.test.seed": seed}},
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(tar) for _, tar in compressed]},
        "history": [{"created_by": f"dth.devtools.oci layer {n}"} for n in range(layers)],
    }
    config_blob = Blob(OCI_CONFIG if fmt == "oci" else DOCKER_CONFIG, json.dumps(config, sort_keys=True).encode())
    layer_blobs = [Blob(OCI_LAYER if fmt == "oci" else DOCKER_LAYER, gz) for gz, _ in compressed]
    media_type = OCI_MANIFEST if fmt == "oci" else DOCKER_MANIFEST
    manifest = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": config_blob.descriptor(),
        "layers": [b.descriptor() for b in layer_blobs],
    }
    return Image(media_type, json.dumps(manifest, indent=3).encode(), (config_blob, *layer_blobs), platform)


def build_index(images: Sequence[Image], *, fmt: Format = "oci") -> Index:
    media_type = OCI_INDEX if fmt == "oci" else DOCKER_LIST
    manifest = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [
            {
                "mediaType": image.media_type,
                "digest": image.digest,
                "size": len(image.manifest),
                "platform": {"os": image.platform[0], "architecture": image.platform[1]},
            }
            for image in images
        ],
    }
    return Index(media_type, json.dumps(manifest, indent=3).encode(), tuple(images))


def build_multiarch(seed: str, platforms: Sequence[tuple[str, str]], *, layer_size: int = 1024) -> Index:
    return build_index(
        [build_image(f"{seed}/{os_}/{arch}", layer_size=layer_size, platform=(os_, arch)) for os_, arch in platforms]
    )


class PushError(RuntimeError):
    pass


class Pusher:
    """Uploads images to a registry over plain HTTP (monolithic blob uploads), skipping blobs it already has."""

    def __init__(
        self, url: str, *, username: str | None = None, password: str | None = None, timeout: float = 30
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"{url!r}: the pusher speaks plain HTTP to a local registry")
        self._host = parts.hostname
        self._port = parts.port or 80
        self._timeout = timeout
        self._headers: dict[str, str] = {}
        if username is not None:
            token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"

    def _request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        try:
            conn.request(method, path, body=body, headers={**self._headers, **(headers or {})})
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def push_blob(self, repository: str, blob: Blob) -> None:
        status, _, _ = self._request("HEAD", f"/v2/{repository}/blobs/{blob.digest}")
        if status == 200:
            return
        status, headers, body = self._request("POST", f"/v2/{repository}/blobs/uploads/")
        if status != 202 or "location" not in headers:
            raise PushError(f"starting a blob upload to {repository}: HTTP {status} {body[:200]!r}")
        location = urlsplit(headers["location"])
        separator = "&" if location.query else "?"
        path = f"{location.path}{'?' + location.query if location.query else ''}{separator}digest={blob.digest}"
        status, _, body = self._request(
            "PUT", path, body=blob.data, headers={"Content-Type": "application/octet-stream"}
        )
        if status != 201:
            raise PushError(f"uploading {blob.digest} to {repository}: HTTP {status} {body[:200]!r}")

    def push_manifest(self, repository: str, reference: str, media_type: str, manifest: bytes) -> str:
        status, headers, body = self._request(
            "PUT", f"/v2/{repository}/manifests/{reference}", body=manifest, headers={"Content-Type": media_type}
        )
        if status != 201:
            raise PushError(f"putting manifest {repository}:{reference}: HTTP {status} {body[:300]!r}")
        return headers.get("docker-content-digest", sha256_digest(manifest))

    def push(self, repository: str, tag: str, artifact: Image | Index) -> str:
        """Push an image or index (its images first) under `tag`; returns the manifest digest."""
        if isinstance(artifact, Index):
            for image in artifact.images:
                self._push_image(repository, image, image.digest)
            return self.push_manifest(repository, tag, artifact.media_type, artifact.manifest)
        return self._push_image(repository, artifact, tag)

    def _push_image(self, repository: str, image: Image, reference: str) -> str:
        for blob in image.blobs:
            self.push_blob(repository, blob)
        return self.push_manifest(repository, reference, image.media_type, image.manifest)

    def digest(self, repository: str, reference: str) -> str | None:
        """The digest the registry serves for repository:reference, or None if it has none."""
        status, headers, _ = self._request(
            "HEAD", f"/v2/{repository}/manifests/{reference}", headers={"Accept": ", ".join(MANIFEST_TYPES)}
        )
        if status == 404:
            return None
        if status != 200:
            raise PushError(f"HEAD {repository}:{reference}: HTTP {status}")
        return headers.get("docker-content-digest")

    def manifest(self, repository: str, reference: str) -> tuple[str, bytes] | None:
        status, headers, body = self._request(
            "GET", f"/v2/{repository}/manifests/{reference}", headers={"Accept": ", ".join(MANIFEST_TYPES)}
        )
        if status == 404:
            return None
        if status != 200:
            raise PushError(f"GET {repository}:{reference}: HTTP {status}")
        return headers.get("content-type", ""), body

    def tags(self, repository: str) -> list[str]:
        status, _, body = self._request("GET", f"/v2/{repository}/tags/list")
        if status == 404:
            return []
        if status != 200:
            raise PushError(f"tags of {repository}: HTTP {status}")
        return sorted(json.loads(body).get("tags") or [])

    def catalog(self) -> list[str]:
        status, _, body = self._request("GET", "/v2/_catalog?n=1000")
        if status != 200:
            raise PushError(f"catalog: HTTP {status}")
        return sorted(json.loads(body).get("repositories") or [])
