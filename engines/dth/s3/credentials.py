"""Turning a spec's credential reference into a botocore session (botocore's provider chain: the environment,
profiles, SSO, instance and container roles, refreshed when they expire). Not boto3's: the S3 data path needs
only botocore, and importing boto3 (with s3transfer) was a third of `dth s3 sync`'s start-up. Secret values
never leave this module except inside the session, and never appear in a repr, a log line or an error."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import botocore.credentials
import botocore.exceptions
import botocore.session

from dth.errors import AccessError
from dth.secret_sources import kubernetes_secret_fields, secrets_manager_fields
from dth.spec.model import Credentials

ACCESS_KEY_FIELD = "access_key_id"
SECRET_KEY_FIELD = "secret_access_key"


@dataclass(frozen=True)
class KeyPair:
    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


def _key_pair_from_mapping(values: dict[str, str], where: str) -> KeyPair:
    missing = [name for name in (ACCESS_KEY_FIELD, SECRET_KEY_FIELD) if not values.get(name)]
    if missing:
        raise AccessError(f"{where} has no {' or '.join(missing)}")
    return KeyPair(values[ACCESS_KEY_FIELD], values[SECRET_KEY_FIELD], values.get("session_token"))


def key_pair_from_secrets_manager(arn: str, session: Any = None) -> KeyPair:
    values, where = secrets_manager_fields(arn, session)
    return _key_pair_from_mapping(values, where)


def key_pair_from_kubernetes(name: str, namespace: str) -> KeyPair:
    data, where = kubernetes_secret_fields(name, namespace)
    return _key_pair_from_mapping(data, where)


# Keys from a secret are read again this often, so that a rotated secret takes effect on its own.
SECRET_REFRESH = timedelta(minutes=5)


class SecretCredentials(botocore.credentials.RefreshableCredentials):  # type: ignore[misc]
    """Keys read from a secret: refreshed every few minutes, or at once after the service rejected them."""

    # botocore's defaults (refresh 15 minutes before expiry) would re-read the secret on every request.
    _advisory_refresh_timeout = 60
    _mandatory_refresh_timeout = 30

    def expire_now(self) -> None:
        self._expiry_time = datetime.now(UTC) - timedelta(seconds=1)


class _SecretProvider(botocore.credentials.CredentialProvider):  # type: ignore[misc]
    METHOD = "dth-secret"

    def __init__(self, credentials: SecretCredentials) -> None:
        super().__init__()
        self._credentials = credentials

    def load(self) -> SecretCredentials:
        return self._credentials


def refreshing_session(fetch: Callable[[], KeyPair]) -> tuple[botocore.session.Session, SecretCredentials]:
    """A session whose keys come from `fetch`, called again when they are due or rejected."""

    def metadata() -> dict[str, Any]:
        pair = fetch()
        return {
            "access_key": pair.access_key_id,
            "secret_key": pair.secret_access_key,
            "token": pair.session_token,
            "expiry_time": (datetime.now(UTC) + SECRET_REFRESH).isoformat(),
        }

    credentials = SecretCredentials.create_from_metadata(metadata(), refresh_using=metadata, method="dth-secret")
    core = botocore.session.get_session()
    core.get_component("credential_provider").insert_before("env", _SecretProvider(credentials))
    return core, credentials


def session_for(
    credentials: Credentials | None, namespace: str = "default"
) -> tuple[botocore.session.Session, SecretCredentials | None]:
    """A botocore session holding the credentials the spec names (ambient ones when it names none), and
    the refreshable credentials where they come from a secret."""
    if credentials is None:
        return botocore.session.get_session(), None
    if credentials.profile:
        try:
            session = botocore.session.get_session()
            session.set_config_variable("profile", credentials.profile)
            session.get_scoped_config()  # raises ProfileNotFound now, as boto3.Session(profile_name=...) does
            return session, None
        except botocore.exceptions.ProfileNotFound:
            raise AccessError(f"AWS profile {credentials.profile!r} is not configured") from None
    if credentials.secrets_manager_arn:
        arn = credentials.secrets_manager_arn
        return refreshing_session(lambda: key_pair_from_secrets_manager(arn))
    name = credentials.secret_name
    assert name is not None  # the model guarantees exactly one source
    return refreshing_session(lambda: key_pair_from_kubernetes(name, namespace))


def session_from_key_pair(pair: KeyPair) -> botocore.session.Session:
    session = botocore.session.get_session()
    session.set_credentials(pair.access_key_id, pair.secret_access_key, pair.session_token)
    return session


def access_key_of(session: botocore.session.Session) -> str | None:
    """The public half of the key pair, to tell whether two sides share an identity."""
    credentials = session.get_credentials()
    return credentials.access_key if credentials else None
