"""The CRD is generated from the model, is a structural schema, and checks what the model checks (loosely).

The schema is checked here with the `jsonschema` package (OpenAPI v3.0 schemas are draft 4 with `nullable`);
the kube-apiserver's own check of the CRD comes in the cluster tests.
"""

from __future__ import annotations

import copy
import difflib
import re
import types
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel, Field, ValidationError

from dth.spec.crd import (
    CRD_NAME,
    INT_OR_STRING,
    PRESERVE_UNKNOWN,
    SchemaConversionError,
    crd_manifest,
    model_schema,
    render_crd,
)
from dth.spec.model import (
    API_GROUP,
    API_VERSION,
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    ByteSize,
    S3TaskSpec,
    SpecModel,
    TransferTaskStatus,
)
from dth.spec.task import TaskSpec, TransferTask

CRD_FILE = Path(__file__).resolve().parents[1] / "crds" / "transfertask.yaml"
Path_ = tuple[str, ...]  # a place in a manifest: ("spec", "options", "compare"); "[]" is an array item

# What the generated schemas may use: a subset of JSONSchemaProps with nothing the apiserver rejects or
# a structural schema forbids ($ref, title, default, oneOf, allOf, additionalProperties: false, ...).
ALLOWED_KEYS = frozenset(
    {
        "type",
        "description",
        "nullable",
        "format",
        "enum",
        "pattern",
        "minLength",
        "maxLength",
        "minimum",
        "exclusiveMinimum",
        "maximum",
        "exclusiveMaximum",
        "multipleOf",
        "minItems",
        "maxItems",
        "items",
        "minProperties",
        "maxProperties",
        "properties",
        "additionalProperties",
        "required",
        "anyOf",
        INT_OR_STRING,
        "x-kubernetes-list-type",
    }
)
CANONICAL_INT_OR_STRING = [{"type": "integer"}, {"type": "string"}]


# --------------------------------------------------------------------------------------------------
# helpers


