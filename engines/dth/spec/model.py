"""The TransferTask model: the single source of truth for the CRD schema, the operator's
validation, the CloudFormation parameters and the engines' configuration."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from dth.spec.rules import Rule, whole_number

API_GROUP = "dth.io"
API_VERSION = "v1alpha1"
KIND = "TransferTask"
PLURAL = "transfertasks"
SINGULAR = "transfertask"
SHORT_NAMES = ("tt",)

MiB = 1024 * 1024
GiB = 1024 * MiB
# S3 refuses parts below 5 MiB (except the last) and allows at most 10,000 parts.
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * GiB
MAX_PARTS = 10_000

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "ki": 1024,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mi": MiB,
    "mib": MiB,
    "g": 1000**3,
    "gb": 1000**3,
    "gi": GiB,
    "gib": GiB,
    "t": 1000**4,
    "tb": 1000**4,
    "ti": 1024**4,
    "tib": 1024**4,
}
_SIZE_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_byte_size(value: Any) -> Any:
    """Accept 8388608, "8388608", "8Mi", "8MiB" or "8MB"; anything else is left for pydantic to reject."""
    if isinstance(value, bool) or not isinstance(value, str):
        return value
    match = _SIZE_PATTERN.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a size (examples: 8388608, 8MiB, 8Mi, 10MB)")
    number, unit = match.groups()
    factor = _SIZE_UNITS.get(unit.lower())
    if factor is None:
        raise ValueError(f"unknown size unit {unit!r} in {value!r} (use B, KiB, MiB, GiB, TiB, KB, MB, GB)")
    return int(float(number) * factor)


# Sizes are integers in bytes, written in manifests either as numbers or as "8MiB".
ByteSize = Annotated[
    int,
    BeforeValidator(parse_byte_size),
    PlainSerializer(int),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*[a-zA-Z]*\s*$"},
            ],
            "x-kubernetes-int-or-string": True,
            "description": "a size in bytes, or a string such as 8MiB",
        }
    ),
]


class SpecModel(BaseModel):
    """Manifests use camelCase; Python uses snake_case. Unknown fields are errors, not silently dropped."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_enum_values=False,
        # Each model's validator is built when it is first used, not at import: a command builds only the
        # models it validates (`dth s3 sync` neither the status models nor the image task's).
        defer_build=True,
    )


class StorageProvider(StrEnum):
    AMAZON_S3 = "Amazon_S3"
    ALIYUN_OSS = "Aliyun_OSS"
    TENCENT_COS = "Tencent_COS"
    QINIU_KODO = "Qiniu_Kodo"
    GOOGLE_GCS = "Google_GCS"
    S3_COMPATIBLE = "S3_Compatible"


# Where each non-AWS provider serves its S3-compatible API, by region.
PROVIDER_ENDPOINTS: dict[StorageProvider, str] = {
    StorageProvider.ALIYUN_OSS: "https://oss-{region}.aliyuncs.com",
    StorageProvider.TENCENT_COS: "https://cos.{region}.myqcloud.com",
    StorageProvider.QINIU_KODO: "https://s3-{region}.qiniucs.com",
    StorageProvider.GOOGLE_GCS: "https://storage.googleapis.com",
}
# Providers that only answer virtual-hosted requests; the rest (and explicit endpoints) use path style.
VIRTUAL_HOSTED_PROVIDERS = frozenset(
    {StorageProvider.AMAZON_S3, StorageProvider.ALIYUN_OSS, StorageProvider.TENCENT_COS}
)


class StorageClass(StrEnum):
    STANDARD = "STANDARD"
    STANDARD_IA = "STANDARD_IA"
    ONEZONE_IA = "ONEZONE_IA"
    INTELLIGENT_TIERING = "INTELLIGENT_TIERING"
    GLACIER_IR = "GLACIER_IR"
    GLACIER = "GLACIER"
    DEEP_ARCHIVE = "DEEP_ARCHIVE"
    REDUCED_REDUNDANCY = "REDUCED_REDUNDANCY"


class CannedAcl(StrEnum):
    PRIVATE = "private"
    PUBLIC_READ = "public-read"
    AUTHENTICATED_READ = "authenticated-read"
    BUCKET_OWNER_READ = "bucket-owner-read"
    BUCKET_OWNER_FULL_CONTROL = "bucket-owner-full-control"


