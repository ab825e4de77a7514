"""The plugin templates, read as files: linters, the agreement with the model, least privilege and encryption
as written, and the mapping from a TransferTask to stack parameters. (Deploying them is test_cfn_moto.py.)"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

from dth.errors import SpecError
from dth.spec.cfn import (
    DERIVED_PARAMETERS,
    EXCLUDED_FIELDS,
    IMAGE_PLUGIN_PARAMETERS,
    S3_PLUGIN_PARAMETERS,
    TEMPLATE_BODY_LIMIT,
    TEMPLATE_NAMES,
    PluginSettings,
    TaskSize,
    eventbridge_schedule,
    image_stack_parameters,
    image_template_problems,
    load_template,
    parameter_keys,
    queue_max_receive_count,
    queue_visibility_timeout,
    render_spec_parameters,
    s3_stack_parameters,
    s3_template_problems,
    spec_parameter_leaves,
    template_body_problem,
    template_dir,
    template_path,
)
from dth.spec.environment import spec_from_environment, spec_leaves
from dth.spec.image import ImageTaskSpec
from dth.spec.load import parse_task_spec
from dth.spec.model import GiB, MiB, S3Options, S3TaskSpec

TEMPLATES = [template_path("s3-plugin.yaml"), template_path("image-plugin.yaml")]
SETTINGS = PluginSettings(image="registry.example/dth:1", subnets=["subnet-1", "subnet-2"], security_groups=["sg-1"])
SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:dth/src-AbCdEf"


def s3_spec(**changes: Any) -> S3TaskSpec:
    raw: dict[str, Any] = {
        "type": "S3",
        "source": {"bucket": "src-bucket", "prefix": "in/", "credentials": {"secretsManagerArn": SECRET}},
        "destination": {"bucket": "dst-bucket", "prefix": "out/"},
    }
    raw.update(changes)
    spec = parse_task_spec(raw)
    assert isinstance(spec, S3TaskSpec)
    return spec


def statements(template: dict[str, Any], logical_id: str) -> list[dict[str, Any]]:
    """A role's statements: inline ones and those of the policies attached to it."""
    resources = template["Resources"]
    properties = resources[logical_id]["Properties"]
    documents = [policy["PolicyDocument"] for policy in properties.get("Policies", [])]
    documents += [
        resource["Properties"]["PolicyDocument"]
        for resource in resources.values()
        if resource["Type"] == "AWS::IAM::Policy" and {"Ref": logical_id} in resource["Properties"]["Roles"]
    ]
    return [statement for document in documents for statement in document["Statement"]]


def conditions_of_statements(template: dict[str, Any], role: str) -> dict[str, str]:
    """{statement Sid: the condition of the policy that holds it} for a role's conditional policies."""
    return {
        statement["Sid"]: resource["Condition"]
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::IAM::Policy"
        and {"Ref": role} in resource["Properties"]["Roles"]
        and "Condition" in resource
        for statement in resource["Properties"]["PolicyDocument"]["Statement"]
    }


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# --- linters ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda path: path.name)
def test_cfn_lint_reports_nothing(path: Path) -> None:
    from cfnlint.api import ManualArgs, lint_file

    matches = lint_file(path, config=ManualArgs())  # errors, warnings and informational findings alike
    assert [str(match) for match in matches] == []


def test_cfn_lint_would_report_a_broken_template(tmp_path: Path) -> None:
    from cfnlint.api import ManualArgs, lint_file

    broken = tmp_path / "broken.yaml"
    broken.write_text(
        template_path("s3-plugin.yaml").read_text().replace("Type: AWS::SQS::Queue", "Type: AWS::SQS::Queu", 1)
    )
    assert any("AWS::SQS::Queu" in str(match) for match in lint_file(broken, config=ManualArgs()))


@pytest.mark.parametrize("path", sorted(template_dir().glob("*.yaml")), ids=lambda path: path.name)
def test_every_template_fits_in_a_create_stack_template_body(path: Path) -> None:
    """The operator sends templates inline (TemplateBody), which CloudFormation takes up to 51,200 bytes."""
    size = len(path.read_text(encoding="utf-8").encode())
    print(f"{path.name}: {size:,} bytes, {TEMPLATE_BODY_LIMIT - size:,} to spare")  # pytest -rP shows the margin
    assert template_body_problem(path) is None


