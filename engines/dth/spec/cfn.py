"""From a TransferTask to the parameters of its CloudFormation plugin stack (`cfn/s3-plugin.yaml`).

Every field of the S3 spec is one template parameter, named by the PascalCase of its path (`SourceBucket`,
`OptionsChunkSize`) and declared with the model's own constraints (`spec_parameter_declarations`). The
template hands each parameter to the engines' containers as the `DTH_SPEC_*` variable of the same field
(`dth.spec.environment`), where `spec_from_environment` reads the spec back. The fields are found by walking
the model, so a new field cannot be forgotten: the tests fail until the template declares and passes it.

A few parameters are computed from the spec, because CloudFormation cannot compute them
(`DERIVED_PARAMETERS`), and the rest describe where and how the plugin runs (`PluginSettings`).

The image plugin (`cfn/image-plugin.yaml`, `image_stack_parameters`) hands its engine the whole spec as JSON
in one parameter (`TaskSpec`, the engine's DTH_TASK_SPEC), plus what IAM and the schedule need of it.

Credentials reach a stack only as Secrets Manager ARNs: a Kubernetes Secret (`secretName`) must have been
copied to Secrets Manager first (pass its ARN in `secret_arns`), and a local `profile` means nothing on ECS.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dth.errors import SpecError
from dth.spec.environment import SpecLeaf, spec_environment, spec_leaves
from dth.spec.image import ImageTaskSpec, RegistryLocation, RegistryType
from dth.spec.model import MiB, S3TaskSpec

#: Fields that have no parameter, and why.
EXCLUDED_FIELDS: dict[str, str] = {
    "type": "constant: the template is the S3 plugin (its containers get DTH_SPEC_TYPE=S3 as a literal)",
    "source.credentials.secretName": "a Kubernetes Secret: copied to Secrets Manager first, passed as its ARN",
    "source.credentials.profile": "a local AWS profile: means nothing on ECS",
    "destination.credentials.secretName": "a Kubernetes Secret: copied to Secrets Manager first, passed as its ARN",
    "destination.credentials.profile": "a local AWS profile: means nothing on ECS",
}

#: Parameters computed from a spec field, because CloudFormation has no arithmetic or string functions.
DERIVED_PARAMETERS: dict[str, str] = {
    "ScheduleExpression": "schedule",  # the EventBridge form of the cron expression
    "QueueMaxReceiveCount": "options.maxRetries",  # receives before SQS dead-letters: maxRetries + 1
    "QueueVisibilityTimeout": "options.chunkSize",  # seconds a received part may take
}

#: Parameters that say where and how the plugin runs (PluginSettings), not what it moves.
S3_PLUGIN_PARAMETERS = (
    "TaskName",
    "Image",
    "ClusterName",
    "Subnets",
    "SecurityGroups",
    "AssignPublicIp",
    "FinderCpu",
    "FinderMemory",
    "WorkerCpu",
    "WorkerMemory",
    "MaxWorkers",
    "LogRetentionDays",
    "AlarmEmail",
    "PermissionsBoundaryArn",
)

#: The longest parameter value CloudFormation accepts.
MAX_PARAMETER_VALUE = 4096

#: An IAM managed policy's ARN (the templates' PermissionsBoundaryArn parameter has the same pattern).
PERMISSIONS_BOUNDARY_PATTERN = r"^arn:aws[a-z-]*:iam::\d{12}:policy/.+$"

#: Days CloudWatch Logs accepts as a retention.
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922)
#: Fargate's CPU units and, for each, the memory sizes (MiB) it allows.
FARGATE_SIZES: dict[int, tuple[int, ...]] = {
    256: (512, 1024, 2048),
    512: tuple(range(1024, 4097, 1024)),
    1024: tuple(range(2048, 8193, 1024)),
    2048: tuple(range(4096, 16385, 1024)),
    4096: tuple(range(8192, 30721, 1024)),
    8192: tuple(range(16384, 61441, 4096)),
    16384: tuple(range(32768, 122881, 8192)),
}


@dataclass(frozen=True)
class TaskSize:
    """A Fargate task size: CPU units and memory in MiB."""

    cpu: int
    memory: int

    def check(self, what: str) -> None:
        if self.memory not in FARGATE_SIZES.get(self.cpu, ()):
            raise SpecError(
                f"{what}: Fargate has no task size of {self.cpu} CPU units with {self.memory} MiB "
                f"(CPU units: {', '.join(map(str, FARGATE_SIZES))})"
            )


@dataclass(frozen=True)
class PluginSettings:
    """Where and how a plugin stack runs: the operator's configuration, the same for every task."""

    image: str  # the engine image; its entrypoint is `dth`
    subnets: Sequence[str]  # the tasks' subnets (awsvpc networking)
    security_groups: Sequence[str] = ()  # at least one (outbound HTTPS is all the tasks need)
    cluster: str = ""  # an existing ECS cluster; empty: the stack creates one
    assign_public_ip: bool = False  # subnets without a NAT gateway need a public IP to reach the endpoints
    finder: TaskSize = field(default_factory=lambda: TaskSize(1024, 2048))  # also the image plugin's task
    worker: TaskSize = field(default_factory=lambda: TaskSize(2048, 4096))
    max_workers: int = 10
    log_retention_days: int = 30
    alarm_email: str = ""  # subscribed to the alarm topic when given
    permissions_boundary: str = ""  # an IAM policy ARN bounding every role the stack makes; empty: none

    def check(self) -> None:
        if not self.image.strip():
            raise SpecError("plugin settings: image is empty")
        if not self.subnets or not self.security_groups:
            raise SpecError("plugin settings: Fargate tasks need at least one subnet and one security group")
        self.finder.check("plugin settings: finder")
        self.worker.check("plugin settings: worker")
        if not 1 <= self.max_workers <= 1000:
            raise SpecError(f"plugin settings: max_workers must be 1 to 1000 (got {self.max_workers})")
        if self.permissions_boundary and not re.match(PERMISSIONS_BOUNDARY_PATTERN, self.permissions_boundary):
            raise SpecError(
                f"plugin settings: the permissions boundary must be an IAM policy ARN (got {self.permissions_boundary!r})"
            )
        if self.log_retention_days not in LOG_RETENTION_DAYS:
            raise SpecError(
                f"plugin settings: CloudWatch Logs has no retention of {self.log_retention_days} days "
                f"(one of {', '.join(map(str, LOG_RETENTION_DAYS))})"
            )


