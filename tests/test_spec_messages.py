"""Every constrained field of the spec model says its rule in words, with an example: walked field by
field, each constraint broken on purpose, and the message read as a person (or the web console) gets it."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from dth.errors import SpecError
from dth.spec.image import ImageTaskSpec
from dth.spec.load import parse_manifest, parse_task_spec
from dth.spec.model import S3TaskSpec
from dth.spec.rules import Rule, _models_in
from dth.spec.task import TransferTask

BASES: dict[type[BaseModel], dict[str, Any]] = {
    S3TaskSpec: {"type": "S3", "source": {"bucket": "src-bucket"}, "destination": {"bucket": "dst-bucket"}},
    ImageTaskSpec: {
        "type": "Image",
        "source": {"type": "Registry", "registry": "src.example.com", "images": {"all": True}},
        "destination": {"type": "Registry", "registry": "dst.example.com"},
    },
}
# Fails every pattern of the model: a space and a '!' are allowed in none of them.
NOT_MATCHING = "no such thing!"


@dataclass(frozen=True)
class Constraint:
    root: type[BaseModel]
    path: tuple[str, ...]  # by alias, from the spec
    info: FieldInfo
    kind: str  # pattern, min_length, max_length, ge, le, gt, lt
    bound: Any

    @property
    def id(self) -> str:
        return f"{self.root.__name__}.{'.'.join(self.path)}:{self.kind}"

    def breaking_value(self) -> Any:
        if self.kind == "pattern":
            assert re.search(self.bound, NOT_MATCHING) is None
            return NOT_MATCHING
        if self.kind == "min_length":
            return "a" * (self.bound - 1)
        if self.kind == "max_length":
            return "a" * (self.bound + 1)
        return {"ge": self.bound - 1, "gt": self.bound, "le": self.bound + 1, "lt": self.bound}[self.kind]


def _constraints_of(info: FieldInfo) -> Iterator[tuple[str, Any]]:
    for item in info.metadata:
        for kind in ("pattern", "min_length", "max_length", "ge", "le", "gt", "lt"):
            value = getattr(item, kind, None)
            if value is not None:
                yield kind, value


def _walk(root: type[BaseModel], model: type[BaseModel], path: tuple[str, ...]) -> Iterator[Constraint]:
    for name, info in model.model_fields.items():
        field_path = (*path, info.alias or name)
        for kind, bound in _constraints_of(info):
            yield Constraint(root, field_path, info, kind, bound)
        for inner in _models_in(info.annotation):
            yield from _walk(root, inner, field_path)


CONSTRAINTS = [c for root in BASES for c in _walk(root, root, ())]


def test_the_walk_finds_the_constrained_fields() -> None:
    found = {c.id for c in CONSTRAINTS}
    for expected in (
        "S3TaskSpec.schedule:pattern",
        "S3TaskSpec.source.bucket:pattern",
        "S3TaskSpec.options.chunkSize:ge",
        "S3TaskSpec.options.chunkSize:le",
        "S3TaskSpec.source.credentials.secretsManagerArn:pattern",
        "ImageTaskSpec.destination.prefix:max_length",
        "ImageTaskSpec.options.concurrency:le",
    ):
        assert expected in found
    assert len(CONSTRAINTS) >= 40


@pytest.mark.parametrize("constraint", CONSTRAINTS, ids=lambda c: c.id)
def test_every_constrained_field_says_its_rule_in_words(constraint: Constraint) -> None:
    rule = constraint.info.json_schema_extra
    assert isinstance(rule, Rule), f"{constraint.id} has a constraint but no Rule in words"
    assert "such as `" in rule.text, f"{constraint.id}: the rule gives no example"

    raw = copy.deepcopy(BASES[constraint.root])
    where = raw
    for part in constraint.path[:-1]:
        where = where.setdefault(part, {})
    where[constraint.path[-1]] = constraint.breaking_value()
    with pytest.raises(SpecError) as refused:
        parse_task_spec(raw)
    field = "spec." + ".".join(constraint.path)
    mine = [line for line in str(refused.value).split("; ") if line.startswith(f"{field}: ")]
    assert mine, f"no message names {field}: {refused.value}"
    message = mine[0]
    assert rule.text in message
    _assert_in_words(message, constraint)


def _assert_in_words(message: str, constraint: Constraint) -> None:
    for raw in ("should match pattern", "Input should be", "String should"):
        assert raw not in message, message
    if constraint.kind == "pattern":
        assert constraint.bound not in message, message
    elif isinstance(constraint.bound, int) and constraint.bound >= 1024 and constraint.kind in ("ge", "le", "gt", "lt"):
        assert str(constraint.bound) not in message, f"a raw byte count in: {message}"


def test_the_manifests_own_fields_say_their_rule_too() -> None:
    name = TransferTask.model_fields["metadata"].annotation
    assert isinstance(name, type)
    rule = name.model_fields["name"].json_schema_extra
    assert isinstance(rule, Rule)
    with pytest.raises(SpecError) as refused:
        parse_manifest(
            {
                "apiVersion": "dth.io/v1alpha1",
                "kind": "TransferTask",
                "metadata": {"name": "Not_A_Name"},
                "spec": BASES[S3TaskSpec],
            }
        )
    assert f"metadata.name: {rule.text}" in str(refused.value)
    assert "pattern" not in str(refused.value)
