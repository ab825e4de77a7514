"""One side of a transfer (source or destination): a client bound to a bucket and a prefix.

botocore's session, client and config are imported only where a side needs them: a side on static keys from
the environment and a path-style endpoint runs on the lean client alone (dth.s3.lean), and builds botocore's
client only on first need.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import botocore.exceptions

from dth.errors import AccessError
from dth.s3.environment_keys import static_keys_from_environment
from dth.s3.lean import LeanS3Client
from dth.s3.lean.client import PathStyleEndpoint
from dth.s3.lean.http import HttpSettings
from dth.spec.model import S3Location, S3Source

if TYPE_CHECKING:
    import botocore.config
    import botocore.session

    from dth.s3.credentials import SecretCredentials

DEFAULT_REGION = "us-east-1"
# Seconds, for botocore's client and the lean client alike.
CONNECT_TIMEOUT = 10
READ_TIMEOUT = 60

# Error codes that mean the key pair itself is wrong, as S3 and its look-alikes spell them.
CREDENTIAL_ERRORS = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "InvalidClientTokenId"}
)


def error_code(error: botocore.exceptions.ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", "Unknown"))


@dataclass
class S3Side:
    role: str  # "source" or "destination", for messages
    location: S3Location
    client: Any  # botocore's S3 client is generated at run time and has no static type
    endpoint_url: str
    access_key: str | None
    # Keys read from a secret, which can be read again when the service rejects them.
    secret_credentials: SecretCredentials | None = None

    @property
    def bucket(self) -> str:
        return self.location.bucket

    @property
    def prefix(self) -> str:
        return self.location.prefix

    def key_for(self, relative_key: str) -> str:
        return self.location.prefix + relative_key

    @property
    def request_payer(self) -> dict[str, str]:
        """Extra arguments for requests that read the source in a requester-pays bucket."""
        if isinstance(self.location, S3Source) and self.location.requester_pays:
            return {"RequestPayer": "requester"}
        return {}

    def describe(self) -> str:
        return f"{self.role} {self.location.describe()}"

    def explain(self, error: Exception, action: str) -> str:
        """A one-line explanation of why `action` failed, naming the side; never includes secrets."""
        if isinstance(error, botocore.exceptions.ClientError):
            code = error_code(error)
            if code in {"NoSuchBucket"}:
                return f"{self.role} bucket {self.bucket!r} does not exist at {self.endpoint_url}"
            if code in CREDENTIAL_ERRORS:
                return f"{self.role} credentials were rejected by {self.endpoint_url} ({code}) while {action}"
            if code in {"AccessDenied", "403", "Forbidden", "AllAccessDisabled"}:
                return f"access denied to {self.role} bucket {self.bucket!r} at {self.endpoint_url} while {action}"
            message = error.response.get("Error", {}).get("Message", "")
            return f"{self.role} {action} failed: {code}{': ' + message if message else ''}"
        if isinstance(error, botocore.exceptions.EndpointConnectionError | botocore.exceptions.ConnectTimeoutError):
            return f"cannot reach the {self.role} endpoint {self.endpoint_url}"
        if isinstance(error, botocore.exceptions.NoCredentialsError):
            return f"no credentials for the {self.role}: configure a profile, the environment or the spec"
        return f"{self.role} {action} failed: {type(error).__name__}: {error}"


def connect(
    role: str,
    location: S3Location,
    *,
    namespace: str = "default",
    pool_size: int = 64,
    max_attempts: int = 3,
    session: Any = None,
) -> S3Side:
    """`session`: a botocore session, or a boto3 one (its botocore session is used); by default the one the
    location's credentials name."""
    if session is None and lean_client_enabled():
        lean_side = _lean_side(role, location, pool_size, max_attempts)
        if lean_side is not None:
            return lean_side
    import botocore.session

    from dth.s3.credentials import session_for

    secret_credentials = None
    if session is None:
        session, secret_credentials = session_for(location.credentials, namespace)
    elif not isinstance(session, botocore.session.Session):
        session = session._session  # a boto3.Session: its botocore session (public attribute, no accessor)
    config = _client_config(location, pool_size, max_attempts)
    endpoint_url = location.endpoint_url()
    client = _s3_client(
        session, region_name=location.region or DEFAULT_REGION, endpoint_url=endpoint_url, config=config
    )
    if lean_client_enabled():
        client = _lean_client(client, session, config, endpoint_url, max_attempts)
    return S3Side(
        role=role,
        location=location,
        client=client,
        endpoint_url=endpoint_url or client.meta.endpoint_url,
        access_key=_access_key_of(session),
        secret_credentials=secret_credentials,
    )