# --- the parameters of the spec's fields ----------------------------------------------------------


def spec_parameter_leaves(model: type[S3TaskSpec] = S3TaskSpec) -> list[SpecLeaf]:
    """The fields that are template parameters (every field but EXCLUDED_FIELDS)."""
    return [leaf for leaf in spec_leaves(model) if leaf.dotted not in EXCLUDED_FIELDS]


def _description(leaf: SpecLeaf) -> str:
    text = f"spec.{leaf.dotted}: {leaf.field.description or leaf.dotted}"
    if leaf.kind == "size":
        text += " (bytes)"
    elif leaf.kind == "list":
        text += " (a JSON array of strings)"
    if leaf.optional or leaf.in_optional_block:
        text += "; empty: not set"
    return text


def parameter_declaration(leaf: SpecLeaf) -> dict[str, Any]:
    """The CloudFormation declaration of a field's parameter, with the model's constraints."""
    declaration: dict[str, Any] = {"Type": "String", "Description": _description(leaf)}
    unset_allowed = leaf.optional or leaf.in_optional_block
    if leaf.kind in ("int", "size"):
        declaration["Type"] = "Number"
        low, high = leaf.bounds()
        if low is not None:
            declaration["MinValue"] = low
        if high is not None:
            declaration["MaxValue"] = high
    elif leaf.kind in ("enum", "literal", "bool"):
        choices = leaf.choices() or []
        declaration["AllowedValues"] = ["", *choices] if unset_allowed else choices
    elif leaf.kind == "list":
        declaration["AllowedPattern"] = r"^\[.*\]$"
    else:
        pattern = leaf.pattern()
        if pattern:
            declaration["AllowedPattern"] = f"^$|(?:{pattern})" if unset_allowed else pattern
        low, high = leaf.length_bounds()
        if high is not None:
            declaration["MaxLength"] = high
        if low is not None and not unset_allowed:
            declaration["MinLength"] = low
    if not leaf.field.is_required():
        declaration["Default"] = leaf.default_text()
    elif unset_allowed:
        declaration["Default"] = ""
    return declaration