def test_the_size_check_names_a_template_over_the_limit_and_by_how_much(tmp_path: Path) -> None:
    grown = tmp_path / "grown.yaml"
    text = template_path("s3-plugin.yaml").read_text(encoding="utf-8")
    grown.write_text(text + "# " + "x" * (TEMPLATE_BODY_LIMIT - len(text.encode())) + "\n", encoding="utf-8")
    over = len(grown.read_bytes()) - TEMPLATE_BODY_LIMIT
    assert over > 0
    assert template_body_problem(grown) == (
        f"grown.yaml is {TEMPLATE_BODY_LIMIT + over:,} bytes, {over:,} over CloudFormation's "
        f"{TEMPLATE_BODY_LIMIT:,}-byte TemplateBody limit: shorten it, or upload it to S3 and pass TemplateURL"
    )


def checkov_command() -> list[str] | None:
    """checkov lives in a virtualenv of its own (.ci/checkov.sh): it pins a boto3 older than the project's."""
    configured = os.environ.get("DTH_CHECKOV")
    candidates = [configured] if configured else []
    candidates += [
        str(Path(os.environ.get("DTH_CACHE") or Path.home() / ".cache" / "dth") / "checkov-venv" / "bin" / "checkov"),
        shutil.which("checkov") or "",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return [candidate]
    return None


def test_checkov_passes_every_check_and_every_skip_says_why() -> None:
    command = checkov_command()
    if command is None:
        message = "checkov is not installed (bash .ci/checkov.sh)"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI is set: it is required)", pytrace=False)
        pytest.skip(message)
    files = [argument for path in [*TEMPLATES, OPERATOR_IAM] for argument in ("-f", str(path))]
    result = subprocess.run(
        [*command, *files, "--framework", "cloudformation", "--output", "json", "--skip-download"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [
        f"{check['check_id']} {check['resource']} ({check['file_path']}): {check['check_name']}"
        for report in reports
        for check in report["results"]["failed_checks"]
    ]
    assert not failed, "\n".join(failed)
    # The IAM and encryption checks did run, and passed.
    passed = {check["check_id"] for report in reports for check in report["results"]["passed_checks"]}
    iam = {"CKV_AWS_107", "CKV_AWS_108", "CKV_AWS_109", "CKV_AWS_110", "CKV_AWS_111", "CKV_AWS_60", "CKV_AWS_61"}
    encryption = {"CKV_AWS_26", "CKV_AWS_158", "CKV_AWS_7", "CKV_AWS_28"}
    assert iam | encryption <= passed, sorted((iam | encryption) - passed)
    for report in reports:
        for check in report["results"]["skipped_checks"]:
            comment = (check.get("check_result") or {}).get("suppress_comment", "")
            assert len(comment) > 40, f"{check['check_id']} on {check['resource']} is skipped without a reason"


# --- the S3 template and the model agree -------------------------------------------------------------


def test_s3_template_parameters_are_the_model_fields_typed_as_the_model_and_passed_to_every_container() -> None:
    assert s3_template_problems(load_template("s3-plugin.yaml")) == []


def test_every_model_field_is_either_a_parameter_or_excluded_for_a_stated_reason() -> None:
    leaves = {leaf.dotted for leaf in spec_leaves()}
    parameters = {leaf.dotted for leaf in spec_parameter_leaves()}
    assert set(EXCLUDED_FIELDS) <= leaves  # no stale exclusion
    assert parameters | set(EXCLUDED_FIELDS) == leaves
    assert all(len(reason) > 20 for reason in EXCLUDED_FIELDS.values())
    # Credentials reach the stack only as Secrets Manager ARNs.
    credential_parameters = {leaf.dotted for leaf in spec_parameter_leaves() if "credentials" in leaf.dotted}
    assert credential_parameters == {
        "source.credentials.secretsManagerArn",
        "destination.credentials.secretsManagerArn",
    }


def test_the_consistency_check_catches_a_missing_a_mistyped_an_unknown_and_an_unpassed_parameter() -> None:
    template = load_template("s3-plugin.yaml")

    missing = copy.deepcopy(template)
    del missing["Parameters"]["OptionsChunkSize"]
    assert any("OptionsChunkSize: missing" in p for p in s3_template_problems(missing))

    mistyped = copy.deepcopy(template)
    mistyped["Parameters"]["OptionsMaxRetries"]["MaxValue"] = 1000
    assert any("OptionsMaxRetries: declared" in p for p in s3_template_problems(mistyped))

    unknown = copy.deepcopy(template)
    unknown["Parameters"]["OptionsTurbo"] = {"Type": "String"}
    assert any("OptionsTurbo: no field" in p for p in s3_template_problems(unknown))

    unpassed = copy.deepcopy(template)
    environment = unpassed["Resources"]["WorkerTaskDefinition"]["Properties"]["ContainerDefinitions"][0]["Environment"]
    environment[:] = [item for item in environment if item["Name"] != "DTH_SPEC_DESTINATION_SSE"]
    assert s3_template_problems(unpassed) == [
        "WorkerTaskDefinition.worker: DTH_SPEC_DESTINATION_SSE is None, should be {'Ref': 'DestinationSse'}"
    ]


def test_a_field_added_to_the_model_fails_the_check_until_the_template_has_it() -> None:
    class WiderOptions(S3Options):
        bandwidth_limit: int = Field(0, ge=0, description="bytes per second, 0 for none")

    class WiderSpec(S3TaskSpec):
        options: WiderOptions = Field(default_factory=WiderOptions)

    problems = s3_template_problems(load_template("s3-plugin.yaml"), WiderSpec)
    assert any("OptionsBandwidthLimit: missing" in p for p in problems)
    assert any("DTH_SPEC_OPTIONS_BANDWIDTH_LIMIT is None" in p for p in problems)


def test_the_template_parameters_section_is_what_the_generator_prints() -> None:
    # Every generated declaration appears in the template, so `python -m dth.spec.cfn` is the way to edit them.
    text = template_path("s3-plugin.yaml").read_text()
    generated = "".join(f"  {line}\n" if line else "\n" for line in render_spec_parameters().splitlines())
    assert generated in text


def test_stack_parameters_set_every_template_parameter_and_nothing_else() -> None:
    for name, parameters in (
        ("s3-plugin.yaml", s3_stack_parameters("ns-task", s3_spec(), SETTINGS)),
        (
            "image-plugin.yaml",
            image_stack_parameters(
                "ns-task",
                ImageTaskSpec.model_validate(
                    {
                        "type": "Image",
                        "source": {"type": "Registry", "registry": "quay.io", "images": {"names": ["a/b:1"]}},
                        "destination": {"type": "Amazon_ECR", "accountId": "123456789012", "region": "us-east-1"},
                    }
                ),
                SETTINGS,
            ),
        ),
    ):
        declared = load_template(name)["Parameters"]
        assert set(parameter_keys(parameters)) == set(declared), name
        assert len(parameters) == len(declared)


def test_image_template_matches_its_parameter_function() -> None:
    template = load_template("image-plugin.yaml")
    assert image_template_problems(template) == []
    assert set(template["Parameters"]) == set(IMAGE_PLUGIN_PARAMETERS)
    broken = copy.deepcopy(template)
    broken["Parameters"]["Extra"] = {"Type": "String"}
    assert image_template_problems(broken) == ["parameter Extra: not set by image_stack_parameters"]


# --- least privilege and encryption, as written ------------------------------------------------------


def test_s3_task_role_names_only_the_task_buckets_queue_table_secrets_and_key() -> None:
    template = load_template("s3-plugin.yaml")
    task = statements(template, "TaskRole")
    services = {action.split(":")[0] for statement in task for action in as_list(statement["Action"])}
    assert services == {"s3", "sqs", "dynamodb", "secretsmanager", "kms"}
    for statement in task:
        assert statement["Effect"] == "Allow"
        for resource in as_list(statement["Resource"]):
            assert resource != "*", statement["Sid"]
    by_sid = {statement["Sid"]: statement for statement in task}
    assert "${SourceBucket}/${SourcePrefix}*" in by_sid["ReadSource"]["Resource"]["Fn::Sub"]
    assert set(by_sid["ReadSource"]["Action"]) == {"s3:GetObject", "s3:GetObjectTagging"}
    assert "${DestinationBucket}/${DestinationPrefix}*" in by_sid["WriteDestination"]["Resource"]["Fn::Sub"]
    assert "s3:DeleteObject" not in by_sid["WriteDestination"]["Action"]
    assert by_sid["SourceCredentials"]["Resource"][0] == {"Ref": "SourceCredentialsSecretsManagerArn"}
    assert by_sid["DestinationKey"]["Resource"] == {"Ref": "DestinationKmsKeyId"}
    # Deleting, tagging and ACLs only when the task does them.
    conditional = conditions_of_statements(template, "TaskRole")
    assert conditional == {
        "ReadPrefixList": "HasPrefixListFile",
        "TagDestination": "CopiesTags",
        "AclOnDestination": "SetsAcl",
        "DeleteFromDestination": "MayDelete",
        "SourceCredentials": "HasSourceSecret",
        "DestinationCredentials": "HasDestinationSecret",
        "DestinationKey": "HasKmsKey",
    }
    assert template["Conditions"]["MayDelete"] == {
        "Fn::Or": [
            {"Fn::Equals": [{"Ref": "OptionsDeleteExtraneous"}, "true"]},
            {"Fn::Equals": [{"Ref": "Events"}, "CreateAndDelete"]},
        ]
    }


@pytest.mark.parametrize(
    "name, task_definition", [("s3-plugin.yaml", "FinderTaskDefinition"), ("image-plugin.yaml", "SyncTaskDefinition")]
)
def test_events_role_may_only_run_the_scheduled_task_and_pass_its_roles(name: str, task_definition: str) -> None:
    template = load_template(name)
    events = statements(template, "EventsRole")
    assert [(s["Action"], s["Resource"]) for s in events] == [
        ("ecs:RunTask", {"Ref": task_definition}),
        ("iam:PassRole", [{"Fn::GetAtt": ["ExecutionRole", "Arn"]}, {"Fn::GetAtt": ["TaskRole", "Arn"]}]),
    ]
    assert events[1]["Condition"] == {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}
    # The only "*" in the execution role is ECR's login, which has no resource.
    wildcard = [s["Action"] for s in statements(template, "ExecutionRole") if s["Resource"] == "*"]
    assert wildcard == ["ecr:GetAuthorizationToken"]


def test_image_task_role_pushes_only_under_the_destination_prefix() -> None:
    template = load_template("image-plugin.yaml")
    by_sid = {s["Sid"]: s for s in statements(template, "TaskRole")}
    push = by_sid["PushUnderDestinationPrefix"]
    assert "ecr:CreateRepository" in push["Action"] and "ecr:PutImage" in push["Action"]
    assert push["Resource"]["Fn::Sub"].endswith(":repository/${DestinationPrefix}*")
    pull = by_sid["PullFromSource"]
    assert not any(action in pull["Action"] for action in ("ecr:PutImage", "ecr:CreateRepository"))
    assert by_sid["EcrLogin"]["Resource"] == "*"  # GetAuthorizationToken has no resource-level permissions
    assert all(s["Resource"] != "*" for sid, s in by_sid.items() if sid != "EcrLogin")


def test_s3_template_encrypts_and_protects_what_moto_cannot_show() -> None:
    # moto ignores point-in-time recovery, table SSE and queue policies: they are checked here, as written.
    resources = load_template("s3-plugin.yaml")["Resources"]
    table = resources["StatusTable"]["Properties"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["SSESpecification"]["SSEEnabled"] is True
    assert resources["Queue"]["Properties"]["SqsManagedSseEnabled"] is True
    assert resources["DeadLetterQueue"]["Properties"]["SqsManagedSseEnabled"] is True
    assert resources["AlarmTopic"]["Properties"]["KmsMasterKeyId"] == {"Ref": "Key"}
    assert resources["LogGroup"]["Properties"]["KmsKeyId"] == {"Fn::GetAtt": ["Key", "Arn"]}
    alarm = resources["DeadLetterAlarm"]["Properties"]
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["DeadLetterQueue", "QueueName"]}}]
    assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]
    policy = resources["QueuePolicy"]
    assert policy["Condition"] == "HasEvents"
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Condition"]["ArnLike"]["aws:SourceArn"] == {
        "Fn::Sub": "arn:${AWS::Partition}:s3:::${SourceBucket}"
    }
    # Scale to zero on an empty queue; never above MaxWorkers; nothing at all when suspended.
    target = resources["WorkerScalableTarget"]["Properties"]
    assert target["MinCapacity"] == 0
    assert target["MaxCapacity"] == {"Fn::If": ["IsSuspended", 0, {"Ref": "MaxWorkers"}]}
    assert resources["QueueEmptyAlarm"]["Properties"]["AlarmActions"] == [{"Ref": "ScaleInPolicy"}]
    steps = resources["ScaleInPolicy"]["Properties"]["StepScalingPolicyConfiguration"]
    assert (steps["AdjustmentType"], steps["StepAdjustments"]) == (
        "ExactCapacity",
        [{"MetricIntervalUpperBound": 0, "ScalingAdjustment": 0}],
    )


