"""Reading manifests and specs, with errors that name the field and the reason."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from dth.errors import SpecError
from dth.spec.model import TASK_TYPES, S3TaskSpec
from dth.spec.rules import CONSTRAINT_ERRORS, rule_for

if TYPE_CHECKING:
    from dth.spec.task import TaskSpec, TransferTask


@functools.cache
def _task_spec_adapter() -> TypeAdapter[TaskSpec]:
    """TaskSpec is a discriminated union: validated through an adapter (built on first use), not a model.
    dth.spec.task (and with it every task type's models) is imported here, on first use, not by `dth s3 sync`."""
    from dth.spec.task import TaskSpec

    return TypeAdapter(TaskSpec)


def _field_path(loc: tuple[int | str, ...], root: str) -> str:
    path = root
    for index, part in enumerate(loc):
        if isinstance(part, int):
            path += f"[{part}]"
        # pydantic adds the tag of a tagged union or a function name to the location: not a field.
        # The task type's tag comes first in a spec's own errors, and right after `spec` in a manifest's.
        elif part.startswith("function-") or (
            part in TASK_TYPES and ((index == 0 and root) or (index > 0 and loc[index - 1] == "spec"))
        ):
            continue
        else:
            path += f".{part}" if path else part
    return path or "(top level)"


def validation_problems(error: ValidationError, model: Any, root: str = "") -> list[tuple[str, str]]:
    """Each problem as (field path, message): `("spec.options.chunkSize", "chunkSize must be at least 5 MiB ...")`.
    A broken constraint is said with the field's rule (dth.spec.rules), never as a raw pattern or bound."""
    problems = []
    for problem in error.errors(include_url=False):
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "unknown field"
        elif problem["type"] in CONSTRAINT_ERRORS:
            rule = rule_for(model, problem["loc"])
            if rule is not None:
                message = rule.text
        problems.append((_field_path(problem["loc"], root), message))
    return problems


def describe_validation_error(error: ValidationError, model: Any, root: str = "") -> str:
    """One line per problem, naming the field: `spec.options.chunkSize: chunkSize must be at least 5 MiB ...`."""
    return "; ".join(f"{path}: {message}" for path, message in validation_problems(error, model, root))


def task_spec_problems(raw: Any, root: str = "spec") -> list[tuple[str, str]]:
    """What `dth validate` says of a spec, problem by problem (empty when valid): the web console puts each
    beside its field."""
    try:
        parse_task_spec(raw, root)
    except SpecError as error:
        return error.problems
    return []


def _check_task_type(raw: Any, root: str) -> None:
    if not isinstance(raw, dict):
        raise SpecError(f"{root}: expected a mapping, got {type(raw).__name__}", [(root, "expected a mapping")])
    task_type = raw.get("type")
    if task_type not in TASK_TYPES:
        message = f"must be one of {', '.join(TASK_TYPES)} (got {task_type!r})"
        raise SpecError(f"{root}.type: {message}", [(f"{root}.type", message)])


def parse_task_spec(raw: Any, root: str = "spec") -> TaskSpec:
    _check_task_type(raw, root)
    adapter = _task_spec_adapter()
    from dth.spec.task import TaskSpec

    try:
        return adapter.validate_python(raw)
    except ValidationError as error:
        problems = validation_problems(error, TaskSpec, root)
        raise SpecError("; ".join(f"{path}: {message}" for path, message in problems), problems=problems) from None


def parse_s3_task_spec(raw: Any, root: str = "spec") -> S3TaskSpec:
    """An S3 task's spec through the same model as parse_task_spec's (S3TaskSpec is the union's S3 member),
    without building the other task types' models: what `dth s3 sync` needs."""
    _check_task_type(raw, root)
    if raw["type"] != "S3":
        message = f"must be S3 (got {raw['type']!r})"
        raise SpecError(f"{root}.type: {message}", [(f"{root}.type", message)])
    try:
        return S3TaskSpec.model_validate(raw)
    except ValidationError as error:
        problems = validation_problems(error, S3TaskSpec, root)
        raise SpecError("; ".join(f"{path}: {message}" for path, message in problems), problems=problems) from None


def parse_manifest(raw: Any, origin: str = "manifest") -> TransferTask:
    from dth.spec.task import TransferTask

    if not isinstance(raw, dict):
        raise SpecError(f"{origin}: expected a TransferTask mapping, got {type(raw).__name__}")
    parse_task_spec(raw.get("spec"))  # the spec's own errors, named from `spec`
    try:
        return TransferTask.model_validate(raw)
    except ValidationError as error:
        raise SpecError(f"{origin}: {describe_validation_error(error, TransferTask)}") from None


def load_manifest(path: Path) -> TransferTask:
    import yaml  # only manifests are YAML

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise SpecError(f"{path}: cannot read the manifest ({error.strerror})") from None
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise SpecError(f"{path}: not valid YAML{where}: {problem}") from None
    if len(documents) != 1:
        raise SpecError(f"{path}: expected exactly one TransferTask document, found {len(documents)}")
    return parse_manifest(documents[0], str(path))
