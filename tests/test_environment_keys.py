"""Static keys read from the environment without botocore are the keys botocore's EnvProvider reads; the cases
it would refresh (an expiry) or refuse (a key without its secret) are left to botocore's chain. A narrow unit
test: `dth s3 sync` on these keys runs against radosgw in tests/test_startup_imports.py."""

from __future__ import annotations

import pytest
from botocore.credentials import EnvProvider

from dth.s3.environment_keys import static_keys_from_environment

PAIR = {"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "secret"}


@pytest.mark.parametrize(
    "environ",
    [
        PAIR,
        {**PAIR, "AWS_SESSION_TOKEN": "token"},
        {**PAIR, "AWS_SECURITY_TOKEN": "old-token"},
        {**PAIR, "AWS_SESSION_TOKEN": "", "AWS_SECURITY_TOKEN": "old-token"},
        {**PAIR, "AWS_SESSION_TOKEN": "new", "AWS_SECURITY_TOKEN": "old"},
        {**PAIR, "AWS_PROFILE": "elsewhere"},
    ],
    ids=["pair", "session-token", "security-token", "empty-session-token", "both-tokens", "profile-variable"],
)
def test_static_keys_are_the_keys_botocore_reads(environ: dict[str, str]) -> None:
    theirs = EnvProvider(environ=environ).load().get_frozen_credentials()
    ours = static_keys_from_environment(environ)
    assert ours is not None
    keys = ours.get_frozen_credentials()
    assert (keys.access_key, keys.secret_key, keys.token or None) == (
        theirs.access_key,
        theirs.secret_key,
        theirs.token or None,
    )
    assert "secret" not in repr(ours) and "secret" not in repr(keys)


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"AWS_ACCESS_KEY_ID": "AKID"},
        {"AWS_SECRET_ACCESS_KEY": "secret"},
        {**PAIR, "AWS_ACCESS_KEY_ID": ""},
        {**PAIR, "AWS_CREDENTIAL_EXPIRATION": "2030-01-01T00:00:00Z"},
    ],
    ids=["none", "no-secret", "no-key", "empty-key", "expiring"],
)
def test_other_environments_are_left_to_botocore(environ: dict[str, str]) -> None:
    assert static_keys_from_environment(environ) is None