# --- the mapping --------------------------------------------------------------------------------------


def test_s3_stack_parameters_carry_the_spec_and_what_is_derived_from_it() -> None:
    spec = s3_spec(
        options={"maxRetries": 2, "chunkSize": "64MiB", "multipartThreshold": "64MiB", "exclude": ["a,b", "*.tmp"]},
        schedule="30 1 * * *",
    )
    values = parameter_keys(s3_stack_parameters("ns-task", spec, SETTINGS))
    assert values["SourceBucket"] == "src-bucket"
    assert values["SourceCredentialsSecretsManagerArn"] == SECRET
    assert values["OptionsChunkSize"] == str(64 * MiB)
    assert json.loads(values["OptionsExclude"]) == ["a,b", "*.tmp"]  # a comma inside a pattern survives
    assert values["QueueMaxReceiveCount"] == "3"
    assert values["QueueVisibilityTimeout"] == "300"
    assert values["ScheduleExpression"] == "cron(30 1 * * ? *)"
    assert values["Subnets"] == "subnet-1,subnet-2"
    # What the template passes on reads back as the same spec.
    environment = {leaf.env_name: values.get(leaf.parameter_name, "S3") for leaf in spec_parameter_leaves()}
    assert spec_from_environment(environment) == spec


def test_secret_names_are_replaced_by_their_secrets_manager_copies_and_local_sources_refused() -> None:
    named = s3_spec(destination={"bucket": "dst-bucket", "credentials": {"secretName": "keys"}})
    with pytest.raises(SpecError, match="secretName 'keys' has no Secrets Manager copy"):
        s3_stack_parameters("t", named, SETTINGS)
    copy_arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:default/keys-XyZ123"
    values = parameter_keys(s3_stack_parameters("t", named, SETTINGS, secret_arns={"keys": copy_arn}))
    assert values["DestinationCredentialsSecretsManagerArn"] == copy_arn
    with pytest.raises(SpecError, match="profile"):
        s3_stack_parameters("t", s3_spec(destination={"bucket": "d-b", "credentials": {"profile": "me"}}), SETTINGS)
    local_list = s3_spec(source={"bucket": "src-bucket", "prefixListFile": "/home/me/prefixes.txt"})
    with pytest.raises(SpecError, match="s3:// object"):
        s3_stack_parameters("t", local_list, SETTINGS)
    key_id = s3_spec(
        destination={"bucket": "d-b", "sse": "AWS_KMS", "kmsKeyId": "1234abcd-12ab-34cd-56ef-1234567890ab"}
    )
    with pytest.raises(SpecError, match="key's ARN"):
        s3_stack_parameters("t", key_id, SETTINGS)
    image = ImageTaskSpec.model_validate(
        {
            "type": "Image",
            "source": {"type": "Registry", "registry": "quay.io", "images": {"all": True}},
            "destination": {"type": "Registry", "registry": "r.example", "credentials": {"env": "REG"}},
        }
    )
    with pytest.raises(SpecError, match=r"credentials\.env is for standalone runs"):
        image_stack_parameters("t", image, SETTINGS)


