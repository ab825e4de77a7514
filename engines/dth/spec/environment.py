"""An S3 task spec as environment variables, one per field, and back.

The CloudFormation plugin passes the spec to the engines' containers this way: each template parameter
becomes one variable (`DTH_SPEC_SOURCE_BUCKET`, `DTH_SPEC_OPTIONS_CHUNK_SIZE`, ...), so a template never has
to build JSON. The names and encodings are derived from the model by walking its fields (`spec_leaves`),
so a field added to the model gets a variable without anyone remembering to add it:

- the name is `DTH_SPEC_` and the field's path in upper snake case;
- booleans are `true`/`false`, numbers and sizes decimal bytes, enums their value, lists of strings a JSON
  array, strings themselves;
- an empty string (or a missing variable) means the field is unset: the model's default applies, and an
  optional block (`credentials`) is absent when none of its fields is set;
- a `DTH_SPEC_*` variable that names no field is an error, as an unknown field in a manifest is.

`spec_from_environment(spec_environment(spec)) == spec` for every spec whose optional strings are not
empty strings (an empty optional string reads back as unset).
"""

from __future__ import annotations

import json
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ValidationError
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo

from dth.errors import SpecError
from dth.spec.model import S3TaskSpec, parse_byte_size

ENV_PREFIX = "DTH_SPEC_"

LeafKind = Literal["bool", "int", "size", "str", "enum", "literal", "list"]


@dataclass(frozen=True)
class SpecLeaf:
    """One scalar (or list-of-strings) field of a spec model, found by walking the nested models."""

    path: tuple[str, ...]  # Python names: ("options", "chunk_size")
    aliases: tuple[str, ...]  # manifest names: ("options", "chunkSize")
    kind: LeafKind
    field: FieldInfo
    value_type: Any  # bool, int, str, the Enum class, or the Literal's values
    optional: bool  # the field itself may be None
    in_optional_block: bool  # some enclosing model may be None (credentials)

    @property
    def dotted(self) -> str:
        """`options.chunkSize`, as manifests and error messages name it."""
        return ".".join(self.aliases)

    @property
    def env_name(self) -> str:
        return ENV_PREFIX + "_".join(part.upper() for part in self.path)

    @property
    def parameter_name(self) -> str:
        """PascalCase of the path: `OptionsChunkSize`, `SourceCredentialsSecretsManagerArn`."""
        return "".join(word.capitalize() for part in self.path for word in part.split("_"))

    def bounds(self) -> tuple[int | None, int | None]:
        low = high = None
        for item in self.field.metadata:
            if isinstance(item, annotated_types.Ge):
                low = int(item.ge)  # type: ignore[call-overload]
            elif isinstance(item, annotated_types.Le):
                high = int(item.le)  # type: ignore[call-overload]
        return low, high

    def length_bounds(self) -> tuple[int | None, int | None]:
        low = high = None
        for item in self.field.metadata:
            if isinstance(item, annotated_types.MinLen):
                low = item.min_length
            elif isinstance(item, annotated_types.MaxLen):
                high = item.max_length
        return low, high

    def pattern(self) -> str | None:
        for item in self.field.metadata:
            pattern = getattr(item, "pattern", None)
            if isinstance(pattern, str):
                return pattern
        return None

    def choices(self) -> list[str] | None:
        if self.kind == "enum":
            return [member.value for member in self.value_type]
        if self.kind == "literal":
            return [str(value) for value in self.value_type]
        if self.kind == "bool":
            return ["true", "false"]
        return None

    def encode(self, value: Any) -> str:
        """The variable's text for a field value (None is the empty string)."""
        if value is None:
            return ""
        if self.kind == "bool":
            return "true" if value else "false"
        if self.kind in ("int", "size"):
            return str(int(value))
        if self.kind == "enum":
            return str(value.value)
        if self.kind == "list":
            return json.dumps(list(value), ensure_ascii=False)
        return str(value)

    def default_text(self) -> str:
        """The encoded default (empty for required fields)."""
        if self.field.is_required():
            return ""
        return self.encode(self.field.get_default(call_default_factory=True))

    def decode(self, text: str) -> Any:
        """The value to validate for a variable's text (pydantic does the rest of the checking)."""
        if self.kind == "bool":
            lowered = text.strip().lower()
            if lowered not in ("true", "false"):
                raise ValueError(f"must be true or false (got {text!r})")
            return lowered == "true"
        if self.kind == "int":
            try:
                return int(text.strip())
            except ValueError:
                raise ValueError(f"must be a whole number (got {text!r})") from None
        if self.kind == "size":
            return parse_byte_size(text)
        if self.kind == "list":
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise ValueError(f"must be a JSON array of strings (got {text!r})") from None
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                raise ValueError(f"must be a JSON array of strings (got {text!r})")
            return value
        return text


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    if get_origin(annotation) in (Union, types.UnionType):
        members = [member for member in get_args(annotation) if member is not type(None)]
        if len(members) == 1 and len(members) < len(get_args(annotation)):
            return members[0], True
    return annotation, False


