"""A registry side of a task, resolved: where it is, who we are there, and the clients that talk to it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from dth.image.auth import registry_login
from dth.image.registry import Login, LoginSource, RegistryClient
from dth.spec.image import RegistryLocation, RegistryType

if TYPE_CHECKING:
    from dth.image.ecr import EcrApi


@dataclass
class Side:
    role: str  # "source" or "destination"
    location: RegistryLocation
    client: RegistryClient
    login: LoginSource
    ecr: EcrApi | None = None

    @property
    def host(self) -> str:
        return self.location.host()

    @property
    def name(self) -> str:
        return f"{self.role} {self.location.describe()}"

    def close(self) -> None:
        self.client.close()


def connect(role: str, location: RegistryLocation, *, namespace: str = "default", pool_size: int = 10) -> Side:
    """Resolve the side's credentials (ECR: keys for GetAuthorizationToken; a registry: username and
    password). Raises AccessError when a named secret cannot be read; no registry request is made yet."""
    ecr: EcrApi | None = None
    login: LoginSource
    if location.type is RegistryType.AMAZON_ECR:
        from dth.image.ecr import EcrApi  # boto3 only when ECR is involved

        ecr = EcrApi(location, namespace=namespace, pool_size=pool_size)
        login = ecr.login
    else:
        fixed: Login | None = registry_login(location.credentials, location.host(), namespace)

        def login() -> Login | None:
            return fixed

    name = f"{role} {location.describe()}"
    client = RegistryClient(location.host(), login=login, insecure=location.insecure, name=name)
    return Side(role, location, client, login, ecr)