def test_settings_and_values_cloudformation_would_refuse_are_refused_here() -> None:
    with pytest.raises(SpecError, match="at least one subnet and one security group"):
        s3_stack_parameters("t", s3_spec(), PluginSettings(image="i", subnets=[], security_groups=["g"]))
    with pytest.raises(SpecError, match="at least one subnet and one security group"):
        s3_stack_parameters("t", s3_spec(), PluginSettings(image="i", subnets=["s"]))
    with pytest.raises(SpecError, match="no task size of 256 CPU units with 4096 MiB"):
        s3_stack_parameters(
            "t", s3_spec(), PluginSettings(image="i", subnets=["s"], security_groups=["g"], worker=TaskSize(256, 4096))
        )
    with pytest.raises(SpecError, match="retention"):
        s3_stack_parameters(
            "t", s3_spec(), PluginSettings(image="i", subnets=["s"], security_groups=["g"], log_retention_days=10)
        )
    long_list = s3_spec(options={"include": [f"prefix-{i}/*" for i in range(500)]})
    with pytest.raises(SpecError, match="OptionsInclude: longer than CloudFormation's 4096"):
        s3_stack_parameters("t", long_list, SETTINGS)


def test_image_stack_parameters_derive_iam_and_schedule_from_the_spec() -> None:
    spec = ImageTaskSpec.model_validate(
        {
            "type": "Image",
            "source": {
                "type": "Amazon_ECR",
                "registry": "111122223333.dkr.ecr.eu-west-1.amazonaws.com",
                "images": {"ssmParameter": "arn:aws:ssm:eu-west-1:111122223333:parameter/dth/images"},
            },
            "destination": {
                "type": "Amazon_ECR",
                "accountId": "444455556666",
                "region": "cn-north-1",
                "prefix": "mirror/",
                "credentials": {"secretName": "china"},
            },
            "schedule": "0 4 * * 0",
        }
    )
    china = "arn:aws:secretsmanager:us-east-1:123456789012:secret:default/china-AbC123"
    values = parameter_keys(image_stack_parameters("t", spec, SETTINGS, secret_arns={"china": china}))
    assert (values["SourceEcrAccount"], values["SourceEcrRegion"]) == ("111122223333", "eu-west-1")
    assert (values["DestinationEcrAccount"], values["DestinationEcrRegion"]) == ("444455556666", "cn-north-1")
    assert values["DestinationPrefix"] == "mirror/"
    assert values["DestinationCredentialsSecretsManagerArn"] == china
    assert values["ImageListParameterName"] == "dth/images"
    assert values["Schedule"] == "cron(0 4 ? * 1 *)"
    # The engine gets the whole spec, with the secret's copy, and reads it back as the same task.
    carried = parse_task_spec(json.loads(values["TaskSpec"]))
    assert isinstance(carried, ImageTaskSpec)
    assert carried.destination.credentials is not None
    assert carried.destination.credentials.secrets_manager_arn == china
    assert carried.model_copy(update={"destination": spec.destination}) == spec
    once = spec.model_copy(update={"schedule": "once"})
    assert (
        parameter_keys(image_stack_parameters("t", once, SETTINGS, secret_arns={"china": china}))["Schedule"] == "once"
    )