def spec_parameter_declarations(model: type[S3TaskSpec] = S3TaskSpec) -> dict[str, dict[str, Any]]:
    return {leaf.parameter_name: parameter_declaration(leaf) for leaf in spec_parameter_leaves(model)}


def render_spec_parameters() -> str:
    """The Parameters entries of the spec's fields, as YAML to paste into a template."""
    return yaml.safe_dump(spec_parameter_declarations(), sort_keys=False, width=120, allow_unicode=True)


# --- derived parameters -------------------------------------------------------------------------

_DAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_NUMBER = re.compile(r"^\d+$")


def _eventbridge_day(text: str) -> str:
    """One standard-cron day of the week (0-7, 0 and 7 being Sunday, or a name) in EventBridge's 1-7."""
    if text.upper() in _DAY_NAMES:
        return text.upper()
    if not _NUMBER.match(text) or int(text) > 7:
        raise SpecError(f"schedule: {text!r} is not a day of the week (0-7 or SUN-SAT)")
    return str(int(text) % 7 + 1)


def _eventbridge_days(field_text: str) -> str:
    parts: list[str] = []
    for token in field_text.split(","):
        base, slash, step = token.partition("/")
        if "#" in base:  # the n-th weekday of the month: 5#3
            day, _, nth = base.partition("#")
            parts.append(f"{_eventbridge_day(day)}#{nth}")
            continue
        if base.upper().endswith("L") and len(base) > 1:  # the last weekday of the month: 5L
            parts.append(f"{_eventbridge_day(base[:-1])}L")
            continue
        if base in ("*", "?"):
            parts.append(base + (slash + step))
            continue
        first, dash, last = base.partition("-")
        start = _eventbridge_day(first)
        if not dash:
            parts.append(start + slash + step)
            continue
        end = _eventbridge_day(last)
        if start.isdigit() and end.isdigit() and int(end) < int(start):
            # A range ending on Sunday as 7 (5-7) wraps around in EventBridge's numbering: 6-7,1.
            if slash:
                raise SpecError(f"schedule: the day-of-week range {token!r} cannot be written for EventBridge")
            parts.extend([f"{start}-7", "1"] if end == "1" else [f"{start}-7", f"1-{end}"])
            continue
        parts.append(f"{start}-{end}{slash}{step}")
    return ",".join(parts)


def eventbridge_schedule(schedule: str) -> str:
    """EventBridge's `cron(...)` for a five-field cron expression; the empty string for `once`.

    EventBridge has a sixth field (year), numbers the days of the week 1-7 from Sunday, and wants one of
    day-of-month and day-of-week to be `?`. Standard cron's meaning when both are restricted (either
    matches) has no EventBridge equivalent, and is refused.
    """
    if schedule == "once":
        return ""
    fields = schedule.split()
    if len(fields) != 5:
        raise SpecError(f"schedule: {schedule!r} is not a five-field cron expression")
    minute, hour, day, month, weekday = fields
    day_free, weekday_free = day in ("*", "?"), weekday in ("*", "?")
    if not day_free and not weekday_free:
        raise SpecError(
            f"schedule: {schedule!r} restricts both the day of the month and the day of the week, "
            "which EventBridge cannot express (restrict one of them)"
        )
    if weekday_free:
        day, weekday = ("*" if day == "?" else day), "?"
    else:
        day, weekday = "?", _eventbridge_days(weekday)
    return f"cron({minute} {hour} {day} {month} {weekday} *)"


