"""Image names as a task lists them (`repo[:tag]`), registry hosts, and the text of an image list."""

from __future__ import annotations

import re
from dataclasses import dataclass

ALL_TAGS = "ALL_TAGS"
DEFAULT_TAG = "latest"

# The distribution spec's grammar: path components of lowercase alphanumerics joined by separators.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY_PATTERN = rf"^{_COMPONENT}(?:/{_COMPONENT})*$"
TAG_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
_REPOSITORY = re.compile(REPOSITORY_PATTERN)
_TAG = re.compile(TAG_PATTERN)
MAX_REPOSITORY_LENGTH = 255

# host[:port]; DNS names or IPv4 addresses.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
REGISTRY_HOST_PATTERN = rf"^{_LABEL}(?:\.{_LABEL})*(?::[0-9]{{1,5}})?$"
ECR_HOST_PATTERN = r"^(\d{12})\.dkr\.ecr(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$"
_ECR_HOST = re.compile(ECR_HOST_PATTERN)

DOCKER_HUB_NAMES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
DOCKER_HUB_API_HOST = "registry-1.docker.io"


@dataclass(frozen=True, order=True)
class ImageName:
    """A repository and a tag (ALL_TAGS stands for every tag of the repository)."""

    repository: str
    tag: str = DEFAULT_TAG

    @property
    def all_tags(self) -> bool:
        return self.tag == ALL_TAGS

    def __str__(self) -> str:
        return f"{self.repository}:{self.tag}"


def check_repository(name: str) -> str:
    if len(name) > MAX_REPOSITORY_LENGTH:
        raise ValueError(f"repository name {name[:40]!r}... is longer than {MAX_REPOSITORY_LENGTH} characters")
    if not _REPOSITORY.match(name):
        raise ValueError(
            f"{name!r} is not a repository name (lowercase letters, digits and . _ - separators, "
            "path components joined by /)"
        )
    return name


def check_tag(tag: str) -> str:
    if not _TAG.match(tag):
        raise ValueError(f"{tag!r} is not a tag (letters, digits, _ . -, at most 128, not starting with . or -)")
    return tag


def parse_image_entry(entry: str) -> ImageName:
    """`nginx` -> nginx:latest, `team/app:1.2` -> team/app:1.2, `app:ALL_TAGS` -> every tag of app."""
    text = entry.strip()
    if not text:
        raise ValueError("an empty image entry")
    if "@" in text:
        raise ValueError(f"{text!r}: digest references are not supported, name a tag (or ALL_TAGS)")
    slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > slash:
        repository, tag = text[:colon], text[colon + 1 :]
    else:
        repository, tag = text, DEFAULT_TAG
    first = repository.split("/", 1)[0]
    if ("/" in repository and ("." in first or first == "localhost")) or ":" in repository:
        raise ValueError(
            f"{text!r} names a registry host: entries are relative to the source registry (write repo[:tag])"
        )
    check_repository(repository)
    if tag != ALL_TAGS:
        check_tag(tag)
    return ImageName(repository, tag)


def split_image_list(text: str) -> list[str]:
    """The entries of an image list as DTH keeps it in an SSM parameter: separated by commas, spaces or
    newlines; `#` starts a comment that runs to the end of its line."""
    entries: list[str] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        entries.extend(part for part in re.split(r"[\s,]+", line) if part)
    return entries


def ecr_host(account_id: str, region: str) -> str:
    """The registry host of an account's ECR in a region (China regions are in amazonaws.com.cn)."""
    suffix = ".amazonaws.com.cn" if region.startswith("cn-") else ".amazonaws.com"
    return f"{account_id}.dkr.ecr.{region}{suffix}"


def parse_ecr_host(host: str) -> tuple[str, str] | None:
    """(account id, region) of an ECR registry host, or None for any other host."""
    match = _ECR_HOST.match(host.lower())
    if match is None:
        return None
    account, region, china = match.groups()
    if bool(china) != region.startswith("cn-"):
        return None
    return account, region


def api_host(host: str) -> str:
    """The host that serves a registry's /v2/ API (Docker Hub's name is not its API host)."""
    return DOCKER_HUB_API_HOST if host.lower() in DOCKER_HUB_NAMES else host


def api_repository(host: str, repository: str) -> str:
    """The repository as the registry's API knows it: Docker Hub's official images live under library/."""
    if host.lower() in DOCKER_HUB_NAMES and "/" not in repository:
        return f"library/{repository}"
    return repository