@pytest.mark.parametrize(
    "cron, expected",
    [
        ("0 2 * * *", "cron(0 2 * * ? *)"),
        ("*/15 * * * 1-5", "cron(*/15 * ? * 2-6 *)"),
        ("0 0 1 * *", "cron(0 0 1 * ? *)"),
        ("0 0 L * ?", "cron(0 0 L * ? *)"),
        ("0 3 * * 0", "cron(0 3 ? * 1 *)"),
        ("0 3 * * 7", "cron(0 3 ? * 1 *)"),
        ("0 3 * * SUN,wed", "cron(0 3 ? * SUN,WED *)"),
        ("0 3 * * 5-7", "cron(0 3 ? * 6-7,1 *)"),
        ("0 3 * * 4-0", "cron(0 3 ? * 5-7,1 *)"),
        ("0 3 * * 5#2", "cron(0 3 ? * 6#2 *)"),
        ("0 3 * * 5L", "cron(0 3 ? * 6L *)"),
        ("0 12 * JAN,JUL *", "cron(0 12 * JAN,JUL ? *)"),
        ("once", ""),
    ],
)
def test_eventbridge_schedule(cron: str, expected: str) -> None:
    assert eventbridge_schedule(cron) == expected


def test_eventbridge_cannot_restrict_both_days() -> None:
    with pytest.raises(SpecError, match="both the day of the month and the day of the week"):
        eventbridge_schedule("0 0 1 * 1")
    with pytest.raises(SpecError, match="not a day of the week"):
        eventbridge_schedule("0 0 * * 9")