def _client_config(location: S3Location, pool_size: int, max_attempts: int) -> botocore.config.Config:
    import botocore.config

    return botocore.config.Config(
        max_pool_connections=pool_size,
        # Throttling, 5xx and connection errors are retried with exponential backoff and jitter.
        retries={"mode": "standard", "max_attempts": max_attempts},
        s3={"addressing_style": location.addressing_style()},
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        tcp_keepalive=True,
        # We send Content-MD5 ourselves; trailing checksums confuse S3 look-alikes (Ceph, OSS, COS).
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )


def _access_key_of(session: botocore.session.Session) -> str | None:
    from dth.s3.credentials import access_key_of

    return access_key_of(session)


def _lean_side(role: str, location: S3Location, pool_size: int, max_attempts: int) -> S3Side | None:
    """A side on the lean client without botocore's session, where nothing needs it up front: static keys
    from the environment (and no profile or secret in the spec), a path-style endpoint URL, and no trust store
    to look up (plain http, or AWS_CA_BUNDLE given). None where botocore must take part."""
    endpoint_url = location.endpoint_url()
    if location.credentials is not None or endpoint_url is None or location.addressing_style() != "path":
        return None
    scheme = urlsplit(endpoint_url).scheme
    ca_bundle = os.environ.get("AWS_CA_BUNDLE")
    if scheme not in ("http", "https") or (scheme == "https" and not ca_bundle):
        return None  # botocore's default bundle (certifi) or a profile's ca_bundle: its session knows
    credentials = static_keys_from_environment()
    if credentials is None:
        return None
    region = location.region or DEFAULT_REGION

    def regional_client(client_region: str) -> Any:  # errors, redirects, calls the lean client does not serve
        import botocore.session

        return _s3_client(
            botocore.session.get_session(),
            region_name=client_region,
            endpoint_url=endpoint_url,
            config=_client_config(location, pool_size, max_attempts),
        )

    client = LeanS3Client(
        lambda: regional_client(region),
        credentials,
        max_attempts=max_attempts,
        http_settings=HttpSettings(
            connect_timeout=float(CONNECT_TIMEOUT), read_timeout=float(READ_TIMEOUT), verify=ca_bundle or True
        ),
        regional_client=regional_client,
        path_style=PathStyleEndpoint(endpoint_url, region),
    )
    return S3Side(
        role=role, location=location, client=client, endpoint_url=endpoint_url, access_key=credentials.access_key
    )


def connect_pair(
    source: S3Location, destination: S3Location, *, namespace: str = "default", pool_size: int = 64
) -> tuple[S3Side, S3Side]:
    """Both sides of a transfer. Sides on the same service with the same credentials share one client (one
    session, one service model, one connection pool twice the size): creating a client was a fifth of a no-op
    re-sync's CPU, and the two would be alike in every way."""
    if not same_connection(source, destination):
        return (
            connect("source", source, namespace=namespace, pool_size=pool_size),
            connect("destination", destination, namespace=namespace, pool_size=pool_size),
        )
    shared = connect("source", source, namespace=namespace, pool_size=2 * pool_size)
    return shared, dataclasses.replace(shared, role="destination", location=destination)


def same_connection(first: S3Location, second: S3Location) -> bool:
    """Whether one client can serve both locations: everything `connect` builds a client from is equal."""
    return (
        first.type == second.type
        and first.region == second.region
        and first.endpoint_url() == second.endpoint_url()
        and first.addressing_style() == second.addressing_style()
        and first.credentials == second.credentials
    )


CLIENT_SWITCH = "DTH_S3_CLIENT"


