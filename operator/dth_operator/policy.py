"""The administrator's tenant policy: what a TransferTask in a namespace may name.

A task names buckets, storage providers, endpoints and registries, Secrets Manager secrets, SSM parameters and
a KMS key,
and its plugin stack's task role is granted exactly those. Without a policy, whoever may create a task in any
namespace could have the plugin read any bucket, any secret and any parameter the account holds. The policy
(Helm values rendered into a file, `DTH_TENANT_POLICY`) is a list of rules; each applies to the namespaces its
globs match and grants what it lists. A reference is allowed when some rule for the task's namespace grants
it; a field a rule leaves out grants nothing. `{namespace}` in any pattern is the task's namespace, so one
rule can give every namespace its own buckets (`{namespace}-*`).

Secrets Manager ARNs are allowed under the namespace's own prefix (`dth/<namespace>/`, where the operator
keeps its copies of the namespace's Kubernetes Secrets) whatever the rules say, and elsewhere only under a
rule's `secretArnPrefixes`: another namespace's copies have predictable names, and must stay out of reach.

The same check runs in the admission webhook (a task outside the policy is refused at `kubectl apply`) and
at reconcile (phase Invalid with a condition naming the rule), so it holds without the webhook too.
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from dth.errors import SpecError
from dth.spec.image import ImageTaskSpec, RegistryLocation, RegistryType
from dth.spec.model import S3Location, S3TaskSpec, StorageProvider
from dth_operator.secrets import secret_id
from dth_operator.settings import OperatorSettings

NAMESPACE_PLACEHOLDER = "{namespace}"
PROVIDERS = tuple(p.value for p in StorageProvider) + tuple(r.value for r in RegistryType)


class TenantRule(BaseModel):
    """What the namespaces matching `namespaces` may name. Every list holds globs (fnmatch: `*`, `?`,
    `[...]`) except `providers` (names, or `*`), `secretArnPrefixes` (prefixes) and `ssmParameterPaths`
    (parameter hierarchies: `/team-a` allows `/team-a/images`, not `/team-ab`)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    name: str = Field(..., min_length=1, description="named in refusals, so a tenant knows which rule to ask about")
    namespaces: tuple[str, ...] = Field(..., min_length=1, description="namespace globs this rule applies to")
    source_buckets: tuple[str, ...] = Field((), description="buckets a task may read (source, prefix list file)")
    destination_buckets: tuple[str, ...] = Field((), description="buckets a task may write")
    providers: tuple[str, ...] = Field((), description="storage services and registry kinds (spec's `type`)")
    endpoints: tuple[str, ...] = Field((), description="host[:port] of explicit endpoints and of registries")
    secret_arn_prefixes: tuple[str, ...] = Field((), description="Secrets Manager ARNs beyond the namespace's own")
    ssm_parameter_paths: tuple[str, ...] = Field((), description="SSM parameters an image task may read its list from")
    kms_keys: tuple[str, ...] = Field((), description="KMS key ARNs a task may encrypt its destination with")

    @field_validator("providers")
    @classmethod
    def _known_providers(cls, providers: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [p for p in providers if p != "*" and p not in PROVIDERS]
        if unknown:
            raise ValueError(f"unknown provider {', '.join(unknown)} (one of {', '.join(PROVIDERS)}, or *)")
        return providers

    @field_validator("ssm_parameter_paths")
    @classmethod
    def _absolute_paths(cls, paths: tuple[str, ...]) -> tuple[str, ...]:
        relative = [p for p in paths if not p.startswith("/")]
        if relative:
            raise ValueError(f"SSM parameter paths start with '/': {', '.join(relative)}")
        return paths

    def applies_to(self, namespace: str) -> bool:
        return any(fnmatch.fnmatchcase(namespace, pattern) for pattern in self.namespaces)


class TenantPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: tuple[TenantRule, ...] = Field(..., description="a namespace may use what any of its rules grants")

    def violations(self, namespace: str, spec: S3TaskSpec | ImageTaskSpec) -> list[str]:
        """One sentence per reference of the spec that no rule for the namespace allows; empty when allowed."""
        rules = [rule for rule in self.rules if rule.applies_to(namespace)]
        found = []
        for reference in references(spec):
            if reference.kind == "secretArnPrefixes" and _own_secret(reference.value, namespace):
                continue
            if any(_grants(rule, reference, namespace) for rule in rules):
                continue
            found.append(reference.refusal(namespace, rules))
        return found

    def check(self, namespace: str, spec: S3TaskSpec | ImageTaskSpec) -> None:
        """Raise PolicyViolationError naming what the policy does not allow."""
        refused = self.violations(namespace, spec)
        if refused:
            raise PolicyViolationError("; ".join(refused))


class PolicyViolationError(SpecError):
    """A task that names something the tenant policy does not give its namespace."""


#: Without a policy file: a single-tenant install. Any bucket, provider, endpoint and KMS key; Secrets Manager
#: secrets only under the namespace's own prefix; SSM parameters only under /dth/<namespace>/.
DEFAULT_POLICY = TenantPolicy(
    rules=(
        TenantRule(
            name="default",
            namespaces=("*",),
            source_buckets=("*",),
            destination_buckets=("*",),
            providers=("*",),
            endpoints=("*",),
            kms_keys=("*",),
            ssm_parameter_paths=(f"/dth/{NAMESPACE_PLACEHOLDER}",),
        ),
    )
)


def load_policy(path: Path | None) -> TenantPolicy:
    """The policy in a YAML (or JSON) file with a top-level `rules` list; DEFAULT_POLICY without a file."""
    if path is None:
        return DEFAULT_POLICY
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise SpecError(f"tenant policy {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise SpecError(f"tenant policy {path}: not YAML: {error}") from None
    try:
        return TenantPolicy.model_validate(document)
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(str(part) for part in problem["loc"])
        raise SpecError(f"tenant policy {path}: {where}: {problem['msg']}") from None


@functools.cache
def configured_policy() -> TenantPolicy:
    """The operator's policy (DTH_TENANT_POLICY), read once per process: a change rolls the pod (the chart
    puts the file's checksum on the pod template)."""
    return load_policy(OperatorSettings.from_environment().tenant_policy)


# --- what a spec names ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """One thing a spec names: where (the field), what kind (the rule's key) and its value."""

    field: str
    kind: str
    value: str

    def refusal(self, namespace: str, rules: list[TenantRule]) -> str:
        text = f"{self.field} {self.value!r} is not allowed in namespace {namespace} by the tenant policy"
        if self.kind == "secretArnPrefixes":
            text += f" (not under the namespace's own prefix {own_secret_prefix(namespace)}"
            text += f", nor under secretArnPrefixes of rule {_names(rules)})" if rules else ")"
        elif rules:
            text += f" (not in {self.kind} of rule {_names(rules)})"
        else:
            text += " (no rule applies to the namespace)"
        return text


def _names(rules: list[TenantRule]) -> str:
    return ", ".join(rule.name for rule in rules)


def references(spec: S3TaskSpec | ImageTaskSpec) -> Iterator[Reference]:
    if isinstance(spec, S3TaskSpec):
        yield Reference("spec.source.bucket", "sourceBuckets", spec.source.bucket)
        listed = spec.source.prefix_list_file or ""
        if listed.startswith("s3://"):
            bucket = listed.removeprefix("s3://").split("/", 1)[0]
            yield Reference("spec.source.prefixListFile", "sourceBuckets", bucket)
        yield Reference("spec.destination.bucket", "destinationBuckets", spec.destination.bucket)
        if spec.destination.kms_key_id:
            yield Reference("spec.destination.kmsKeyId", "kmsKeys", spec.destination.kms_key_id)
        for side, s3_location in (("source", spec.source), ("destination", spec.destination)):
            yield from _s3_location(side, s3_location)
    else:
        for side, registry in (("source", spec.source), ("destination", spec.destination)):
            yield from _registry(side, registry)
        if spec.source.images.ssm_parameter:
            yield Reference("spec.source.images.ssmParameter", "ssmParameterPaths", spec.source.images.ssm_parameter)


def _s3_location(side: str, location: S3Location) -> Iterator[Reference]:
    yield Reference(f"spec.{side}.type", "providers", location.type.value)
    if location.endpoint:
        yield Reference(f"spec.{side}.endpoint", "endpoints", _host(location.endpoint))
    yield from _secret(side, location.credentials.secrets_manager_arn if location.credentials else None)


def _registry(side: str, location: RegistryLocation) -> Iterator[Reference]:
    yield Reference(f"spec.{side}.type", "providers", location.type.value)
    where = "registry" if location.registry or location.type is RegistryType.REGISTRY else "accountId"
    yield Reference(f"spec.{side}.{where}", "endpoints", location.host())
    if location.endpoint:
        yield Reference(f"spec.{side}.endpoint", "endpoints", _host(location.endpoint))
    yield from _secret(side, location.credentials.secrets_manager_arn if location.credentials else None)


def _secret(side: str, arn: str | None) -> Iterator[Reference]:
    if arn:
        yield Reference(f"spec.{side}.credentials.secretsManagerArn", "secretArnPrefixes", arn)


def _host(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0].lower()


# --- matching ---------------------------------------------------------------------------------------


@functools.cache
def _cluster_id() -> str:
    return OperatorSettings.from_environment().cluster_id


def own_secret_prefix(namespace: str) -> str:
    """The name prefix of this operator's Secrets Manager copies of the namespace's Kubernetes Secrets (its
    cluster's, so that another cluster's copies in the same account are not the namespace's own)."""
    return secret_id(_cluster_id(), namespace, "", "").rstrip("/") + "/"


def _own_secret(arn: str, namespace: str) -> bool:
    secret_name = arn.split(":secret:", 1)[1] if ":secret:" in arn else ""
    return secret_name.startswith(own_secret_prefix(namespace))


def _parameter_name(parameter: str) -> str:
    """`/a/b` for a name (`a/b` or `/a/b`) or an ARN (`arn:...:parameter/a/b`)."""
    name = parameter.split(":parameter/", 1)[1] if parameter.startswith("arn:") else parameter
    return "/" + name.lstrip("/")


def _grants(rule: TenantRule, reference: Reference, namespace: str) -> bool:
    patterns = [p.replace(NAMESPACE_PLACEHOLDER, namespace) for p in getattr(rule, _FIELDS[reference.kind])]
    value = reference.value
    if reference.kind == "providers":
        return "*" in patterns or value in patterns
    if reference.kind == "secretArnPrefixes":
        return any(value.startswith(prefix) for prefix in patterns if prefix)
    if reference.kind == "ssmParameterPaths":
        name = _parameter_name(value)
        return any(
            path == "/" or name == path.rstrip("/") or name.startswith(path.rstrip("/") + "/") for path in patterns
        )
    if reference.kind == "endpoints":
        value = value.lower()
    return any(fnmatch.fnmatchcase(value, pattern) for pattern in patterns)


_FIELDS = {
    "sourceBuckets": "source_buckets",
    "destinationBuckets": "destination_buckets",
    "providers": "providers",
    "endpoints": "endpoints",
    "secretArnPrefixes": "secret_arn_prefixes",
    "ssmParameterPaths": "ssm_parameter_paths",
    "kmsKeys": "kms_keys",
}