def test_queue_settings_follow_retries_and_chunk_size() -> None:
    assert queue_max_receive_count(5) == 6  # create_queues' default: the worker dead-letters on the 6th receive
    assert queue_visibility_timeout(8 * MiB) == 300
    assert queue_visibility_timeout(512 * MiB) == 1536
    assert queue_visibility_timeout(5 * GiB) == 15360
    assert set(DERIVED_PARAMETERS) == {"ScheduleExpression", "QueueMaxReceiveCount", "QueueVisibilityTimeout"}
    assert "TaskName" in S3_PLUGIN_PARAMETERS


def test_the_status_table_expires_items_by_the_stores_expiry_attribute() -> None:
    """moto ignores TimeToLiveSpecification: checked as written (the store writes the attribute, test_store.py)."""
    from dth.state.dynamodb import EXPIRY_ATTRIBUTE

    table = load_template("s3-plugin.yaml")["Resources"]["StatusTable"]["Properties"]
    assert table["TimeToLiveSpecification"] == {"AttributeName": EXPIRY_ATTRIBUTE, "Enabled": True}


# --- permissions boundary -----------------------------------------------------------------------------

BOUNDARY = "arn:aws:iam::123456789012:policy/dth-task-boundary"


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda path: path.name)
def test_every_role_gets_the_permissions_boundary_when_one_is_set(path: Path) -> None:
    template = load_template(path)
    roles = {k: r for k, r in template["Resources"].items() if r["Type"] == "AWS::IAM::Role"}
    assert roles
    for logical_id, role in roles.items():
        assert role["Properties"]["PermissionsBoundary"] == {
            "Fn::If": ["HasBoundary", {"Ref": "PermissionsBoundaryArn"}, {"Ref": "AWS::NoValue"}]
        }, logical_id
    assert template["Conditions"]["HasBoundary"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "PermissionsBoundaryArn"}, ""]}]
    }
    assert template["Parameters"]["PermissionsBoundaryArn"]["Default"] == ""