def lean_client_enabled() -> bool:
    """The data path runs on the lean client (dth.s3.lean) unless DTH_S3_CLIENT=boto3."""
    choice = os.environ.get(CLIENT_SWITCH, "lean").strip().lower() or "lean"
    if choice not in ("lean", "boto3"):
        raise ValueError(f"{CLIENT_SWITCH} must be 'lean' or 'boto3', not {choice!r}")
    return choice == "lean"


def _lean_client(
    client: Any,
    session: botocore.session.Session,
    config: botocore.config.Config,
    endpoint_url: str | None,
    max_attempts: int,
) -> LeanS3Client:
    """The hot operations on the lean client, everything else on `client`; the same credentials, timeouts,
    trust store and retry policy."""
    import botocore.httpsession

    ca_bundle = session.get_config_variable("ca_bundle")  # AWS_CA_BUNDLE or the profile's ca_bundle
    settings = HttpSettings(
        connect_timeout=float(config.connect_timeout),
        read_timeout=float(config.read_timeout),
        verify=ca_bundle or botocore.httpsession.get_cert_path(True),
    )

    def regional_client(region: str) -> Any:  # for buckets that answer from another region
        return _s3_client(session, region_name=region, endpoint_url=endpoint_url, config=config)

    return LeanS3Client(
        client,
        session.get_credentials(),
        max_attempts=max_attempts,
        http_settings=settings,
        regional_client=regional_client,
    )


def _s3_client(botocore_session: botocore.session.Session, **arguments: Any) -> Any:
    """An S3 client whose responses keep timestamps as the text the service sent. Parsing LastModified into a
    datetime was half of a listing's CPU time, and the engine never reads it."""
    import botocore.parsers

    _share_loader(botocore_session)
    botocore_session.get_credentials()  # resolved before the swap: a credential provider's own clients keep the default
    default_factory = botocore_session.get_component("response_parser_factory")
    text_timestamps = botocore.parsers.ResponseParserFactory()
    text_timestamps.set_parser_defaults(timestamp_parser=str)
    botocore_session.register_component("response_parser_factory", text_timestamps)
    try:
        client = botocore_session.create_client("s3", **arguments)
    finally:
        botocore_session.register_component("response_parser_factory", default_factory)
    _resolve_endpoints_per_bucket(client)
    return client


_shared_loader: Any = None
_shared_loader_lock = threading.Lock()


def _share_loader(botocore_session: Any) -> None:
    """Each side has a session of its own; one data loader for all of them reads S3's service model and
    endpoint rules once per process instead of once per side (a tenth of a small sync's start-up)."""
    global _shared_loader
    with _shared_loader_lock:
        if _shared_loader is None:
            _shared_loader = botocore_session.get_component("data_loader")
        else:
            botocore_session.register_component("data_loader", _shared_loader)


# Endpoint parameters S3's endpoint rules declare but never read (botocore's ruleset for S3 has no reference to
# them). botocore caches resolved endpoints by all parameters, so with the object key among them every request
# evaluated the whole ruleset again: a quarter of a CopyObject's CPU.
_UNREAD_ENDPOINT_PARAMETERS = ("Key", "Prefix", "CopySource")


def _resolve_endpoints_per_bucket(client: Any) -> None:
    resolver = getattr(client, "_ruleset_resolver", None)  # botocore internals: without them, nothing changes
    definitions = getattr(resolver, "_param_definitions", None)
    if isinstance(definitions, dict):
        for name in _UNREAD_ENDPOINT_PARAMETERS:
            definitions.pop(name, None)


def check_bucket(side: S3Side) -> None:
    """Fail early, with a clear message, when the bucket is missing, unreachable or forbidden."""
    try:
        side.client.list_objects_v2(Bucket=side.bucket, Prefix=side.prefix, MaxKeys=1, **side.request_payer)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as error:
        raise AccessError(side.explain(error, "listing the bucket")) from None


def shares_service(source: S3Side, destination: S3Side) -> bool:
    """Whether the destination can copy straight from the source, server side."""
    return source.endpoint_url == destination.endpoint_url and source.access_key == destination.access_key
