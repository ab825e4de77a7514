"""The operator's configuration: the same for every task it reconciles, read from the environment (the
Helm chart sets it from its values)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dth.errors import SpecError
from dth.spec.cfn import PluginSettings, TaskSize, template_path


class OperatorSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    region: str = Field("us-east-1", description="where the plugin stacks and secrets live")
    engine_image: str = Field("public.ecr.aws/dth/engine:latest", description="the engines' container image")
    subnets: tuple[str, ...] = Field(default=(), description="subnets of the Fargate tasks")
    security_groups: tuple[str, ...] = ()
    cluster: str = Field("", description="an existing ECS cluster; empty: each stack creates one")
    assign_public_ip: bool = False
    s3_template: Path = Field(default_factory=lambda: template_path("s3-plugin.yaml"))
    image_template: Path = Field(default_factory=lambda: template_path("image-plugin.yaml"))
    observe_interval: float = Field(30.0, gt=0, description="seconds between checks of a task's stack and progress")
    metrics_port: int = Field(8080, ge=0, le=65535, description="0: no metrics endpoint")
    alarm_email: str = ""
    permissions_boundary: str = Field(
        "",
        pattern=r"^$|^arn:aws[a-z-]*:iam::\d{12}:policy/.+$",
        description="an IAM policy ARN set as the permissions boundary of every task role; empty: none",
    )
    tenant_policy: Path | None = Field(None, description="the tenant policy file (dth_operator.policy); none: default")
    webhook_port: int = Field(0, ge=0, le=65535, description="the admission webhook's HTTPS port; 0: no webhook")
    webhook_cert_dir: Path = Field(
        Path("/etc/dth/webhook"), description="the webhook's serving certificate: tls.crt and tls.key"
    )
    cluster_id: str = Field(
        "default",
        pattern=r"^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$",
        description="this operator's identity in the AWS account: in its secrets' names and in the owner tags of "
        "its stacks and secrets, so that clusters sharing an account never touch each other's",
    )
    stack_retry_delay: float = Field(
        10.0, gt=0, description="seconds before the first check of a stack in progress; doubles, up to 12 times this"
    )
    failures_limit: int = Field(
        20, ge=0, le=1000, description="failed objects of the last run listed in status.failures; 0: none"
    )

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> OperatorSettings:
        env = os.environ if environ is None else environ
        names = {
            "region": "DTH_AWS_REGION",
            "engine_image": "DTH_ENGINE_IMAGE",
            "subnets": "DTH_SUBNETS",
            "security_groups": "DTH_SECURITY_GROUPS",
            "cluster": "DTH_CLUSTER",
            "assign_public_ip": "DTH_ASSIGN_PUBLIC_IP",
            "s3_template": "DTH_S3_TEMPLATE",
            "image_template": "DTH_IMAGE_TEMPLATE",
            "observe_interval": "DTH_OBSERVE_INTERVAL",
            "metrics_port": "DTH_METRICS_PORT",
            "alarm_email": "DTH_ALARM_EMAIL",
            "permissions_boundary": "DTH_PERMISSIONS_BOUNDARY",
            "tenant_policy": "DTH_TENANT_POLICY",
            "webhook_port": "DTH_WEBHOOK_PORT",
            "webhook_cert_dir": "DTH_WEBHOOK_CERT_DIR",
            "cluster_id": "DTH_CLUSTER_ID",
            "stack_retry_delay": "DTH_STACK_RETRY_DELAY",
            "failures_limit": "DTH_FAILURES_LIMIT",
        }
        values: dict[str, object] = {}
        for field, variable in names.items():
            raw = env.get(variable, "").strip()
            if not raw:
                continue
            values[field] = tuple(p for p in raw.split(",") if p) if field in {"subnets", "security_groups"} else raw
        if "region" not in values and env.get("AWS_REGION"):
            values["region"] = env["AWS_REGION"]
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            problem = error.errors()[0]
            raise SpecError(f"operator settings: {names[str(problem['loc'][0])]}: {problem['msg']}") from None

    def plugin(self) -> PluginSettings:
        return PluginSettings(
            image=self.engine_image,
            subnets=self.subnets,
            security_groups=self.security_groups,
            cluster=self.cluster,
            assign_public_ip=self.assign_public_ip,
            finder=TaskSize(1024, 2048),
            worker=TaskSize(2048, 4096),
            alarm_email=self.alarm_email,
            permissions_boundary=self.permissions_boundary,
        )