def test_the_boundary_setting_reaches_both_stacks() -> None:
    bounded = PluginSettings(image="i", subnets=["s"], security_groups=["g"], permissions_boundary=BOUNDARY)
    image = ImageTaskSpec.model_validate(
        {
            "type": "Image",
            "source": {"type": "Registry", "registry": "quay.io", "images": {"all": True}},
            "destination": {"type": "Registry", "registry": "r.example"},
        }
    )
    for parameters in (s3_stack_parameters("t", s3_spec(), bounded), image_stack_parameters("t", image, bounded)):
        assert parameter_keys(parameters)["PermissionsBoundaryArn"] == BOUNDARY
    assert parameter_keys(s3_stack_parameters("t", s3_spec(), SETTINGS))["PermissionsBoundaryArn"] == ""
    with pytest.raises(SpecError, match="permissions boundary"):
        s3_stack_parameters(
            "t",
            s3_spec(),
            PluginSettings(image="i", subnets=["s"], security_groups=["g"], permissions_boundary="dth-boundary"),
        )


# --- the operator's own IAM policy (cfn/operator-iam.yaml) ----------------------------------------------

OPERATOR_IAM = template_path("s3-plugin.yaml").parent / "operator-iam.yaml"

#: What CloudFormation calls, with the operator's credentials, to create, update and delete each resource type
#: of the plugin templates. A new type in a template fails the test until it is listed here and allowed.
STACK_ACTIONS: dict[str, set[str]] = {
    "AWS::SQS::Queue": {"sqs:CreateQueue", "sqs:DeleteQueue", "sqs:SetQueueAttributes", "sqs:GetQueueAttributes"},
    "AWS::SQS::QueuePolicy": {"sqs:SetQueueAttributes"},
    "AWS::DynamoDB::Table": {
        "dynamodb:CreateTable",
        "dynamodb:DeleteTable",
        "dynamodb:DescribeTable",
        "dynamodb:UpdateTimeToLive",  # TimeToLiveSpecification
    },
    "AWS::KMS::Key": {"kms:CreateKey", "kms:PutKeyPolicy", "kms:EnableKeyRotation", "kms:ScheduleKeyDeletion"},
    "AWS::Logs::LogGroup": {"logs:CreateLogGroup", "logs:DeleteLogGroup", "logs:PutRetentionPolicy"},
    "AWS::Logs::MetricFilter": {"logs:PutMetricFilter", "logs:DeleteMetricFilter"},
    "AWS::SNS::Topic": {"sns:CreateTopic", "sns:DeleteTopic", "sns:Subscribe"},
    "AWS::SNS::TopicPolicy": {"sns:SetTopicAttributes"},
    "AWS::CloudWatch::Alarm": {"cloudwatch:PutMetricAlarm", "cloudwatch:DeleteAlarms"},
    "AWS::Events::Rule": {"events:PutRule", "events:DeleteRule", "events:PutTargets", "events:RemoveTargets"},
    "AWS::ECS::Cluster": {"ecs:CreateCluster", "ecs:DeleteCluster"},
    "AWS::ECS::TaskDefinition": {"ecs:RegisterTaskDefinition", "ecs:DeregisterTaskDefinition", "iam:PassRole"},
    "AWS::ECS::Service": {"ecs:CreateService", "ecs:UpdateService", "ecs:DeleteService"},
    "AWS::ApplicationAutoScaling::ScalableTarget": {"application-autoscaling:RegisterScalableTarget"},
    "AWS::ApplicationAutoScaling::ScalingPolicy": {"application-autoscaling:PutScalingPolicy"},
    "AWS::IAM::Role": {"iam:CreateRole", "iam:DeleteRole", "iam:GetRole", "iam:PutRolePermissionsBoundary"},
    "AWS::IAM::Policy": {"iam:PutRolePolicy", "iam:DeleteRolePolicy"},
}
#: What the operator calls itself (dth_operator: stacks.py, secrets.py, progress.py, runs.py).
OPERATOR_ACTIONS = {
    "ecs:RunTask",
    "cloudformation:CreateStack",
    "cloudformation:UpdateStack",
    "cloudformation:DeleteStack",
    "cloudformation:DescribeStacks",
    "cloudformation:DescribeStackEvents",
    "secretsmanager:CreateSecret",
    "secretsmanager:PutSecretValue",
    "secretsmanager:DeleteSecret",
    "secretsmanager:ListSecrets",
    "dynamodb:GetItem",
    "dynamodb:Query",
    "sqs:GetQueueAttributes",
}
#: Actions IAM cannot scope to a resource (or to a name a stack chooses): the only ones allowed on "*".
UNSCOPED_ACTIONS = (
    {
        "secretsmanager:ListSecrets",
        "ecs:RegisterTaskDefinition",
        "ecs:DeregisterTaskDefinition",
        "ecs:DescribeTaskDefinition",
        "ec2:DescribeSubnets",
        "ec2:DescribeSecurityGroups",
        "ec2:DescribeVpcs",
        "iam:CreateServiceLinkedRole",
        "kms:CreateKey",
        "kms:TagResource",
        "iam:DeleteRolePermissionsBoundary",  # denied
    }
    | {a for a in STACK_ACTIONS["AWS::ApplicationAutoScaling::ScalableTarget"]}
    | {
        "application-autoscaling:DeregisterScalableTarget",
        "application-autoscaling:DescribeScalableTargets",
        "application-autoscaling:PutScalingPolicy",
        "application-autoscaling:DeleteScalingPolicy",
        "application-autoscaling:DescribeScalingPolicies",
    }
)


