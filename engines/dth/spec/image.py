"""The Image task: container images from Amazon ECR or any registry into ECR or another registry.

`model.py` adds `ImageTaskSpec` to the TaskSpec union; this module holds its parts. The image list is an
object (`images: {all: true}`, `{names: [...]}` or `{ssmParameter: ...}`) rather than "the string `all` or a
list", because a Kubernetes structural schema gives every field one type.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from dth.image.refs import (
    REGISTRY_HOST_PATTERN,
    ImageName,
    api_host,
    ecr_host,
    parse_ecr_host,
    parse_image_entry,
)
from dth.image.semver import parse_range
from dth.spec.model import SCHEDULE_PATTERN, Credentials, SpecModel


class RegistryType(StrEnum):
    AMAZON_ECR = "Amazon_ECR"
    REGISTRY = "Registry"


class MultiArch(StrEnum):
    ALL = "all"  # an image index and every image it lists (skopeo copy --all)
    SYSTEM = "system"  # only the image for the platform the engine runs on


class ImageCredentials(Credentials):
    """Where a registry's credentials come from. For Amazon_ECR: an access key pair (Secret or Secrets Manager
    with access_key_id and secret_access_key, or a local AWS profile), exchanged for an ECR token. For a
    Registry: a username and password (Secret or Secrets Manager with username and password, or a
    kubernetes.io/dockerconfigjson Secret; for standalone runs, environment variables)."""

    env: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="for standalone runs against a Registry: read ${env}_USERNAME and ${env}_PASSWORD "
        "from the environment",
    )

    @model_validator(mode="after")
    def _exactly_one_source(self) -> ImageCredentials:  # replaces Credentials' check: one more source
        names = ("secret_name", "secrets_manager_arn", "profile", "env")
        given = [name for name in names if getattr(self, name)]
        if len(given) != 1:
            raise ValueError(
                "credentials need exactly one of secretName, secretsManagerArn, profile or env"
                + (f" (got {', '.join(to_camel(g) for g in given)})" if given else "")
            )
        return self


class ImageSelection(SpecModel):
    """Which images: every one (`all`), a list, or a list kept in an SSM parameter."""

    all_images: bool = Field(
        False,
        alias="all",
        description="every repository and tag of the source (ECR: DescribeRepositories; a registry: its catalog)",
    )
    names: list[str] = Field(
        default_factory=list,
        description="repo[:tag] entries; the tag defaults to latest and repo:ALL_TAGS means every tag",
    )
    ssm_parameter: str | None = Field(
        None,
        min_length=1,
        max_length=2048,
        description="an SSM parameter (name or ARN) holding the entries, separated by commas or newlines",
    )
    tag_regex: str | None = Field(
        None,
        min_length=1,
        description="only tags matching this regular expression (of the tags listed for all or ALL_TAGS)",
    )
    semver: str | None = Field(
        None, min_length=1, description="only tags that are versions in this range, e.g. '>=1.2 <2' or '^3.1'"
    )

    @field_validator("names")
    @classmethod
    def _names_parse(cls, names: list[str]) -> list[str]:
        problems = []
        for entry in names:
            try:
                parse_image_entry(entry)
            except ValueError as error:
                problems.append(str(error))
        if problems:
            raise ValueError("; ".join(problems))
        return names

    @field_validator("tag_regex")
    @classmethod
    def _regex_compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"not a regular expression: {error}") from None
        return pattern

    @field_validator("semver")
    @classmethod
    def _range_parses(cls, text: str | None) -> str | None:
        if text is not None:
            parse_range(text)
        return text

    @model_validator(mode="after")
    def _exactly_one_list(self) -> ImageSelection:
        given = [
            alias
            for alias, value in (("all", self.all_images), ("names", self.names), ("ssmParameter", self.ssm_parameter))
            if value
        ]
        if len(given) != 1:
            raise ValueError(
                "images need exactly one of all: true, names or ssmParameter"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self

    def entries(self) -> list[ImageName]:
        return [parse_image_entry(entry) for entry in self.names]


class RegistryLocation(SpecModel):
    """A registry: Amazon ECR (an account in a region) or any other registry by host."""

    type: RegistryType = Field(..., description="the registry kind: Amazon_ECR, or Registry for any other")
    registry: str | None = Field(
        None,
        pattern=REGISTRY_HOST_PATTERN,
        description="registry host[:port]; for Amazon_ECR derived from accountId and region unless given",
    )
    account_id: str | None = Field(None, pattern=r"^\d{12}$", description="Amazon_ECR: the registry's account")
    region: str | None = Field(None, pattern=r"^[a-z0-9-]+$", description="Amazon_ECR: the registry's region")
    endpoint: str | None = Field(
        None,
        pattern=r"^https?://[^\s/]+(/.*)?$",
        description="Amazon_ECR: the ECR API endpoint URL, instead of the region's",
    )
    insecure: bool = Field(False, description="plain HTTP, or HTTPS without certificate checks (local registries)")
    credentials: ImageCredentials | None = Field(None, description="none means ambient credentials")

    @model_validator(mode="after")
    def _locatable(self) -> RegistryLocation:
        if self.type is RegistryType.AMAZON_ECR:
            parsed = parse_ecr_host(self.registry) if self.registry else None
            if not (self.account_id or parsed) or not (self.region or parsed):
                raise ValueError("type Amazon_ECR needs accountId and region (or an ECR registry host)")
            if self.credentials is not None and self.credentials.env:
                raise ValueError(
                    "credentials.env is for a Registry; for Amazon_ECR use profile, secretName or secretsManagerArn"
                )
        else:
            if not self.registry:
                raise ValueError("type Registry needs a registry host")
            ecr_only = [
                alias for alias, value in (("accountId", self.account_id), ("endpoint", self.endpoint)) if value
            ]
            if ecr_only:
                raise ValueError(f"{', '.join(ecr_only)} only apply to type Amazon_ECR")
            if self.credentials is not None and self.credentials.profile:
                raise ValueError(
                    "credentials.profile names an AWS profile, for Amazon_ECR; for a Registry use env, "
                    "secretName or secretsManagerArn"
                )
        return self

    def ecr_account(self) -> str:
        parsed = parse_ecr_host(self.registry) if self.registry else None
        account = self.account_id or (parsed[0] if parsed else None)
        if account is None:
            raise ValueError("not an Amazon_ECR location")
        return account

    def ecr_region(self) -> str:
        parsed = parse_ecr_host(self.registry) if self.registry else None
        region = self.region or (parsed[1] if parsed else None)
        if region is None:
            raise ValueError("not an Amazon_ECR location")
        return region

    def host(self) -> str:
        """The registry host[:port] image references name."""
        if self.registry:
            return self.registry
        return ecr_host(self.ecr_account(), self.ecr_region())

    def same_registry(self, other: RegistryLocation) -> bool:
        return api_host(self.host().lower()) == api_host(other.host().lower())

    def describe(self) -> str:
        """Where this is, for messages; never includes credentials."""
        if self.type is RegistryType.AMAZON_ECR:
            return f"ECR {self.ecr_account()} in {self.ecr_region()} ({self.host()})"
        return f"registry {self.host()}"


class ImageSource(RegistryLocation):
    images: ImageSelection = Field(..., description="which images to copy")


class ImageDestination(RegistryLocation):
    prefix: str = Field(
        "",
        max_length=200,
        pattern=r"^([a-z0-9]+([._/-][a-z0-9]+)*[._/-]?)?$",
        description="prepended to every repository name, e.g. 'mirror/'",
    )


class ImageOptions(SpecModel):
    multi_arch: MultiArch = Field(
        MultiArch.ALL,
        description="all: an image index with every platform's image; system: only the engine's own platform",
    )
    concurrency: int = Field(10, ge=1, le=256, description="images copied at once")
    max_retries: int = Field(3, ge=0, le=100, description="attempts per image after the first, with backoff")
    create_repositories: bool = Field(True, description="Amazon_ECR destination: create missing repositories")
    dry_run: bool = Field(False, description="plan only: list and compare, copy nothing")


class ImageTaskSpec(SpecModel):
    type: Literal["Image"] = Field(..., description="what to move: container images")
    source: ImageSource
    destination: ImageDestination
    options: ImageOptions = Field(default_factory=ImageOptions)
    schedule: str = Field("once", pattern=SCHEDULE_PATTERN, description="'once', or a five-field cron expression (UTC)")
    suspend: bool = Field(False, description="stop the workers and the schedule, keep everything else")

    @model_validator(mode="after")
    def _not_onto_itself(self) -> ImageTaskSpec:
        if self.source.same_registry(self.destination) and not self.destination.prefix:
            raise ValueError(
                "source and destination are the same registry and the destination has no prefix: "
                "every image would be copied onto itself"
            )
        return self