def _is_size(field: FieldInfo) -> bool:
    return any(getattr(item, "func", None) is parse_byte_size for item in field.metadata)


def spec_leaves(model: type[BaseModel] = S3TaskSpec) -> Iterator[SpecLeaf]:
    """Every leaf field of `model`, depth first in declaration order."""
    yield from _walk(model, (), (), in_optional_block=False)


def _walk(
    model: type[BaseModel], path: tuple[str, ...], aliases: tuple[str, ...], *, in_optional_block: bool
) -> Iterator[SpecLeaf]:
    for name, field in model.model_fields.items():
        annotation, optional = _unwrap_optional(field.annotation)
        alias = field.alias or name
        where = (*path, name)
        named = (*aliases, alias)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _walk(annotation, where, named, in_optional_block=in_optional_block or optional)
            continue
        kind: LeafKind
        value_type: Any = annotation
        if annotation is bool:
            kind = "bool"
        elif annotation is int:
            kind = "size" if _is_size(field) else "int"
        elif annotation is str:
            kind = "str"
        elif isinstance(annotation, type) and issubclass(annotation, Enum):
            kind = "enum"
        elif get_origin(annotation) is Literal:
            kind, value_type = "literal", get_args(annotation)
        elif get_origin(annotation) is list and get_args(annotation) == (str,):
            kind = "list"
        else:
            raise TypeError(
                f"{'.'.join(named)}: no environment encoding for {annotation!r}; teach dth.spec.environment it"
            )
        yield SpecLeaf(where, named, kind, field, value_type, optional, in_optional_block)


def _get(spec: BaseModel, path: tuple[str, ...]) -> Any:
    value: Any = spec
    for name in path:
        if value is None:
            return None
        value = getattr(value, name)
    return value


def spec_environment(spec: S3TaskSpec) -> dict[str, str]:
    """One variable per field of the spec (every field, set or not: unset ones are empty)."""
    return {leaf.env_name: leaf.encode(_get(spec, leaf.path)) for leaf in spec_leaves(type(spec))}


def spec_from_environment(env: Mapping[str, str]) -> S3TaskSpec:
    """The spec the `DTH_SPEC_*` variables describe; a `SpecError` names the variable that is wrong."""
    data: dict[str, Any] = {}
    problems: list[str] = []
    by_path: dict[tuple[str, ...], SpecLeaf] = {}
    for leaf in spec_leaves(S3TaskSpec):
        by_path[leaf.path] = leaf
        text = env.get(leaf.env_name, "")
        if text == "":
            continue
        try:
            value = leaf.decode(text)
        except ValueError as error:
            problems.append(f"{leaf.env_name}: {error}")
            continue
        target = data
        for name in leaf.path[:-1]:
            target = target.setdefault(name, {})
        target[leaf.path[-1]] = value
    known = {leaf.env_name for leaf in by_path.values()}
    unknown = sorted(name for name in env if name.startswith(ENV_PREFIX) and name not in known)
    if unknown:
        problems.append(f"{', '.join(unknown)}: no such field (a typo?)")
    if problems:
        raise SpecError("; ".join(problems))
    data.setdefault("type", "S3")
    try:
        return S3TaskSpec.model_validate(data)
    except ValidationError as error:
        raise SpecError(_describe(error, by_path)) from None


def _describe(error: ValidationError, by_path: Mapping[tuple[str, ...], SpecLeaf]) -> str:
    """Name the variable where a problem is about one field; otherwise the field path, as manifests do."""
    lines = []
    for problem in error.errors(include_url=False):
        loc = tuple(str(part) for part in problem["loc"] if not str(part).startswith("function-"))
        leaf = by_path.get(loc)
        message = problem["msg"].removeprefix("Value error, ")
        if leaf is not None:
            lines.append(f"{leaf.env_name} ({leaf.dotted}): {message}")
        else:
            where = ".".join(["spec", *(to_camel(part) for part in loc)])
            lines.append(f"{where}: {message}")
    return "; ".join(lines)
