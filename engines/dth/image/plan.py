"""From a task's image selection to the list of images to look at: `all` (ECR DescribeRepositories, or
a registry's catalog), names (`repo:ALL_TAGS` expanded by ECR DescribeImages or the registry's tags list), or
the same names read from an SSM parameter; then the tag filters, and the destination names."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from dth.errors import AccessError
from dth.image.errors import RegistryAuthError, RegistryError
from dth.image.refs import ALL_TAGS, ImageName, check_repository, parse_image_entry, split_image_list
from dth.image.retry import RetriesExhaustedError, RetryPolicy, retrying
from dth.image.semver import parse_range
from dth.image.sides import Side
from dth.spec.image import ImageSelection, ImageTaskSpec

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, order=True)
class ImageJob:
    """One source image (a concrete tag) and the repository it goes to."""

    source: ImageName
    destination_repository: str

    @property
    def key(self) -> str:
        """The status store's key: the source's repo:tag."""
        return str(self.source)

    @property
    def destination(self) -> str:
        return f"{self.destination_repository}:{self.source.tag}"


@dataclass(frozen=True)
class EntryFailure:
    """An entry that could not become images (no such repository, an unreadable name, ...)."""

    key: str
    reason: str
    attempts: int = 1


@dataclass
class Expansion:
    jobs: list[ImageJob] = field(default_factory=list)
    failures: list[EntryFailure] = field(default_factory=list)


def read_ssm_parameter(name: str) -> str:
    """The value of an SSM parameter (a name, or an ARN naming its region), with ambient credentials."""
    import boto3
    import botocore.exceptions

    region = name.split(":")[3] if name.startswith("arn:") else None
    try:
        client = boto3.Session().client("ssm", region_name=region)
        value = client.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]
    except botocore.exceptions.ClientError as error:
        code = error.response.get("Error", {}).get("Code", "Error")
        raise AccessError(f"cannot read SSM parameter {name}: {code}") from None
    except botocore.exceptions.BotoCoreError as error:
        raise AccessError(f"cannot read SSM parameter {name}: {error}") from None
    return str(value)


class TagFilter:
    def __init__(self, selection: ImageSelection) -> None:
        self._regex = re.compile(selection.tag_regex) if selection.tag_regex else None
        self._range = parse_range(selection.semver) if selection.semver else None

    def __call__(self, tag: str) -> bool:
        if self._regex is not None and not self._regex.search(tag):
            return False
        return self._range is None or self._range.matches(tag)


class Planner:
    def __init__(
        self,
        spec: ImageTaskSpec,
        source: Side,
        *,
        retry: RetryPolicy,
        source_blocked: str | None = None,
        ssm_reader: Callable[[str], str] = read_ssm_parameter,
    ) -> None:
        self.spec = spec
        self.source = source
        self.retry = retry
        self.source_blocked = source_blocked
        self.ssm_reader = ssm_reader
        self.keep_tag = TagFilter(spec.source.images)

    def entries(self) -> tuple[list[ImageName], list[EntryFailure]]:
        """The selection as entries (ALL_TAGS where every tag is wanted)."""
        selection = self.spec.source.images
        if selection.all_images:
            if self.source_blocked:
                raise RegistryAuthError(self.source_blocked)
            try:
                repositories, _ = self._retrying(self._repositories)
            except RetriesExhaustedError as gave_up:
                raise gave_up.error from None
            return [ImageName(r, ALL_TAGS) for r in repositories], []
        if selection.ssm_parameter:
            texts = split_image_list(self.ssm_reader(selection.ssm_parameter))
            names, failures = [], []
            for text in texts:
                try:
                    names.append(parse_image_entry(text))
                except ValueError as error:
                    failures.append(EntryFailure(text, f"in SSM parameter {selection.ssm_parameter}: {error}"))
            return names, failures
        return selection.entries(), []

    def expand(self, threads: int = 8) -> Expansion:
        names, failures = self.entries()
        expansion = Expansion(failures=list(failures))
        wanted: list[ImageName] = []
        listed = [name for name in dict.fromkeys(names) if name.all_tags]
        wanted.extend(name for name in dict.fromkeys(names) if not name.all_tags)
        with ThreadPoolExecutor(max_workers=max(1, min(threads, len(listed) or 1)), thread_name_prefix="tags") as pool:
            for name, outcome in zip(listed, pool.map(self._tags_of, listed), strict=True):
                if isinstance(outcome, EntryFailure):
                    expansion.failures.append(outcome)
                else:
                    wanted.extend(ImageName(name.repository, tag) for tag in outcome if self.keep_tag(tag))
        prefix = self.spec.destination.prefix
        for name in sorted(set(wanted)):
            destination = prefix + name.repository
            try:
                check_repository(destination)
            except ValueError as error:
                expansion.failures.append(EntryFailure(str(name), f"destination name: {error}"))
                continue
            expansion.jobs.append(ImageJob(name, destination))
        expansion.failures.sort(key=lambda f: f.key)
        return expansion

    def _tags_of(self, name: ImageName) -> list[str] | EntryFailure:
        if self.source_blocked:
            return EntryFailure(str(name), self.source_blocked)
        try:
            tags, _ = self._retrying(lambda: self._tags(name.repository))
        except RegistryError as error:
            return EntryFailure(str(name), str(error))
        except RetriesExhaustedError as gave_up:
            return EntryFailure(str(name), str(gave_up.error), gave_up.attempts)
        return tags

    def _repositories(self) -> list[str]:
        if self.source.ecr is not None:
            return self.source.ecr.repositories()
        return self.source.client.catalog()

    def _tags(self, repository: str) -> list[str]:
        if self.source.ecr is not None:
            return self.source.ecr.tags(repository)
        return self.source.client.list_tags(repository)

    def _retrying(self, call: Callable[[], T]) -> tuple[T, int]:
        return retrying(call, self.retry, on_retry=lambda e: log.info("retrying a listing: %s", e))