class SseMode(StrEnum):
    NONE = "None"
    AES256 = "AES256"
    AWS_KMS = "AWS_KMS"


class CompareMode(StrEnum):
    SIZE = "size"
    SIZE_ETAG = "size-etag"
    CHECKSUM = "checksum"
    NONE = "none"


class EventsMode(StrEnum):
    NONE = "None"
    CREATE = "Create"
    CREATE_AND_DELETE = "CreateAndDelete"


BUCKET_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9._-]{1,253}[a-zA-Z0-9]$"
# Standard five-field cron (minute hour day-of-month month day-of-week), or "once".
_CRON_FIELD = r"[0-9A-Za-z*?/,#\-LW]+"
SCHEDULE_PATTERN = rf"^(once|{_CRON_FIELD}( {_CRON_FIELD}){{4}})$"
SECRET_ARN_PATTERN = r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:.+$"
REGION_PATTERN = r"^[a-z0-9-]+$"
ENDPOINT_PATTERN = r"^https?://[^\s/]+(/.*)?$"

BUCKET_RULE = Rule(
    "bucket names are 3 to 255 characters: letters, digits, dots, hyphens and underscores, beginning and "
    "ending with a letter or digit, such as `my-logs` (AWS allows only 3 to 63, lower-case)"
)
REGION_RULE = Rule("region must be a region code of lower-case letters, digits and hyphens, such as `cn-north-1`")
SCHEDULE_RULE = Rule("schedule must be `once` or a five-field cron expression such as `0 2 * * *`")