def operator_statements() -> list[dict[str, Any]]:
    template = load_template(OPERATOR_IAM)
    (policy,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::IAM::ManagedPolicy"]
    return list(policy["Properties"]["PolicyDocument"]["Statement"])


def test_cfn_lint_reports_nothing_on_the_operator_policy() -> None:
    from cfnlint.api import ManualArgs, lint_file

    assert [str(match) for match in lint_file(OPERATOR_IAM, config=ManualArgs())] == []


def test_the_operator_policy_allows_what_the_operator_and_its_stacks_need_and_no_more() -> None:
    statements = operator_statements()
    allowed = {a for s in statements if s["Effect"] == "Allow" for a in as_list(s["Action"])}
    used_types = {resource["Type"] for name in TEMPLATE_NAMES for resource in load_template(name)["Resources"].values()}
    assert used_types <= set(STACK_ACTIONS), f"resource types without their actions: {used_types - set(STACK_ACTIONS)}"
    needed = OPERATOR_ACTIONS | {action for t in used_types for action in STACK_ACTIONS[t]}
    assert needed - allowed == set()
    for statement in statements:
        actions = as_list(statement["Action"])
        assert not any(action.endswith("*") for action in actions), statement["Sid"]
        if statement["Resource"] == "*":
            assert set(actions) <= UNSCOPED_ACTIONS, statement["Sid"]
        elif actions == ["logs:DescribeLogGroups"]:  # IAM scopes it to the account's log groups at most
            assert statement["Resource"]["Fn::Sub"].endswith(":log-group:*")
        else:
            text = json.dumps(statement["Resource"])
            assert "${StackNamePrefix}" in text or "${SecretNamePrefix}" in text or ":key/*" in text, statement["Sid"]
    by_sid = {s["Sid"]: s for s in statements}
    # Roles only with the boundary (when one is set), passed only to ECS tasks and EventBridge, never unbounded.
    assert by_sid["StackRolesWithTheBoundary"]["Condition"]["Fn::If"][1] == {
        "StringEquals": {"iam:PermissionsBoundary": {"Ref": "PermissionsBoundaryArn"}}
    }
    assert "iam:CreateRole" in by_sid["StackRolesWithTheBoundary"]["Action"]
    assert by_sid["PassStackRolesToTasksAndRules"]["Condition"] == {
        "StringEquals": {"iam:PassedToService": ["ecs-tasks.amazonaws.com", "events.amazonaws.com"]}
    }
    assert by_sid["NeverLiftABoundary"]["Effect"] == "Deny"
    # Secrets: made only tagged, changed only when tagged; keys likewise.
    assert by_sid["CreateSecretCopiesTagged"]["Condition"] == {"Null": {"aws:RequestTag/dth.io/uid": "false"}}
    assert by_sid["ChangeOnlyTaggedSecretCopies"]["Condition"] == {
        "Null": {"secretsmanager:ResourceTag/dth.io/uid": "false"}
    }
    assert by_sid["CreateStackKeysTagged"]["Condition"] == {"Null": {"aws:RequestTag/dth.io/uid": "false"}}
