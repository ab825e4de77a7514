"""The creation wizard's form, generated from the spec model (dth.spec): field names, defaults, descriptions
with their rules, and enums all come from the pydantic models, so the form has no second copy of the rules.
A submitted form becomes a spec mapping, checked by the same code as `dth validate`, whose problems are put
beside their fields.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, BeforeValidator, ValidationError
from pydantic.fields import FieldInfo

from dth.spec.image import ImageTaskSpec
from dth.spec.load import task_spec_problems, validation_problems
from dth.spec.model import S3TaskSpec, parse_byte_size
from dth.spec.rules import Rule
from dth.spec.task import ObjectMeta

Kind = Literal["text", "number", "size", "bool", "choice", "lines"]
TASK_MODELS: dict[str, type[BaseModel]] = {"S3": S3TaskSpec, "Image": ImageTaskSpec}
#: The sides whose access keys may be typed in (they become a Secret in the task's namespace).
KEY_SIDES: dict[str, tuple[str, ...]] = {"S3": ("source", "destination"), "Image": ()}
DESCRIPTION_ANNOTATION = "dth.io/description"


@dataclass(frozen=True)
class FormField:
    path: str  # the spec path in manifest names, such as "options.chunkSize"
    name: str
    kind: Kind
    description: str
    default: str
    choices: tuple[str, ...] = ()
    required: bool = False


@dataclass(frozen=True)
class FormSection:
    path: str
    name: str
    description: str
    fields: tuple[FormField, ...] = ()
    sections: tuple[FormSection, ...] = ()
    optional: bool = False  # left out of the spec when none of its fields is filled in

    def walk(self) -> Iterator[FormField]:
        yield from self.fields
        for section in self.sections:
            yield from section.walk()


def _describe(info: FieldInfo) -> str:
    """The field's description with its rule, as the CRD (and so `kubectl explain`) says it."""
    schema: dict[str, Any] = {"description": info.description} if info.description else {}
    if isinstance(info.json_schema_extra, Rule):
        info.json_schema_extra(schema)
    return str(schema.get("description", ""))


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return members[0], True
    return annotation, False


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "\n".join(str(item) for item in value)
    return str(value)


def _kind(annotation: Any, info: FieldInfo) -> tuple[Kind, tuple[str, ...]]:
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "choice", tuple(str(member.value) for member in annotation)
    if annotation is bool:
        return "bool", ()
    if annotation is int:
        sized = any(isinstance(m, BeforeValidator) and m.func is parse_byte_size for m in info.metadata)
        return ("size" if sized else "number"), ()
    if typing.get_origin(annotation) is list:
        return "lines", ()
    return "text", ()


def build_section(model: type[BaseModel], path: str = "", name: str = "", optional: bool = False) -> FormSection:
    fields: list[FormField] = []
    sections: list[FormSection] = []
    for attribute, info in model.model_fields.items():
        alias = info.alias or attribute
        here = f"{path}.{alias}" if path else alias
        annotation, is_optional = _unwrap_optional(info.annotation)
        if typing.get_origin(annotation) is Literal:
            continue  # the task type: chosen before the form
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            sub = build_section(annotation, here, alias, optional=is_optional or not info.is_required())
            sections.append(FormSection(sub.path, sub.name, _describe(info), sub.fields, sub.sections, sub.optional))
            continue
        kind, choices = _kind(annotation, info)
        default = "" if info.is_required() else _as_text(info.get_default(call_default_factory=True))
        fields.append(FormField(here, alias, kind, _describe(info), default, choices, info.is_required()))
    return FormSection(
        path, name, (model.__doc__ or "").strip().split("\n")[0], tuple(fields), tuple(sections), optional
    )


_FORMS: dict[str, FormSection] = {}


def task_form(task_type: str) -> FormSection:
    """The form of a task type (built once)."""
    if task_type not in _FORMS:
        _FORMS[task_type] = build_section(TASK_MODELS[task_type])
    return _FORMS[task_type]


# --- from a submitted form to a spec ---------------------------------------------------------------------
def _value(form_field: FormField, raw: str) -> Any:
    """The typed value of one input, or None to leave the field out (empty, or the default)."""
    text = raw.strip() if form_field.kind != "lines" else raw
    if form_field.kind == "bool":
        checked = text == "true"
        return None if _as_text(checked) == form_field.default else checked
    if form_field.kind == "lines":
        items = [line.strip() for line in text.splitlines() if line.strip()]
        return items or None
    if text == "" or (text == form_field.default and not form_field.required):
        return None
    if form_field.kind in ("number", "size") and text.isdigit():
        return int(text)
    return text  # pydantic reports what does not fit, in the field's own words


def _section_spec(section: FormSection, form: Mapping[str, str]) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    for form_field in section.fields:
        value = _value(form_field, form.get(form_field.path, ""))
        if value is not None:
            spec[form_field.name] = value
    for sub in section.sections:
        nested = _section_spec(sub, form)
        if nested or not sub.optional:
            spec[sub.name] = nested
    return spec


def spec_from_form(task_type: str, form: Mapping[str, str]) -> dict[str, Any]:
    """The spec a submitted form describes (values equal to their defaults left out, so the YAML is short)."""
    return {"type": task_type, **_section_spec(task_form(task_type), form)}


def form_values(spec: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """An existing spec as form values (edit and clone fill the form in with them)."""
    values: dict[str, str] = {}
    for key, value in spec.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            values.update(form_values(value, path))
        else:
            values[path] = _as_text(value)
    return values


# --- checking ----------------------------------------------------------------------------------------------
@dataclass
class Problems:
    """Problems by form path ("" for the whole form): spec paths lose their "spec." prefix."""

    by_path: dict[str, list[str]] = field(default_factory=dict)

    def add(self, path: str, message: str) -> None:
        self.by_path.setdefault(path, []).append(message)

    def __bool__(self) -> bool:
        return bool(self.by_path)

    def at(self, path: str) -> list[str]:
        return self.by_path.get(path, [])

    def all(self) -> list[tuple[str, str]]:
        return [(path, message) for path, messages in self.by_path.items() for message in messages]


def check(task_type: str, spec: Mapping[str, Any], name: str, namespace: str, form: FormSection) -> Problems:
    """The problems `dth validate` reports for this spec and metadata, each under the form path it names
    (or the nearest section, or the whole form)."""
    problems = Problems()
    known = {f.path for f in form.walk()} | _section_paths(form)
    for path, message in task_spec_problems(dict(spec)):
        where = path.removeprefix("spec").lstrip(".")
        while where and where not in known:
            where = where.rsplit(".", 1)[0] if "." in where else ""
        problems.add(where, message)
    try:
        ObjectMeta.model_validate({"name": name, "namespace": namespace or "default"})
    except ValidationError as error:
        for path, message in validation_problems(error, ObjectMeta, "metadata"):
            problems.add(path, message)
    if not namespace:
        problems.add("metadata.namespace", "choose the namespace the task is created in")
    return problems


def _section_paths(section: FormSection) -> set[str]:
    paths = {section.path} if section.path else set()
    for sub in section.sections:
        paths |= _section_paths(sub)
    return paths
