"""S3's service model, read from botocore's own data file without botocore's loaders and model classes.

The lean client reads the layout of a dozen operations from the model (dth.s3.lean.operations). botocore's
session, loaders and `botocore.model` pull in urllib3, the signers and the endpoint machinery: a third of a
second of start-up that a sync on static keys and a path-style endpoint never needs. The data file is the one
botocore ships, merged with its SDK extras as botocore's loader merges them, and these views offer the
attributes of botocore's Shape and OperationModel that the lean client reads (name, type_name, members, member,
serialization; name, http, input_shape, output_shape). tests/test_lean_model.py checks them against
botocore's model for every served operation.
"""

from __future__ import annotations

import functools
import gzip
import json
from importlib.util import find_spec
from pathlib import Path
from typing import Any

SERVICE = "s3"
API_VERSION = "2006-03-01"
# botocore.model.Shape.SERIALIZED_ATTRS: the traits that describe where and how a member travels.
_SERIALIZED = (
    "locationName",
    "queryName",
    "flattened",
    "location",
    "payload",
    "streaming",
    "timestampFormat",
    "xmlNamespace",
    "resultWrapper",
    "xmlAttribute",
    "eventstream",
    "event",
    "eventheader",
    "eventpayload",
    "jsonvalue",
    "hostLabel",
)


class Shape:
    """A shape as botocore.model.Shape shows it: member traits merged over the shape's own definition."""

    def __init__(self, name: str, definition: dict[str, Any], shapes: dict[str, Any]) -> None:
        self.name = name
        self.type_name: str = definition["type"]
        self._definition = definition
        self._shapes = shapes

    @functools.cached_property
    def serialization(self) -> dict[str, Any]:
        found = {name: self._definition[name] for name in _SERIALIZED if name in self._definition}
        if "locationName" in found:
            found["name"] = found.pop("locationName")
        return found

    @functools.cached_property
    def members(self) -> dict[str, Shape]:
        return {name: _resolve(reference, self._shapes) for name, reference in self._definition["members"].items()}

    @functools.cached_property
    def member(self) -> Shape:
        return _resolve(self._definition["member"], self._shapes)


def _resolve(reference: dict[str, Any], shapes: dict[str, Any]) -> Shape:
    traits = dict(reference)
    name = traits.pop("shape")
    return Shape(name, {**shapes[name], **traits} if traits else shapes[name], shapes)


class OperationModel:
    def __init__(self, name: str, definition: dict[str, Any], shapes: dict[str, Any]) -> None:
        self.name = name
        self.http: dict[str, Any] = definition.get("http", {})
        self._definition = definition
        self._shapes = shapes

    @functools.cached_property
    def input_shape(self) -> Shape | None:
        reference = self._definition.get("input")
        return _resolve(reference, self._shapes) if reference else None

    @functools.cached_property
    def output_shape(self) -> Shape | None:
        reference = self._definition.get("output")
        return _resolve(reference, self._shapes) if reference else None


class ServiceModel:
    def __init__(self, description: dict[str, Any]) -> None:
        self._operations: dict[str, Any] = description["operations"]
        self._shapes: dict[str, Any] = description["shapes"]

    def operation_model(self, name: str) -> OperationModel:
        return OperationModel(name, self._operations[name], self._shapes)


def _data_directory() -> Path:
    spec = find_spec("botocore")  # its location only: botocore itself is not imported here
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("botocore is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / SERVICE / API_VERSION


def _merge(target: dict[str, Any], extra: dict[str, Any]) -> None:
    """botocore.utils.merge_dicts: nested dicts merged, anything else replaced."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


@functools.cache
def s3_service_model() -> ServiceModel:
    directory = _data_directory()
    plain = directory / "service-2.json"
    if plain.exists():
        description = json.loads(plain.read_bytes())
    else:
        description = json.loads(gzip.decompress((directory / "service-2.json.gz").read_bytes()))
    extras = directory / "service-2.sdk-extras.json"
    if extras.exists():
        _merge(description, json.loads(extras.read_bytes()).get("merge", {}))
    return ServiceModel(description)
