"""The whole TransferTask manifest: the union of every task type's spec, tagged by `type`.

Kept apart from dth.spec.model so that a command working on one task type (`dth s3 sync`) builds only that
type's models; whatever reads any manifest (`dth run`, `dth validate`, the CRD, the operator) imports this."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from dth.spec.image import ImageTaskSpec
from dth.spec.model import TASK_TYPES, S3TaskSpec, SpecModel
from dth.spec.rules import Rule

# The union grows a member per plugin, and TASK_TYPES with it.
TaskSpec = Annotated[S3TaskSpec | ImageTaskSpec, Field(discriminator="type")]

__all__ = ["TASK_TYPES", "ObjectMeta", "TaskSpec", "TransferTask"]


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(
        ...,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        max_length=253,
        json_schema_extra=Rule(
            "metadata.name must be a Kubernetes name: at most 253 lower-case letters, digits, '-' and '.', "
            "beginning and ending with a letter or digit, such as `logs-to-china`"
        ),
    )
    namespace: str = "default"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class TransferTask(SpecModel):
    """A whole manifest, as `kubectl apply` and `dth run` read it."""

    model_config = ConfigDict(extra="ignore")  # status and server-set fields are not ours to check

    api_version: Literal["dth.io/v1alpha1"] = Field(..., alias="apiVersion")
    kind: Literal["TransferTask"]
    metadata: ObjectMeta
    spec: TaskSpec
