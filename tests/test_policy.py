"""The tenant policy (dth_operator.policy): what a TransferTask in a namespace may name. Pure checks here; the
same check through the real API server (admission webhook and reconcile) is in tests/test_operator_policy.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dth.errors import SpecError
from dth.spec.load import parse_task_spec
from dth_operator.policy import DEFAULT_POLICY, PolicyViolationError, TenantPolicy, load_policy

ACCOUNT = "123456789012"
SECRET = f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:"

POLICY = TenantPolicy.model_validate(
    {
        "rules": [
            {
                "name": "team-a",
                "namespaces": ["team-a"],
                "sourceBuckets": ["a-*"],
                "destinationBuckets": ["a-out-*", "shared-drop"],
                "providers": ["Amazon_S3", "S3_Compatible", "Registry"],
                "endpoints": ["*.team-a.example", "registry.example:5000"],
                "secretArnPrefixes": [f"{SECRET}shared/a-"],
                "ssmParameterPaths": ["/team-a"],
            },
            {
                "name": "every-namespace-own-buckets",
                "namespaces": ["team-*"],
                "sourceBuckets": ["{namespace}-raw"],
                "destinationBuckets": ["{namespace}-copy"],
                "providers": ["Amazon_S3"],
            },
        ]
    }
)


def s3(**sides: Any) -> Any:
    spec = {"type": "S3", "source": {"bucket": "a-data"}, "destination": {"bucket": "a-out-1"}}
    for side, values in sides.items():
        spec[side] = {**spec[side], **values}
    return parse_task_spec(spec)


def image(source: dict[str, Any] | None = None, **destination: Any) -> Any:
    return parse_task_spec(
        {
            "type": "Image",
            "source": source or {"type": "Registry", "registry": "registry.example:5000", "images": {"all": True}},
            "destination": {"type": "Registry", "registry": "registry.example:5000", "prefix": "m/", **destination},
        }
    )


def test_a_namespace_may_name_what_its_rules_grant() -> None:
    assert POLICY.violations("team-a", s3()) == []
    assert POLICY.violations("team-a", s3(destination={"bucket": "shared-drop"})) == []
    # The second rule applies to every team-* namespace, with the namespace in its patterns.
    assert POLICY.violations("team-b", s3(source={"bucket": "team-b-raw"}, destination={"bucket": "team-b-copy"})) == []
    assert POLICY.violations("team-a", s3(source={"bucket": "team-a-raw"})) == []


def test_buckets_another_namespace_is_given_are_refused_naming_field_and_rule() -> None:
    (refusal,) = POLICY.violations("team-b", s3(destination={"bucket": "team-b-copy"}))
    assert refusal == (
        "spec.source.bucket 'a-data' is not allowed in namespace team-b by the tenant policy "
        "(not in sourceBuckets of rule every-namespace-own-buckets)"
    )
    (refusal,) = POLICY.violations("team-b", s3(source={"bucket": "team-b-raw"}, destination={"bucket": "team-a-copy"}))
    assert "spec.destination.bucket 'team-a-copy'" in refusal and "destinationBuckets" in refusal
    # A prefix list file is read with the source's credentials: its bucket is a source bucket.
    listed = s3(source={"bucket": "a-data", "prefixListFile": "s3://b-private/list.txt"})
    (refusal,) = POLICY.violations("team-a", listed)
    assert "spec.source.prefixListFile 'b-private'" in refusal and "sourceBuckets of rule team-a" in refusal
    (refusal,) = POLICY.violations("other", s3())[:1]
    assert refusal.endswith("(no rule applies to the namespace)")
    with pytest.raises(PolicyViolationError, match=r"spec\.source\.bucket") as raised:
        POLICY.check("other", s3())
    assert isinstance(raised.value, SpecError)


def test_providers_and_endpoints() -> None:
    compatible = {"type": "S3_Compatible", "endpoint": "https://s3.team-a.example/"}
    assert POLICY.violations("team-a", s3(source=compatible)) == []
    elsewhere = {"type": "S3_Compatible", "endpoint": "https://S3.Elsewhere.example"}
    (refusal,) = POLICY.violations("team-a", s3(source=elsewhere))
    assert "spec.source.endpoint 's3.elsewhere.example'" in refusal and "endpoints" in refusal
    aliyun = {"type": "Aliyun_OSS", "region": "cn-hangzhou"}
    (refusal,) = POLICY.violations("team-a", s3(source=aliyun))
    assert "spec.source.type 'Aliyun_OSS'" in refusal and "providers" in refusal
    # Registries are endpoints too: an ECR registry by its host.
    assert POLICY.violations("team-a", image()) == []
    refused = POLICY.violations(
        "team-a",
        parse_task_spec(
            {
                "type": "Image",
                "source": {"type": "Amazon_ECR", "accountId": ACCOUNT, "region": "eu-west-1", "images": {"all": True}},
                "destination": {"type": "Registry", "registry": "registry.example:5000"},
            }
        ),
    )
    assert any("spec.source.type 'Amazon_ECR'" in r for r in refused)
    assert any(f"spec.source.accountId '{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com'" in r for r in refused)


def test_secret_arns_only_under_the_namespaces_own_prefix_or_a_granted_one() -> None:
    own = {"credentials": {"secretsManagerArn": f"{SECRET}dth/default/team-a/task/keys-AbC123"}}
    assert POLICY.violations("team-a", s3(source=own)) == []
    granted = {"credentials": {"secretsManagerArn": f"{SECRET}shared/a-keys-AbC123"}}
    assert POLICY.violations("team-a", s3(destination=granted)) == []
    # Another namespace's copy (its name is predictable), and a prefix sharing the namespace's name.
    for foreign in (f"{SECRET}dth/default/team-b/task/keys-AbC123", f"{SECRET}dth/default/team-a-b/task/keys-AbC123"):
        (refusal,) = POLICY.violations("team-a", s3(source={"credentials": {"secretsManagerArn": foreign}}))
        assert refusal.startswith(f"spec.source.credentials.secretsManagerArn '{foreign}'")
        assert "own prefix dth/default/team-a/" in refusal and "secretArnPrefixes of rule team-a" in refusal
    # A namespace no rule covers still reaches its own copies (this cluster's: its id is in the name).
    assert (
        DEFAULT_POLICY.violations("x", s3(source={"credentials": {"secretsManagerArn": f"{SECRET}dth/default/x/t/k"}}))
        == []
    )
    other = {"credentials": {"secretsManagerArn": f"{SECRET}dth/default/y/t/k"}}
    assert DEFAULT_POLICY.violations("x", s3(source=other)) != []


def test_ssm_parameters_only_under_granted_paths() -> None:
    def listed(parameter: str) -> Any:
        return image({"type": "Registry", "registry": "registry.example:5000", "images": {"ssmParameter": parameter}})

    for allowed in ("/team-a/images", "team-a/images", f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/team-a/x/y"):
        assert POLICY.violations("team-a", listed(allowed)) == [], allowed
    for refused in ("/team-ab/images", "/other/team-a/images", "/team-b/images"):
        (refusal,) = POLICY.violations("team-a", listed(refused))
        assert "spec.source.images.ssmParameter" in refusal and "ssmParameterPaths of rule team-a" in refusal
    # The default: a namespace's own path only.
    assert DEFAULT_POLICY.violations("team-a", listed("/dth/team-a/images")) == []
    assert DEFAULT_POLICY.violations("team-a", listed("/dth/team-b/images")) != []


def test_default_policy_is_a_single_tenant_install() -> None:
    assert DEFAULT_POLICY.violations("anything", s3(source={"bucket": "any-bucket"})) == []
    assert load_policy(None) is DEFAULT_POLICY


def test_policy_files_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("rules:\n  - name: a\n    namespaces: [a]\n    sourceBuckets: ['*']\n")
    assert load_policy(path).rules[0].source_buckets == ("*",)
    path.write_text("rules:\n  - name: a\n    namespaces: [a]\n    buckets: ['*']\n")
    with pytest.raises(SpecError, match=r"rules\.0\.buckets: Extra inputs are not permitted"):
        load_policy(path)
    path.write_text("rules:\n  - name: a\n    namespaces: [a]\n    providers: [Dropbox]\n")
    with pytest.raises(SpecError, match="unknown provider Dropbox"):
        load_policy(path)
    path.write_text("rules:\n  - name: a\n    namespaces: [a]\n    ssmParameterPaths: [team-a]\n")
    with pytest.raises(SpecError, match="start with '/'"):
        load_policy(path)
    with pytest.raises(SpecError, match="No such file"):
        load_policy(tmp_path / "missing.yaml")


def test_kms_keys_only_when_granted() -> None:
    key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    encrypted = s3(destination={"sse": "AWS_KMS", "kmsKeyId": key})
    (refusal,) = POLICY.violations("team-a", encrypted)
    assert f"spec.destination.kmsKeyId '{key}'" in refusal and "kmsKeys of rule team-a" in refusal
    granting = TenantPolicy.model_validate(
        {
            "rules": [
                {
                    "name": "keys",
                    "namespaces": ["team-a"],
                    "sourceBuckets": ["*"],
                    "destinationBuckets": ["*"],
                    "providers": ["*"],
                    "kmsKeys": ["arn:aws:kms:us-east-1:123456789012:key/*"],
                }
            ]
        }
    )
    assert granting.violations("team-a", encrypted) == []
    assert DEFAULT_POLICY.violations("team-a", encrypted) == []
