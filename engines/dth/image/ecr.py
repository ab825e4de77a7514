"""The Amazon ECR API calls the engine makes (boto3): list repositories and tags, get a registry login,
create repositories. Image bytes never go through this API: they go through the registry's /v2/ endpoint."""

from __future__ import annotations

import base64
import threading
import time
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config

from dth.errors import AccessError
from dth.image.errors import NotFoundError, RegistryAuthError, RegistryError
from dth.image.registry import Login
from dth.spec.image import ImageCredentials, RegistryLocation

# ECR tokens last 12 hours; asking again after 6 leaves any copy in flight plenty of margin.
TOKEN_REFRESH_SECONDS = 6 * 3600.0


def ecr_session(credentials: ImageCredentials | None, namespace: str = "default") -> boto3.Session:
    """A boto3 session with the keys the side names (ambient ones when it names none)."""
    from dth.s3 import credentials as keys

    if credentials is None:
        return boto3.Session()
    if credentials.profile:
        try:
            return boto3.Session(profile_name=credentials.profile)
        except botocore.exceptions.ProfileNotFound:
            raise AccessError(f"AWS profile {credentials.profile!r} is not configured") from None
    if credentials.secrets_manager_arn:
        pair = keys.key_pair_from_secrets_manager(credentials.secrets_manager_arn)
    elif credentials.secret_name:
        pair = keys.key_pair_from_kubernetes(credentials.secret_name, namespace)
    else:
        raise AccessError(
            "credentials.env is for a Registry: Amazon_ECR needs profile, secretName or secretsManagerArn"
        )
    return boto3.Session(botocore_session=keys.session_from_key_pair(pair))


def _code(error: botocore.exceptions.ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", "Error"))


class EcrApi:
    """One account's registry in one region."""

    def __init__(self, location: RegistryLocation, *, namespace: str = "default", pool_size: int = 10) -> None:
        self.account = location.ecr_account()
        self.region = location.ecr_region()
        self.where = f"ECR {self.account} in {self.region}"
        session = ecr_session(location.credentials, namespace)
        self._client: Any = session.client(
            "ecr",
            region_name=self.region,
            endpoint_url=location.endpoint,
            config=Config(
                retries={"max_attempts": 5, "mode": "standard"},
                max_pool_connections=pool_size,
                connect_timeout=10,
                read_timeout=60,
            ),
        )
        self._lock = threading.Lock()
        self._login: tuple[Login, float] | None = None
        self._repositories_made: set[str] = set()

    def _fail(self, error: Exception, what: str) -> RegistryError:
        if isinstance(error, botocore.exceptions.ClientError):
            code = _code(error)
            message = error.response.get("Error", {}).get("Message", "")
            text = f"{self.where}: {what}: {code}" + (f" ({message})" if message else "")
            if code in ("RepositoryNotFoundException", "RegistryNotFoundException"):
                return NotFoundError(text)
            if code in (
                "AccessDeniedException",
                "UnrecognizedClientException",
                "InvalidSignatureException",
                "ExpiredTokenException",
                "InvalidClientTokenId",
            ):
                return RegistryAuthError(text)
            status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            return RegistryError(text, status=status, retryable=status >= 500 or code == "ThrottlingException")
        if isinstance(error, botocore.exceptions.NoCredentialsError):
            return RegistryAuthError(f"{self.where}: no AWS credentials found")
        return RegistryError(f"{self.where}: {what}: {error}", retryable=True)

    def repositories(self) -> list[str]:
        names: list[str] = []
        try:
            for page in self._client.get_paginator("describe_repositories").paginate(registryId=self.account):
                names.extend(r["repositoryName"] for r in page.get("repositories", []))
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as error:
            raise self._fail(error, "DescribeRepositories") from None
        return sorted(set(names))

    def tags(self, repository: str) -> list[str]:
        tags: set[str] = set()
        try:
            pages = self._client.get_paginator("describe_images").paginate(
                registryId=self.account, repositoryName=repository, filter={"tagStatus": "TAGGED"}
            )
            for page in pages:
                for detail in page.get("imageDetails", []):
                    tags.update(detail.get("imageTags") or [])
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as error:
            raise self._fail(error, f"DescribeImages {repository}") from None
        return sorted(tags)

    def login(self) -> Login:
        """`AWS` and a token from GetAuthorizationToken, asked again every few hours."""
        with self._lock:
            if self._login is not None and self._login[1] > time.monotonic():
                return self._login[0]
            try:
                data = self._client.get_authorization_token(registryIds=[self.account])["authorizationData"]
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as error:
                raise self._fail(error, "GetAuthorizationToken") from None
            if not data:
                raise RegistryAuthError(f"{self.where}: GetAuthorizationToken returned no token")
            user, _, password = base64.b64decode(data[0]["authorizationToken"]).decode().partition(":")
            login = Login(user, password)
            self._login = (login, time.monotonic() + TOKEN_REFRESH_SECONDS)
            return login

    def ensure_repository(self, repository: str) -> bool:
        """Create the repository unless it exists; True when this call created it."""
        with self._lock:
            if repository in self._repositories_made:
                return False
        try:
            self._client.create_repository(registryId=self.account, repositoryName=repository)
            created = True
        except botocore.exceptions.ClientError as error:
            if _code(error) != "RepositoryAlreadyExistsException":
                raise self._fail(error, f"CreateRepository {repository}") from None
            created = False
        except botocore.exceptions.BotoCoreError as error:
            raise self._fail(error, f"CreateRepository {repository}") from None
        with self._lock:
            self._repositories_made.add(repository)
        return created
