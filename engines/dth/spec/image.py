"""The Image task: container images from Amazon ECR or any registry into ECR or another registry.

`model.py` adds `ImageTaskSpec` to the TaskSpec union; this module holds its parts. The image list is an
object (`images: {all: true}`, `{names: [...]}` or `{ssmParameter: ...}`) rather than "the string `all` or a
list", because a Kubernetes structural schema gives every field one type.
"""

from __future__ import annotations

import re
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
from dth.spec.image_kinds import MultiArch as MultiArch
from dth.spec.image_kinds import RegistryType as RegistryType
from dth.spec.model import (
    ENDPOINT_PATTERN,
    REGION_PATTERN,
    REGION_RULE,
    SCHEDULE_PATTERN,
    SCHEDULE_RULE,
    Credentials,
    SpecModel,
)
from dth.spec.rules import Rule, whole_number


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
        json_schema_extra=Rule(
            "env must be the start of an environment variable's name: letters, digits and underscores, not "
            "beginning with a digit, such as `MIRROR`"
        ),
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
        json_schema_extra=Rule(
            "ssmParameter must name an SSM parameter in 1 to 2048 characters, such as `/dth/images`"
        ),
    )
    tag_regex: str | None = Field(
        None,
        min_length=1,
        description="only tags matching this regular expression (of the tags listed for all or ALL_TAGS)",
        json_schema_extra=Rule(
            "tagRegex must not be empty: leave it out to take every tag, or write one such as `^v[0-9]+`"
        ),
    )
    semver: str | None = Field(
        None,
        min_length=1,
        description="only tags that are versions in this range, e.g. '>=1.2 <2' or '^3.1'",
        json_schema_extra=Rule(
            "semver must not be empty: leave it out to take every version, or write one such as `>=1.2 <2`"
        ),
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
        json_schema_extra=Rule(
            "registry must be a host name or address with an optional port, without a scheme or path, such as "
            "`registry.example.com:5000`"
        ),
    )
    account_id: str | None = Field(
        None,
        pattern=r"^\d{12}$",
        description="Amazon_ECR: the registry's account",
        json_schema_extra=Rule("accountId must be an AWS account number of 12 digits, such as `123456789012`"),
    )
    region: str | None = Field(
        None, pattern=REGION_PATTERN, description="Amazon_ECR: the registry's region", json_schema_extra=REGION_RULE
    )
    endpoint: str | None = Field(
        None,
        pattern=ENDPOINT_PATTERN,
        description="Amazon_ECR: the ECR API endpoint URL, instead of the region's",
        json_schema_extra=Rule(
            "endpoint must be an http:// or https:// URL, such as `https://api.ecr.cn-north-1.amazonaws.com.cn`"
        ),
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
        json_schema_extra=Rule(
            "prefix must be the start of a repository name: at most 200 lower-case letters and digits, parts "
            "joined by '.', '_', '-' or '/', such as `mirror/`"
        ),
    )


class ImageOptions(SpecModel):
    multi_arch: MultiArch = Field(
        MultiArch.ALL,
        description="all: an image index with every platform's image; system: only the engine's own platform",
    )
    concurrency: int = whole_number(10, low=1, high=256, name="concurrency", description="images copied at once")
    max_retries: int = whole_number(
        3, low=0, high=100, name="maxRetries", description="attempts per image after the first, with backoff"
    )
    create_repositories: bool = Field(True, description="Amazon_ECR destination: create missing repositories")
    dry_run: bool = Field(False, description="plan only: list and compare, copy nothing")


class ImageTaskSpec(SpecModel):
    type: Literal["Image"] = Field(..., description="what to move: container images")
    source: ImageSource
    destination: ImageDestination
    options: ImageOptions = Field(default_factory=ImageOptions)
    schedule: str = Field(
        "once", pattern=SCHEDULE_PATTERN, description="when to run (UTC)", json_schema_extra=SCHEDULE_RULE
    )
    suspend: bool = Field(False, description="stop the workers and the schedule, keep everything else")

    @model_validator(mode="after")
    def _not_onto_itself(self) -> ImageTaskSpec:
        if self.source.same_registry(self.destination) and not self.destination.prefix:
            raise ValueError(
                "source and destination are the same registry and the destination has no prefix: "
                "every image would be copied onto itself"
            )
        return self
