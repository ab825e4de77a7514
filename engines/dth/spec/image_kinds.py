"""The image task's enumerations, apart from its models (dth.spec.image, which re-exports them): the `dth`
parser offers them as choices without building the image task's models."""

from __future__ import annotations

from enum import StrEnum


class RegistryType(StrEnum):
    AMAZON_ECR = "Amazon_ECR"
    REGISTRY = "Registry"


class MultiArch(StrEnum):
    ALL = "all"  # an image index and every image it lists (skopeo copy --all)
    SYSTEM = "system"  # only the image for the platform the engine runs on