class Credentials(SpecModel):
    """Where the access key pair comes from. Exactly one source; none at all means ambient credentials."""

    secret_name: str | None = Field(
        None,
        description="a Kubernetes Secret in the task's namespace holding access_key_id and secret_access_key",
        min_length=1,
        max_length=253,
        json_schema_extra=Rule("secretName is the name of a Secret, 1 to 253 characters, such as `oss-keys`"),
    )
    secrets_manager_arn: str | None = Field(
        None,
        description="an AWS Secrets Manager secret (JSON with access_key_id and secret_access_key)",
        pattern=SECRET_ARN_PATTERN,
        json_schema_extra=Rule(
            "secretsManagerArn must be the ARN of a Secrets Manager secret, such as "
            "`arn:aws:secretsmanager:eu-west-1:123456789012:secret:dth/oss-keys-AbCdEf`"
        ),
    )
    profile: str | None = Field(
        None,
        description="a local AWS profile; for standalone `dth run` only",
        min_length=1,
        json_schema_extra=Rule("profile must name an AWS profile, such as `default`"),
    )

    @model_validator(mode="after")
    def _exactly_one_source(self) -> Credentials:
        given = [name for name in ("secret_name", "secrets_manager_arn", "profile") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError(
                "credentials need exactly one of secretName, secretsManagerArn or profile"
                + (f" (got {', '.join(to_camel(g) for g in given)})" if given else "")
            )
        return self


class S3Location(SpecModel):
    """A bucket and prefix on some S3-compatible service."""

    type: StorageProvider = Field(StorageProvider.AMAZON_S3, description="the storage service")
    bucket: str = Field(..., pattern=BUCKET_PATTERN, description="bucket name", json_schema_extra=BUCKET_RULE)
    prefix: str = Field(
        "",
        max_length=1024,
        description="only keys under this prefix",
        json_schema_extra=Rule("prefix is at most 1024 characters long, such as `app/logs/`"),
    )
    region: str | None = Field(
        None, pattern=REGION_PATTERN, description="the bucket's region", json_schema_extra=REGION_RULE
    )
    endpoint: str | None = Field(
        None,
        pattern=ENDPOINT_PATTERN,
        description="endpoint URL; overrides the provider's",
        json_schema_extra=Rule(
            "endpoint must be an http:// or https:// URL, such as `https://oss-cn-hangzhou.aliyuncs.com`"
        ),
    )
    credentials: Credentials | None = Field(None, description="none means ambient credentials")

    @field_validator("prefix")
    @classmethod
    def _no_leading_slash(cls, prefix: str) -> str:
        if prefix.startswith("/"):
            raise ValueError("a prefix must not start with '/': S3 keys have no leading slash")
        return prefix

    @model_validator(mode="after")
    def _endpoint_resolvable(self) -> S3Location:
        if self.endpoint is None:
            if self.type is StorageProvider.S3_COMPATIBLE:
                raise ValueError("type S3_Compatible needs an endpoint")
            pattern = PROVIDER_ENDPOINTS.get(self.type, "")
            if "{region}" in pattern and not self.region:
                raise ValueError(f"type {self.type.value} needs a region to find its endpoint")
        return self

    def endpoint_url(self) -> str | None:
        """The URL to send requests to; None lets boto3 pick the AWS endpoint (China partition included)."""
        if self.endpoint:
            return self.endpoint.rstrip("/")
        pattern = PROVIDER_ENDPOINTS.get(self.type)
        if pattern is None:
            return None
        return pattern.format(region=self.region or "")

    def partition(self) -> str:
        """The AWS partition the region belongs to (bucket names are unique within one)."""
        region = self.region or ""
        if region.startswith("cn-"):
            return "aws-cn"
        if region.startswith("us-gov-"):
            return "aws-us-gov"
        return "aws"

    def addressing_style(self) -> Literal["path", "virtual"]:
        if self.endpoint is None and self.type in VIRTUAL_HOSTED_PROVIDERS:
            return "virtual"
        return "path"

    def describe(self) -> str:
        """Where this is, for messages; never includes credentials."""
        where = f"s3://{self.bucket}/{self.prefix}"
        endpoint = self.endpoint_url()
        return f"{where} at {endpoint}" if endpoint else where


class S3Source(S3Location):
    requester_pays: bool = Field(False, description="the requester pays for the source's requests")
    prefix_list_file: str | None = Field(
        None,
        description="a file of prefixes (one per line) to copy instead of the whole prefix: "
        "a local path, or s3://bucket/key read with the source's credentials",
    )


class S3Destination(S3Location):
    storage_class: StorageClass | None = Field(None, description="storage class of new objects")
    acl: CannedAcl | None = Field(None, description="canned ACL of new objects")
    sse: SseMode = Field(SseMode.NONE, description="server-side encryption of new objects")
    kms_key_id: str | None = Field(None, description="KMS key for sse AWS_KMS; default is the AWS managed key")

    @model_validator(mode="after")
    def _kms_key_needs_kms(self) -> S3Destination:
        if self.kms_key_id and self.sse is not SseMode.AWS_KMS:
            raise ValueError("kmsKeyId is only used with sse AWS_KMS")
        return self


class S3Options(SpecModel):
    compare: CompareMode = Field(
        CompareMode.SIZE_ETAG,
        description="how to decide an object is already there: size, size-etag, checksum, or none (copy all)",
    )
    include: list[str] = Field(default_factory=list, description="glob patterns of keys to copy")
    exclude: list[str] = Field(default_factory=list, description="glob patterns of keys to leave out")
    delete_extraneous: bool = Field(False, description="mirror: delete destination keys not in the source")
    copy_metadata: bool = Field(True, description="copy Content-Type, Cache-Control, ... and user metadata")
    copy_tags: bool = Field(False, description="copy object tags")
    multipart_threshold: ByteSize = Field(
        32 * MiB,
        ge=MIN_PART_SIZE,
        description="multipart above this size",
        json_schema_extra=Rule("multipartThreshold must be at least 5 MiB (S3's smallest part), such as `32MiB`"),
    )
    chunk_size: ByteSize = Field(
        8 * MiB,
        ge=MIN_PART_SIZE,
        le=MAX_PART_SIZE,
        description="multipart part size",
        json_schema_extra=Rule("chunkSize must be at least 5 MiB and at most 5 GiB (S3's part sizes), such as `8MiB`"),
    )
    giant_file_threshold: ByteSize = Field(
        1 * GiB,
        ge=MIN_PART_SIZE,
        description="objects above this are split across workers",
        json_schema_extra=Rule("giantFileThreshold must be at least 5 MiB, such as `1GiB`"),
    )
    max_retries: int = whole_number(
        5, low=0, high=100, name="maxRetries", description="attempts per object after the first"
    )
    workers: int = whole_number(
        32, low=1, high=512, name="workers", description="objects in flight at once per worker process"
    )
    concurrency: int = whole_number(
        16, low=1, high=512, name="concurrency", description="multipart parts in flight at once"
    )
    list_depth: int = whole_number(
        1, low=0, high=8, name="listDepth", description="prefix depth at which listings are split in parallel"
    )
    dry_run: bool = Field(False, description="plan only: list and compare, copy nothing")
    abort_stale_uploads: bool = Field(
        False,
        description="at each scan, abort every multipart upload this task recorded and left unfinished instead of "
        "resuming it (uploads it did not start are never touched)",
    )

    @model_validator(mode="after")
    def _threshold_allows_parts(self) -> S3Options:
        if self.multipart_threshold < self.chunk_size:
            raise ValueError("multipartThreshold must be at least chunkSize")
        return self


class S3TaskSpec(SpecModel):
    type: Literal["S3"] = Field(..., description="what to move: S3 objects")
    source: S3Source
    destination: S3Destination
    options: S3Options = Field(default_factory=S3Options)
    schedule: str = Field(
        "once", pattern=SCHEDULE_PATTERN, description="when to run (UTC)", json_schema_extra=SCHEDULE_RULE
    )
    events: EventsMode = Field(EventsMode.NONE, description="also react to S3 event notifications")
    suspend: bool = Field(False, description="stop the workers and the schedule, keep everything else")

    @model_validator(mode="after")
    def _source_and_destination_differ(self) -> S3TaskSpec:
        src, dst = self.source, self.destination
        endpoint = src.endpoint_url()
        # Without an endpoint both are AWS, where a bucket name is unique within a partition.
        same_service = endpoint == dst.endpoint_url() and (endpoint is not None or src.partition() == dst.partition())
        overlapping = src.prefix.startswith(dst.prefix) or dst.prefix.startswith(src.prefix)
        if same_service and src.bucket == dst.bucket and overlapping:
            raise ValueError(
                "source and destination overlap (same bucket, one prefix inside the other): "
                "a copy would read its own output"
            )
        return self


# The task types, as the union in dth.spec.task tags them. The union itself (and the image task it names)
# lives there, so that an S3 sync builds only the S3 models.
TASK_TYPES = ("S3", "Image")


class Phase(StrEnum):
    PENDING = "Pending"
    INVALID = "Invalid"
    PROVISIONING = "Provisioning"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    DELETING = "Deleting"


class Condition(SpecModel):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = None


class TransferCounters(SpecModel):
    """An exact account of one run: every object found ends as copied, skipped, deleted or failed."""

    found: int = 0
    copied: int = 0
    skipped: int = 0
    deleted: int = 0
    failed: int = 0
    bytes_found: int = 0
    bytes_copied: int = 0
    bytes_skipped: int = 0


class StackSync(SpecModel):
    """Why the spec's generation is not applied to the stack yet, in reconcile's words (the timer, which writes
    the conditions, reads it from here: a field only reconcile writes cannot be lost to a stale timer write)."""

    reason: str
    message: str = ""


class FailedObject(SpecModel):
    """One object the last run could not transfer, as the engines recorded it."""

    key: str = Field(..., description="the object's key, relative to the source prefix, exactly as recorded")
    reason: str = Field("", description="why it failed, in the engine's words (shortened to 1,024 characters)")


class RunNowStatus(SpecModel):
    """What became of the last "run now" request (the annotation dth.io/run-now)."""

    requested: str = Field(..., description="the annotation's value that was handled")
    result: Literal["Started", "Refused", "Failed"]
    reason: str = ""
    message: str = ""
    task_arn: str = Field("", description="the ECS task that was started")


class TransferTaskStatus(SpecModel):
    phase: Phase = Phase.PENDING
    message: str = ""
    progress: str = Field("", description="copied+skipped / found, for kubectl get")
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    objects: TransferCounters = Field(default_factory=TransferCounters)
    queue_depth: int | None = None
    dead_letter_depth: int | None = None
    stack_name: str | None = None
    stack_id: str | None = None
    stack_generation: int | None = Field(None, description="the generation last sent to CloudFormation")
    stack_sync: StackSync | None = None
    recovery_attempts: int | None = Field(
        None, description="automatic recoveries tried for the stack's failure (a re-create, a continued rollback)"
    )
    last_run: str | None = None
    failures: list[FailedObject] = Field(
        default_factory=list,
        description="the first failed objects of the last run, in key order, at most the operator's "
        "DTH_FAILURES_LIMIT (20 by default); objects.failed counts them all",
    )
    last_run_now_handled: str | None = Field(
        None, description="the last value of the annotation dth.io/run-now that was handled: started or refused"
    )
    run_now: RunNowStatus | None = None
