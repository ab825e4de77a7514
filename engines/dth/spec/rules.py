"""Each constrained field's rule in words, kept beside its constraint in the model.

A field says `json_schema_extra=Rule("chunkSize must be at least 5 MiB ..., such as `8MiB`")`. The rule
then reaches people twice from that one place: the JSON schema (and so the CRD, `kubectl explain`, the
web console's forms) adds it to the field's description, and a value that breaks one of the field's
constraints is reported with it instead of pydantic's "String should match pattern '^[a-z...'".
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field
from pydantic.fields import FieldInfo

# pydantic's error types for a value that breaks a field's constraint (not its type)
CONSTRAINT_ERRORS = frozenset(
    {
        "string_pattern_mismatch",
        "string_too_short",
        "string_too_long",
        "greater_than",
        "greater_than_equal",
        "less_than",
        "less_than_equal",
        "multiple_of",
        "too_short",
        "too_long",
    }
)


@dataclass(frozen=True)
class Rule:
    """A field's constraint said as a sentence with an example. Called by pydantic with the field's JSON
    schema (json_schema_extra), it adds itself to the description."""

    text: str

    def __call__(self, schema: dict[str, Any]) -> None:
        description = schema.get("description")
        schema["description"] = f"{description}. {self.text[0].upper()}{self.text[1:]}" if description else self.text


def whole_number(default: int, *, low: int, high: int, name: str, description: str) -> Any:
    """A bounded count's Field, its rule said from the same bounds, so words and check cannot drift apart."""
    rule = Rule(f"{name} must be a whole number from {low} to {high}, such as `{default}`")
    return Field(default, ge=low, le=high, description=description, json_schema_extra=rule)


def rule_for(root: Any, loc: Iterable[int | str]) -> Rule | None:
    """The rule of the field an error's `loc` points at, starting from the model (or union of models)
    `root`. Parts that name no field (a union's tag, a validator's name, a list index) are passed over."""
    candidates = list(_models_in(root))
    found: FieldInfo | None = None
    for part in loc:
        if isinstance(part, int):
            continue
        matches = [info for model in candidates for info in _fields_named(model, part)]
        if not matches:  # a union's tag picks its member; a validator's name is passed over
            candidates = [model for model in candidates if _tagged(model, part)] or candidates
            continue
        found = matches[0]
        candidates = [model for info in matches for model in _models_in(info.annotation)]
    rule = found.json_schema_extra if found is not None else None
    return rule if isinstance(rule, Rule) else None


def _tagged(model: type[BaseModel], tag: str) -> bool:
    """Whether `tag` is the model's discriminator value (its `type: Literal[...]`)."""
    info = model.model_fields.get("type")
    return (
        info is not None
        and typing.get_origin(info.annotation) is typing.Literal
        and tag in typing.get_args(info.annotation)
    )


def _fields_named(model: type[BaseModel], name: str) -> Iterator[FieldInfo]:
    for field_name, info in model.model_fields.items():
        if name in (field_name, info.alias):
            yield info


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    """The models a type annotation can hold: through Optional, unions, lists, dicts and Annotated."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        yield from _models_in(typing.get_args(annotation)[0])
    elif origin in (typing.Union, types.UnionType, list, dict, tuple, set, frozenset):
        for argument in typing.get_args(annotation):
            yield from _models_in(argument)
