"""The lean client's view of S3's service model (read without botocore's loaders) is botocore's model: the same
operations, shapes, members and serialization traits for every operation the lean client serves."""

from __future__ import annotations

from typing import Any

import botocore.session

from dth.s3.lean.model import s3_service_model
from dth.s3.lean.operations import OPERATIONS, Operation


def _dump(shape: Any, depth: int = 0) -> Any:
    if shape is None:
        return None
    described: dict[str, Any] = {"name": shape.name, "type": shape.type_name, "serialization": shape.serialization}
    if depth < 6 and shape.type_name == "structure":
        described["members"] = {name: _dump(member, depth + 1) for name, member in shape.members.items()}
    elif depth < 6 and shape.type_name == "list":
        described["member"] = _dump(shape.member, depth + 1)
    return described


def test_every_served_operation_reads_as_botocore_reads_it() -> None:
    botocore_model = botocore.session.get_session().get_service_model("s3")
    lean_model = s3_service_model()
    for operation in OPERATIONS.values():
        theirs, ours = botocore_model.operation_model(operation), lean_model.operation_model(operation)
        assert ours.name == theirs.name
        assert ours.http == theirs.http
        assert _dump(ours.input_shape) == _dump(theirs.input_shape), operation
        assert _dump(ours.output_shape) == _dump(theirs.output_shape), operation
        layout, expected = Operation.from_model(ours), Operation.from_model(theirs)
        for field in ("method", "fixed_query", "query_members", "header_members", "prefixed_headers", "payload"):
            assert getattr(layout, field) == getattr(expected, field), (operation, field)
        assert (layout.output_headers, layout.output_prefixed, layout.output_payload) == (
            expected.output_headers,
            expected.output_prefixed,
            expected.output_payload,
        ), operation