def queue_max_receive_count(max_retries: int) -> int:
    """SQS moves a message to the dead-letter queue when it is received more often than this: the first
    attempt and every retry, so that the worker dead-letters it itself first, with the reason."""
    return max_retries + 1


def queue_visibility_timeout(chunk_size: int) -> int:
    """Seconds a received message stays hidden by default: three times what one part takes at a slow
    1 MiB/s, at least the workers' own 300 s (they extend it while they work), at most SQS's 12 hours."""
    return max(300, min(43_200, 3 * -(-chunk_size // MiB)))


# --- the stack's parameters ---------------------------------------------------------------------


def stack_spec(spec: S3TaskSpec, secret_arns: Mapping[str, str] | None = None) -> S3TaskSpec:
    """The spec as a stack runs it: Kubernetes Secrets replaced by the Secrets Manager ARNs they were
    copied to; refused when something in it cannot work on ECS."""
    replaced: dict[str, Any] = {}
    for side_name in ("source", "destination"):
        side = getattr(spec, side_name)
        credentials = side.credentials
        if credentials is None:
            continue
        if credentials.profile:
            raise SpecError(
                f"spec.{side_name}.credentials.profile names a local AWS profile, which an ECS task does not "
                "have: use secretsManagerArn (or secretName, copied to Secrets Manager)"
            )
        if credentials.secret_name:
            arn = (secret_arns or {}).get(credentials.secret_name)
            if not arn:
                raise SpecError(
                    f"spec.{side_name}.credentials.secretName {credentials.secret_name!r} has no Secrets Manager "
                    "copy: a stack reads credentials only from Secrets Manager (pass its ARN in secret_arns)"
                )
            new_credentials = credentials.model_copy(update={"secret_name": None, "secrets_manager_arn": arn})
            replaced[side_name] = side.model_copy(update={"credentials": new_credentials})
    if spec.source.prefix_list_file and not spec.source.prefix_list_file.startswith("s3://"):
        raise SpecError(
            "spec.source.prefixListFile must be an s3:// object for a stack: an ECS task has no local files"
        )
    kms_key = spec.destination.kms_key_id
    if kms_key and not kms_key.startswith("arn:"):
        raise SpecError(
            "spec.destination.kmsKeyId must be the key's ARN for a stack (its task role is granted that key only)"
        )
    eventbridge_schedule(spec.schedule)  # refuses what EventBridge cannot express
    result = spec.model_copy(update=replaced) if replaced else spec
    # Validate again: model_copy does not, and the ARN must match the model's pattern.
    return S3TaskSpec.model_validate(result.model_dump())


def _parameter_list(values: Mapping[str, str]) -> list[dict[str, str]]:
    too_long = [name for name, value in values.items() if len(value) > MAX_PARAMETER_VALUE]
    if too_long:
        raise SpecError(
            f"{', '.join(too_long)}: longer than CloudFormation's {MAX_PARAMETER_VALUE} characters for a parameter"
        )
    return [{"ParameterKey": name, "ParameterValue": value} for name, value in values.items()]


def _plugin_values(task_name: str, settings: PluginSettings) -> dict[str, str]:
    settings.check()
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$", task_name):
        raise SpecError(f"task name {task_name!r}: letters, digits, '.', '_' and '-' only")
    return {
        "TaskName": task_name,
        "Image": settings.image,
        "ClusterName": settings.cluster,
        "Subnets": ",".join(settings.subnets),
        "SecurityGroups": ",".join(settings.security_groups),
        "AssignPublicIp": "ENABLED" if settings.assign_public_ip else "DISABLED",
        "LogRetentionDays": str(settings.log_retention_days),
        "AlarmEmail": settings.alarm_email,
        "PermissionsBoundaryArn": settings.permissions_boundary,
    }


def s3_stack_parameters(
    task_name: str,
    spec: S3TaskSpec,
    settings: PluginSettings,
    *,
    secret_arns: Mapping[str, str] | None = None,
) -> list[dict[str, str]]:
    """The `Parameters` of `create_stack`/`update_stack` for `cfn/s3-plugin.yaml`: every template parameter,
    each with its value (none is left to the template's default, so an update changes what it should)."""
    spec = stack_spec(spec, secret_arns)
    environment = spec_environment(spec)
    values = _plugin_values(task_name, settings)
    values.update(
        {
            "FinderCpu": str(settings.finder.cpu),
            "FinderMemory": str(settings.finder.memory),
            "WorkerCpu": str(settings.worker.cpu),
            "WorkerMemory": str(settings.worker.memory),
            "MaxWorkers": str(settings.max_workers),
        }
    )
    for leaf in spec_parameter_leaves(type(spec)):
        values[leaf.parameter_name] = environment[leaf.env_name]
    values.update(
        {
            "ScheduleExpression": eventbridge_schedule(spec.schedule),
            "QueueMaxReceiveCount": str(queue_max_receive_count(spec.options.max_retries)),
            "QueueVisibilityTimeout": str(queue_visibility_timeout(spec.options.chunk_size)),
        }
    )
    return _parameter_list(values)


# --- the image plugin -----------------------------------------------------------------------------

#: The image plugin's parameters: where and how it runs, the task, and what is computed from the task.
IMAGE_PLUGIN_PARAMETERS = (
    "TaskName",
    "Image",
    "ClusterName",
    "Subnets",
    "SecurityGroups",
    "AssignPublicIp",
    "TaskCpu",
    "TaskMemory",
    "LogRetentionDays",
    "AlarmEmail",
    "PermissionsBoundaryArn",
    "TaskSpec",
    "Schedule",
    "Suspend",
    "SourceEcrAccount",
    "SourceEcrRegion",
    "DestinationEcrAccount",
    "DestinationEcrRegion",
    "DestinationPrefix",
    "SourceCredentialsSecretsManagerArn",
    "DestinationCredentialsSecretsManagerArn",
    "ImageListParameterName",
)


def image_stack_spec(spec: ImageTaskSpec, secret_arns: Mapping[str, str] | None = None) -> ImageTaskSpec:
    """The image spec as a stack runs it: Kubernetes Secrets replaced by their Secrets Manager copies;
    refused when something in it cannot work on ECS."""
    replaced: dict[str, Any] = {}
    for side_name in ("source", "destination"):
        side = getattr(spec, side_name)
        credentials = side.credentials
        if credentials is None:
            continue
        if credentials.profile or credentials.env:
            given = "profile" if credentials.profile else "env"
            raise SpecError(
                f"spec.{side_name}.credentials.{given} is for standalone runs, which an ECS task is not: use "
                "secretsManagerArn (or secretName, copied to Secrets Manager)"
            )
        if credentials.secret_name:
            arn = (secret_arns or {}).get(credentials.secret_name)
            if not arn:
                raise SpecError(
                    f"spec.{side_name}.credentials.secretName {credentials.secret_name!r} has no Secrets Manager "
                    "copy: a stack reads credentials only from Secrets Manager (pass its ARN in secret_arns)"
                )
            new_credentials = credentials.model_copy(update={"secret_name": None, "secrets_manager_arn": arn})
            replaced[side_name] = side.model_copy(update={"credentials": new_credentials})
    eventbridge_schedule(spec.schedule)
    result = spec.model_copy(update=replaced) if replaced else spec
    return ImageTaskSpec.model_validate(result.model_dump())


def _secret_arn(location: RegistryLocation) -> str:
    return (location.credentials.secrets_manager_arn or "") if location.credentials else ""


def image_stack_parameters(
    task_name: str,
    spec: ImageTaskSpec,
    settings: PluginSettings,
    *,
    secret_arns: Mapping[str, str] | None = None,
) -> list[dict[str, str]]:
    """The `Parameters` of `create_stack`/`update_stack` for `cfn/image-plugin.yaml`. The engine reads the
    whole spec from one variable (DTH_TASK_SPEC); the rest is what IAM and the schedule need of it."""
    spec = image_stack_spec(spec, secret_arns)
    values = _plugin_values(task_name, settings)
    source, destination = spec.source, spec.destination
    ssm = spec.source.images.ssm_parameter or ""
    values.update(
        {
            "TaskCpu": str(settings.finder.cpu),
            "TaskMemory": str(settings.finder.memory),
            "TaskSpec": json.dumps(
                spec.model_dump(mode="json", by_alias=True, exclude_defaults=True),
                separators=(",", ":"),
                ensure_ascii=False,
            ),
            "Schedule": eventbridge_schedule(spec.schedule) or "once",
            "Suspend": "true" if spec.suspend else "false",
            "SourceEcrAccount": source.ecr_account() if source.type is RegistryType.AMAZON_ECR else "",
            "SourceEcrRegion": source.ecr_region() if source.type is RegistryType.AMAZON_ECR else "",
            "DestinationEcrAccount": destination.ecr_account() if destination.type is RegistryType.AMAZON_ECR else "",
            "DestinationEcrRegion": destination.ecr_region() if destination.type is RegistryType.AMAZON_ECR else "",
            "DestinationPrefix": destination.prefix,
            "SourceCredentialsSecretsManagerArn": _secret_arn(source),
            "DestinationCredentialsSecretsManagerArn": _secret_arn(destination),
            # A name or an ARN (arn:...:parameter/NAME): the IAM statement names the parameter by its name.
            "ImageListParameterName": ssm.split(":parameter/", 1)[-1].lstrip("/") if ssm else "",
        }
    )
    return _parameter_list(values)


# --- the templates ------------------------------------------------------------------------------

TEMPLATE_NAMES = ("s3-plugin.yaml", "image-plugin.yaml")


def template_dir() -> Path:
    """The folder of the plugin templates: `cfn/` of the source checkout."""
    return Path(__file__).resolve().parents[3] / "cfn"


def template_path(name: str) -> Path:
    if name not in TEMPLATE_NAMES:
        raise ValueError(f"no plugin template {name!r} (one of {', '.join(TEMPLATE_NAMES)})")
    return template_dir() / name


#: The largest template CloudFormation takes inline (TemplateBody, as the operator sends it); beyond it, only
#: from S3 (TemplateURL, up to 1 MB).
TEMPLATE_BODY_LIMIT = 51_200


def template_body_problem(path: Path) -> str | None:
    """Why the template cannot be sent as a TemplateBody; None when it fits."""
    size = len(path.read_text(encoding="utf-8").encode())
    if size <= TEMPLATE_BODY_LIMIT:
        return None
    return (
        f"{path.name} is {size:,} bytes, {size - TEMPLATE_BODY_LIMIT:,} over CloudFormation's "
        f"{TEMPLATE_BODY_LIMIT:,}-byte TemplateBody limit: shorten it, or upload it to S3 and pass TemplateURL"
    )


class _CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation's short-form tags (!Ref, !Sub, ...) as their long forms."""


def _construct_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CfnLoader.add_multi_constructor("!", _construct_tag)


def load_template(name_or_path: str | Path) -> dict[str, Any]:
    """A template as data, short-form tags in their long form."""
    path = Path(name_or_path)
    if not path.is_absolute() and str(name_or_path) in TEMPLATE_NAMES:
        path = template_path(str(name_or_path))
    data: dict[str, Any] = yaml.load(path.read_text(encoding="utf-8"), Loader=_CfnLoader)
    return data


# --- consistency of a template with the model ---------------------------------------------------


def _container_environments(template: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """{"Resource.container": {variable: value}} for every container of every task definition."""
    found: dict[str, dict[str, Any]] = {}
    for logical_id, resource in template.get("Resources", {}).items():
        if resource.get("Type") != "AWS::ECS::TaskDefinition":
            continue
        for container in resource.get("Properties", {}).get("ContainerDefinitions", []):
            found[f"{logical_id}.{container.get('Name')}"] = {
                item["Name"]: item.get("Value") for item in container.get("Environment", [])
            }
    return found


def s3_template_problems(template: Mapping[str, Any], model: type[S3TaskSpec] = S3TaskSpec) -> list[str]:
    """What is wrong between an S3 plugin template and the model; empty when they agree.

    Every field of the model (but EXCLUDED_FIELDS) must be a parameter declared with the model's type and
    constraints; every parameter must be a field, derived from one, or a plugin setting; and every container
    must pass every field to the engine as its `DTH_SPEC_*` variable (`Ref` of the field's parameter)."""
    problems: list[str] = []
    declared: Mapping[str, Any] = template.get("Parameters", {})
    expected = spec_parameter_declarations(model)
    leaves = {leaf.parameter_name: leaf for leaf in spec_parameter_leaves(model)}
    for name, declaration in expected.items():
        if name not in declared:
            problems.append(f"parameter {name}: missing (spec.{leaves[name].dotted} has no parameter)")
        elif dict(declared[name]) != declaration:
            problems.append(
                f"parameter {name}: declared {dict(declared[name])}, but spec.{leaves[name].dotted} says {declaration}"
            )
    allowed = set(expected) | set(DERIVED_PARAMETERS) | set(S3_PLUGIN_PARAMETERS)
    problems += [f"parameter {name}: no field of the model" for name in declared if name not in allowed]
    problems += [
        f"parameter {name}: missing (a plugin setting or derived parameter)"
        for name in (*S3_PLUGIN_PARAMETERS, *DERIVED_PARAMETERS)
        if name not in declared
    ]
    environments = _container_environments(template)
    if not environments:
        problems.append("no task definition with containers")
    for where, environment in environments.items():
        for leaf in spec_leaves(model):
            if leaf.dotted == "type":
                wanted: Any = "S3"
            elif leaf.dotted in EXCLUDED_FIELDS:
                if leaf.env_name in environment:
                    problems.append(f"{where}: passes {leaf.env_name}, but spec.{leaf.dotted} never reaches a stack")
                continue
            else:
                wanted = {"Ref": leaf.parameter_name}
            if environment.get(leaf.env_name) != wanted:
                problems.append(f"{where}: {leaf.env_name} is {environment.get(leaf.env_name)!r}, should be {wanted!r}")
    return problems


def image_template_problems(template: Mapping[str, Any]) -> list[str]:
    """What is wrong between the image plugin template and `image_stack_parameters`; empty when they agree."""
    declared = set(template.get("Parameters", {}))
    problems = [f"parameter {name}: missing" for name in IMAGE_PLUGIN_PARAMETERS if name not in declared]
    problems += [
        f"parameter {name}: not set by image_stack_parameters"
        for name in declared
        if name not in IMAGE_PLUGIN_PARAMETERS
    ]
    environments = _container_environments(template)
    if not environments:
        problems.append("no task definition with containers")
    for where, environment in environments.items():
        if environment.get("DTH_TASK_SPEC") != {"Ref": "TaskSpec"}:
            problems.append(f"{where}: DTH_TASK_SPEC should be the TaskSpec parameter")
        if environment.get("DTH_TASK_NAME") != {"Ref": "TaskName"}:
            problems.append(f"{where}: DTH_TASK_NAME should be the TaskName parameter")
    return problems


def parameter_keys(parameters: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """`[{"ParameterKey": k, "ParameterValue": v}, ...]` as `{k: v}`."""
    return {item["ParameterKey"]: item["ParameterValue"] for item in parameters}


def main() -> None:  # pragma: no cover - a helper for editing templates
    print(render_spec_parameters(), end="")


if __name__ == "__main__":  # pragma: no cover
    main()
