"""Deploying the CloudFormation plugins on moto server, for tests and local runs.

`LocalStacks` holds boto3 clients for a moto endpoint and does what a test needs around a stack: a VPC with
a subnet and a security group for the Fargate tasks (moto checks they exist), create/update/delete from a
template file, the outputs, and the cleanup of what moto leaves behind (ECS resources outlive their stack).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dth.devtools.moto import MOTO_ACCESS_KEY, MOTO_SECRET_KEY

CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"]


@dataclass(frozen=True)
class Network:
    vpc: str
    subnets: tuple[str, ...]
    security_groups: tuple[str, ...]


class LocalStacks:
    def __init__(
        self,
        endpoint_url: str,
        *,
        region: str = "us-east-1",
        access_key: str = MOTO_ACCESS_KEY,
        secret_key: str = MOTO_SECRET_KEY,
    ) -> None:
        import boto3

        self.endpoint_url = endpoint_url
        self.region = region
        self._session = boto3.session.Session(
            aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=region
        )
        self.cloudformation = self.client("cloudformation")
        self.ecs = self.client("ecs")

    def client(self, service: str) -> Any:
        return self._session.client(service, endpoint_url=self.endpoint_url)

    def network(self, name: str) -> Network:
        """A VPC with one subnet and one security group (tagged with `name`)."""
        ec2 = self.client("ec2")
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
        group = ec2.create_security_group(GroupName=name, Description=f"{name}: Fargate tasks", VpcId=vpc)["GroupId"]
        return Network(vpc, (subnet,), (group,))

    def create(self, name: str, template: Path, parameters: Sequence[Mapping[str, str]]) -> dict[str, Any]:
        self.cloudformation.create_stack(
            StackName=name,
            TemplateBody=template.read_text(encoding="utf-8"),
            Parameters=list(parameters),
            Capabilities=CAPABILITIES,
        )
        return self.describe(name)

    def update(self, name: str, template: Path, parameters: Sequence[Mapping[str, str]]) -> dict[str, Any]:
        self.cloudformation.update_stack(
            StackName=name,
            TemplateBody=template.read_text(encoding="utf-8"),
            Parameters=list(parameters),
            Capabilities=CAPABILITIES,
        )
        return self.describe(name)

    def describe(self, name: str) -> dict[str, Any]:
        stack: dict[str, Any] = self.cloudformation.describe_stacks(StackName=name)["Stacks"][0]
        return stack

    def outputs(self, name: str) -> dict[str, str]:
        return {item["OutputKey"]: item["OutputValue"] for item in self.describe(name).get("Outputs", [])}

    def parameters(self, name: str) -> dict[str, str]:
        return {item["ParameterKey"]: item.get("ParameterValue", "") for item in self.describe(name)["Parameters"]}

    def resources(self, name: str) -> dict[str, dict[str, Any]]:
        """The stack's resources by logical id (moto lists the types it skipped without an id)."""
        summaries = self.cloudformation.list_stack_resources(StackName=name)["StackResourceSummaries"]
        return {item["LogicalResourceId"]: item for item in summaries if item.get("LogicalResourceId")}

    def delete(self, name: str, *, remove_services: bool = True) -> list[str]:
        """Delete the stack; returns the ARNs of its ECS services, which moto keeps (with `remove_services`
        they are deleted too, as CloudFormation would; else call `remove_services` later).

        The resources are listed before the stack is deleted: moto re-creates a deleted stack's resources when
        they are listed.
        """
        services = [
            item["PhysicalResourceId"]
            for item in self.resources(name).values()
            if item["ResourceType"] == "AWS::ECS::Service"
        ]
        self.cloudformation.delete_stack(StackName=name)
        if remove_services:
            self.remove_services(services)
        return services

    def remove_services(self, service_arns: Sequence[str]) -> None:
        for arn in service_arns:
            cluster = arn.split("/")[-2]
            self.ecs.delete_service(cluster=cluster, service=arn, force=True)