def _schema(crd: dict[str, Any] | None = None) -> dict[str, Any]:
    crd = crd if crd is not None else yaml.safe_load(render_crd())
    (version,) = crd["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def _nodes(node: dict[str, Any], path: Path_ = ()) -> Iterator[tuple[Path_, dict[str, Any]]]:
    """Every schema node that describes a place in the object (not the anyOf branches of int-or-string)."""
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _nodes(sub, (*path, name))
    if isinstance(node.get("items"), dict):
        yield from _nodes(node["items"], (*path, "[]"))
    if isinstance(node.get("additionalProperties"), dict):
        yield from _nodes(node["additionalProperties"], (*path, "*"))


def _at(schema: dict[str, Any], path: Path_) -> dict[str, Any]:
    node = schema
    for step in path:
        if step == "[]":
            node = node["items"]
        elif step == "*":
            node = node["additionalProperties"]
        else:
            assert step in node.get("properties", {}), f"{'.'.join(path)}: no property {step!r} in the schema"
            node = node["properties"][step]
    return node


def _assert_structural(schema: dict[str, Any]) -> None:
    for path, node in _nodes(schema):
        where = ".".join(path) or "(root)"
        assert set(node) <= ALLOWED_KEYS, f"{where}: unexpected keys {sorted(set(node) - ALLOWED_KEYS)}"
        assert "$ref" not in node and "title" not in node and "default" not in node, where
        assert node.get("additionalProperties") is not False, f"{where}: additionalProperties: false"
        assert PRESERVE_UNKNOWN not in node, f"{where}: x-kubernetes-preserve-unknown-fields"
        if node.get(INT_OR_STRING):
            assert "type" not in node, f"{where}: int-or-string with a type"
            # The apiserver accepts exactly this anyOf beside x-kubernetes-int-or-string (isIntOrStringAnyOfPattern).
            assert node["anyOf"] == CANONICAL_INT_OR_STRING, f"{where}: {node['anyOf']}"
        else:
            assert node.get("type") in {"object", "array", "string", "integer", "number", "boolean"}, (
                f"{where}: no type"
            )
            assert "anyOf" not in node, f"{where}: anyOf outside int-or-string"
        if node.get("type") == "array":
            assert isinstance(node.get("items"), dict), f"{where}: an array without items"
        if node.get("type") == "object" and path != ("metadata",):
            assert "properties" in node or "additionalProperties" in node, f"{where}: an object without fields"
            assert not ("properties" in node and "additionalProperties" in node), where
        for name in node.get("required", []):
            assert name in node.get("properties", {}), f"{where}: requires {name!r}, which it does not describe"
        # The apiserver checks an explicit null against the enum even when nullable: never both.
        assert not ("enum" in node and node.get("nullable")), f"{where}: nullable enum"
        if "pattern" in node:
            re.compile(node["pattern"])


def _leaves(annotation: Any, path: Path_) -> Iterator[tuple[Path_, Any]]:
    """The types an annotation can hold, each with its place: Optional/Union/Annotated looked through,
    list and set items one level down."""
    origin = get_origin(annotation)
    if origin is Annotated:
        yield from _leaves(get_args(annotation)[0], path)
    elif origin in (Union, types.UnionType):
        for arg in get_args(annotation):
            yield from _leaves(arg, path)
    elif origin in (list, set, frozenset, tuple):
        for arg in get_args(annotation):
            if arg is not Ellipsis:
                yield from _leaves(arg, (*path, "[]"))
    elif origin is dict:
        yield from _leaves(get_args(annotation)[1], (*path, "*"))
    else:
        yield path, annotation


class _Expected:
    """What the model says each place holds: field aliases, enum values, required aliases (per union branch)."""

    def __init__(self) -> None:
        self.fields: dict[Path_, set[str]] = {}
        self.enums: dict[Path_, set[Any]] = {}
        self.required: dict[Path_, list[set[str]]] = {}

    def collect(self, annotation: Any, path: Path_) -> _Expected:
        for place, leaf in _leaves(annotation, path):
            if get_origin(leaf) is Literal:
                self.enums.setdefault(place, set()).update(get_args(leaf))
            elif isinstance(leaf, type) and issubclass(leaf, Enum):
                self.enums.setdefault(place, set()).update(member.value for member in leaf)
            elif isinstance(leaf, type) and issubclass(leaf, BaseModel):
                fields = self.fields.setdefault(place, set())
                required = set()
                for name, info in leaf.model_fields.items():
                    alias = info.alias or name
                    fields.add(alias)
                    if info.is_required():
                        required.add(alias)
                    self.collect(info.annotation, (*place, alias))
                self.required.setdefault(place, []).append(required)
        return self


def _as_json_schema(node: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI v3.0 schema as a JSON Schema draft 4 (`nullable` is OpenAPI's, x-kubernetes-* are ignored)."""
    out = {k: v for k, v in node.items() if not k.startswith("x-kubernetes-") and k != "nullable"}
    if "properties" in out:
        out["properties"] = {name: _as_json_schema(sub) for name, sub in out["properties"].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = _as_json_schema(out[key])
    if node.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        else:
            out["anyOf"] = [*out["anyOf"], {"type": "null"}]
    return out


def _prune_nulls(value: Any, schema: dict[str, Any] | None) -> Any:
    """What the apiserver does before validating: drop nulls where the schema is not nullable (and has no default)."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            sub = None
            if schema is not None:
                sub = schema.get("properties", {}).get(key)
                if sub is None and isinstance(schema.get("additionalProperties"), dict):
                    sub = schema["additionalProperties"]
            if item is None and sub is not None and not sub.get("nullable"):
                continue
            out[key] = _prune_nulls(item, sub)
        return out
    if isinstance(value, list):
        items = schema.get("items") if schema is not None else None
        return [_prune_nulls(item, items) for item in value]
    return value


def _errors(schema: dict[str, Any], instance: Any) -> list[str]:
    """The schema's complaints about an object, as the apiserver would see it; [] when it is accepted."""
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft4Validator(_as_json_schema(schema))
    found = validator.iter_errors(_prune_nulls(instance, schema))
    return sorted(f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in found)


def _manifest(spec: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "metadata": {"name": "copy"},
        "spec": spec,
        **extra,
    }


VALID_SPEC: dict[str, Any] = {
    "type": "S3",
    "source": {
        "type": "Aliyun_OSS",
        "bucket": "src-bucket",
        "prefix": "logs/2024/",
        "region": "cn-hangzhou",
        "credentials": {"secretName": "oss-keys"},
        "requesterPays": False,
    },
    "destination": {
        "bucket": "dst.bucket-1",
        "region": "us-west-2",
        "storageClass": "STANDARD_IA",
        "acl": "bucket-owner-full-control",
        "sse": "AWS_KMS",
        "kmsKeyId": "alias/dth",
        "credentials": {"secretsManagerArn": "arn:aws:secretsmanager:us-west-2:123456789012:secret:dth-AbCdEf"},
    },
    "options": {
        "compare": "checksum",
        "include": ["*.log"],
        "exclude": ["tmp/*"],
        "chunkSize": "16MiB",
        "multipartThreshold": 67108864,
        "giantFileThreshold": "2GiB",
        "workers": 64,
        "maxRetries": 3,
        "dryRun": True,
    },
    "schedule": "0 3 * * *",
    "events": "Create",
    "suspend": False,
}


# --------------------------------------------------------------------------------------------------
# (a) the committed file is the generator's output


def test_committed_crd_is_current() -> None:
    expected = render_crd()
    committed = CRD_FILE.read_text(encoding="utf-8") if CRD_FILE.exists() else ""
    if committed != expected:
        diff = "".join(
            difflib.unified_diff(
                committed.splitlines(keepends=True),
                expected.splitlines(keepends=True),
                "crds/transfertask.yaml (committed)",
                "render_crd()",
                n=2,
            )
        )
        pytest.fail(
            f"crds/transfertask.yaml is out of date with the model: run `dth crd > crds/transfertask.yaml`\n{diff[:4000]}",
            pytrace=False,
        )


def test_render_is_the_manifest_under_a_do_not_edit_header() -> None:
    text = render_crd()
    first = text.splitlines()[0]
    assert first.startswith("#") and "dth crd" in first and "Do not edit" in first
    assert text.endswith("\n") and not text.endswith("\n\n")
    assert yaml.safe_load(text) == crd_manifest()
    assert render_crd() == text  # stable


def test_crd_identity_columns_and_subresources() -> None:
    crd = crd_manifest()
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == CRD_NAME == f"{PLURAL}.{API_GROUP}" == "transfertasks.dth.io"
    spec = crd["spec"]
    assert spec["group"] == API_GROUP
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == KIND
    assert spec["names"]["plural"] == PLURAL
    assert spec["names"]["singular"] == SINGULAR
    assert spec["names"]["shortNames"] == list(SHORT_NAMES) == ["tt"]
    assert spec["names"]["listKind"] == f"{KIND}List"
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == (API_VERSION, True, True)
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert list(columns) == ["Type", "Phase", "Progress", "Message", "Age"]
    assert columns["Type"]["jsonPath"] == ".spec.type"
    assert columns["Phase"]["jsonPath"] == ".status.phase"
    assert columns["Progress"]["jsonPath"] == ".status.progress"
    assert columns["Message"]["priority"] == 1
    assert (columns["Age"]["jsonPath"], columns["Age"]["type"]) == (".metadata.creationTimestamp", "date")
    schema = _schema(crd)
    for column in columns.values():  # every column points at a field the schema has
        path = tuple(column["jsonPath"].lstrip(".").split("."))
        if path[0] != "metadata":
            _at(schema, path)


# --------------------------------------------------------------------------------------------------
# (b) structural


def test_schema_is_structural() -> None:
    schema = _schema()
    _assert_structural(schema)
    assert schema["type"] == "object"
    assert schema["required"] == ["spec"]
    assert set(schema["properties"]) == {"apiVersion", "kind", "metadata", "spec", "status"}
    assert schema["properties"]["apiVersion"]["type"] == schema["properties"]["kind"]["type"] == "string"
    assert schema["properties"]["metadata"] == {"type": "object"}  # the apiserver owns metadata's schema


def test_int_or_string_sizes_keep_their_checks_beside_the_canonical_any_of() -> None:
    chunk = _at(_schema(), ("spec", "options", "chunkSize"))
    assert chunk[INT_OR_STRING] is True
    assert chunk["anyOf"] == CANONICAL_INT_OR_STRING
    assert chunk["minimum"] == 0
    assert "pattern" in chunk


# --------------------------------------------------------------------------------------------------
# (c) the schema describes exactly the model


@pytest.mark.parametrize(("root", "annotation"), [("spec", TaskSpec), ("status", TransferTaskStatus)])
def test_every_model_field_and_enum_is_in_the_schema(root: str, annotation: Any) -> None:
    schema = _schema()
    expected = _Expected().collect(annotation, (root,))
    assert expected.fields and expected.enums
    for path, fields in expected.fields.items():
        node = _at(schema, path)
        assert set(node["properties"]) == fields, f"{'.'.join(path)}: schema and model fields differ"
        # What every union branch requires; by alias.
        required = set.intersection(*expected.required[path])
        assert set(node.get("required", [])) == required, f"{'.'.join(path)}: required"
    for path, values in expected.enums.items():
        node = _at(schema, path)
        assert set(node["enum"]) == values, f"{'.'.join(path)}: enum"
        assert len(node["enum"]) == len(values)
    # and no enum the model does not have
    for path, node in _nodes(schema["properties"][root], (root,)):
        if "enum" in node:
            assert path in expected.enums, f"{'.'.join(path)}: an enum the model does not have"


def test_field_descriptions_reach_kubectl_explain() -> None:
    schema = _schema()
    assert _at(schema, ("spec", "source", "bucket"))["description"].startswith("bucket name. Bucket names are 3 to 255")
    # A constrained field's rule in words is part of its description (what `kubectl explain` shows).
    assert _at(schema, ("spec", "schedule"))["description"] == (
        "when to run (UTC). Schedule must be `once` or a five-field cron expression such as `0 2 * * *`"
    )
    # A field's own description wins over its model's docstring.
    assert _at(schema, ("spec", "source", "credentials"))["description"] == "none means ambient credentials"


# --------------------------------------------------------------------------------------------------
# (d) examples through the schema


def test_valid_manifest_is_accepted() -> None:
    manifest = _manifest(VALID_SPEC)
    TransferTask.model_validate(manifest)  # the model agrees it is valid
    assert _errors(_schema(), manifest) == []


def test_minimal_manifest_and_the_models_own_dump_are_accepted() -> None:
    minimal = {"type": "S3", "source": {"bucket": "src-bucket"}, "destination": {"bucket": "dst-bucket"}}
    schema = _schema()
    assert _errors(schema, _manifest(minimal)) == []
    # Everything the model writes back (defaults and nulls included, e.g. storageClass: null) goes through.
    for spec in (minimal, VALID_SPEC):
        dumped = S3TaskSpec.model_validate(spec).model_dump(mode="json", by_alias=True)
        assert _errors(schema, _manifest(dumped)) == []


def test_status_written_by_the_model_is_accepted() -> None:
    status = TransferTaskStatus.model_validate(
        {
            "phase": "Running",
            "progress": "10/20",
            "observedGeneration": 3,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Running", "lastTransitionTime": None}],
            "objects": {"found": 20, "copied": 9, "skipped": 1, "bytesFound": 1 << 30},
            "stackName": "dth-copy",
        }
    )
    schema = _schema()
    for written in (status, TransferTaskStatus()):
        assert _errors(schema, _manifest(VALID_SPEC, status=written.model_dump(mode="json", by_alias=True))) == []
    bad = {"phase": "Exploded", "conditions": [{"type": "Ready", "status": "Maybe"}]}
    assert [e.split(":")[0] for e in _errors(schema, _manifest(VALID_SPEC, status=bad))] == [
        "status.conditions.0.status",
        "status.phase",
    ]


def _with(path: str, value: Any) -> dict[str, Any]:
    """VALID_SPEC with one place (dotted) set to value."""
    spec = copy.deepcopy(VALID_SPEC)
    *parents, last = path.split(".")
    node = spec
    for key in parents:
        node = node[key]
    node[last] = value
    return spec


@pytest.mark.parametrize(
    ("path", "value", "complaint_at"),
    [
        ("options.compare", "fast", "spec.options.compare"),
        ("source.bucket", 12, "spec.source.bucket"),
        ("source.bucket", "-bad-", "spec.source.bucket"),
        ("type", "Ftp", "spec.type"),
        ("source.type", "Dropbox", "spec.source.type"),
        ("options.workers", 0, "spec.options.workers"),
        ("options.chunkSize", -1, "spec.options.chunkSize"),
        ("options.chunkSize", "lots", "spec.options.chunkSize"),
        ("options.chunkSize", True, "spec.options.chunkSize"),
        ("options.include", "*.log", "spec.options.include"),
        ("schedule", "every day", "spec.schedule"),
        ("destination.sse", "aes256", "spec.destination.sse"),
        ("source.credentials", "oss-keys", "spec.source.credentials"),
    ],
)
def test_invalid_manifest_is_rejected(path: str, value: Any, complaint_at: str) -> None:
    spec = _with(path, value)
    with pytest.raises(ValidationError):  # the model rejects it too
        S3TaskSpec.model_validate(spec)
    errors = _errors(_schema(), _manifest(spec))
    assert errors, f"{path}={value!r} passed the schema"
    assert all(e.startswith(complaint_at) for e in errors), errors


# Not source.bucket: an Image task's source has none, and the schema requires only what every task type
# requires (the model still does: test_spec).
@pytest.mark.parametrize("missing", ["type", "source", "destination"])
def test_missing_required_field_is_rejected(missing: str) -> None:
    spec = copy.deepcopy(VALID_SPEC)
    *parents, last = missing.split(".")
    node = spec
    for key in parents:
        node = node[key]
    del node[last]
    assert _errors(_schema(), _manifest(spec))


def test_manifest_without_spec_is_rejected() -> None:
    manifest = _manifest(VALID_SPEC)
    del manifest["spec"]
    assert _errors(_schema(), manifest) == ["(root): 'spec' is a required property"]


def test_explicit_null_in_an_optional_enum_is_pruned_not_rejected() -> None:
    spec = _with("destination.storageClass", None)
    assert S3TaskSpec.model_validate(spec).destination.storage_class is None
    assert _errors(_schema(), _manifest(spec)) == []


@pytest.mark.parametrize(
    "size",
    [
        8388608,
        "8388608",
        "8MiB",
        "8Mi",
        "8MB",
        "1.5GiB",
        "8 MiB",
    ],
)
def test_schema_accepts_every_size_the_model_accepts(size: Any) -> None:
    spec = _with("options.chunkSize", size)
    spec["options"]["multipartThreshold"] = "5GiB"
    S3TaskSpec.model_validate(spec)
    assert _errors(_schema(), _manifest(spec)) == []


# --------------------------------------------------------------------------------------------------
# the converter on what the model will grow into


class _ImageOptions(SpecModel):
    workers: int = Field(4, ge=1, le=1024, description="images in flight at once")
    platforms: list[str] = Field(default_factory=list, description="platforms to copy; all when empty")
    chunk_size: ByteSize | None = None
    mode: Literal["copy", "sync"] = "copy"


class _ImageTaskSpec(SpecModel):
    """Copy container images between registries."""

    type: Literal["Image"] = Field(..., description="what to move: container images")
    images: list[str] = Field(..., min_length=1)
    options: _ImageOptions = Field(default_factory=_ImageOptions)
    suspend: bool = Field(False, description="stop the workers and the schedule, keep everything else")


_UnionSpec = Annotated[S3TaskSpec | _ImageTaskSpec, Field(discriminator="type")]


def test_discriminated_union_becomes_one_structural_object() -> None:
    spec = model_schema(_UnionSpec)
    schema = {"type": "object", "properties": {"spec": spec}}
    _assert_structural(schema)

    assert spec["properties"]["type"]["enum"] == ["S3", "Image"]
    assert spec["required"] == ["type"]  # the only field both branches require
    assert {"source", "destination", "schedule", "images"} <= set(spec["properties"])
    assert "description" not in spec  # only one branch has a docstring: it would be wrong for the other

    options = spec["properties"]["options"]["properties"]
    assert {"compare", "chunkSize", "platforms", "mode", "workers"} <= set(options)
    assert (options["workers"]["minimum"], options["workers"]["maximum"]) == (1, 1024)  # the looser bounds
    assert options["chunkSize"][INT_OR_STRING] and options["chunkSize"]["nullable"]

    expected = _Expected().collect(_UnionSpec, ("spec",))
    for path, fields in expected.fields.items():
        node = _at(schema, path)
        assert set(node["properties"]) == fields
        assert set(node.get("required", [])) == set.intersection(*expected.required[path])
    for path, values in expected.enums.items():
        assert set(_at(schema, path)["enum"]) == values


def test_discriminated_union_accepts_both_branches() -> None:
    schema = {"type": "object", "properties": {"spec": model_schema(_UnionSpec)}}
    image = {"type": "Image", "images": ["docker.io/library/nginx:1.27"], "options": {"chunkSize": "16MiB"}}
    _ImageTaskSpec.model_validate(image)
    assert _errors(schema, {"spec": image}) == []
    assert _errors(schema, {"spec": VALID_SPEC}) == []
    assert _errors(schema, {"spec": {**image, "type": "Ftp"}})
    assert _errors(schema, {"spec": {**image, "options": {"mode": "mirror"}}})


def test_unrepresentable_models_fail_loudly() -> None:
    class Node(BaseModel):
        children: list[Node] = []

    class Mixed(BaseModel):
        value: str | list[int]

    with pytest.raises(SchemaConversionError, match="recursion"):
        model_schema(Node)
    with pytest.raises(SchemaConversionError, match="value: cannot merge a string and a array"):
        model_schema(Mixed)
