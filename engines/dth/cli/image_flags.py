"""`dth image`'s flags: the parser offers them without loading the image command (dth.cli.image), which loads
only when an image command runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dth.spec.image_kinds import MultiArch, RegistryType

SYNC_EXAMPLES = """\
examples:
  # Two images from Docker Hub into a private registry, under mirror/.
  dth image sync registry-1.docker.io registry.example.com/mirror --image library/nginx:1.27 -i library/redis:7

  # Every tag of a repository that is a version from 1.2 up to 2, into ECR in China.
  dth image sync quay.io 123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn \\
      --image prometheus/node-exporter:ALL_TAGS --semver '>=1.2 <2' --dest-profile china

  # Everything a local registry holds, with its password from $SRC_USERNAME and $SRC_PASSWORD; plan first.
  dth image sync 127.0.0.1:5000 registry.example.com --all --source-insecure --source-credentials-env SRC --dry-run

Exit codes: 0 every image copied or already there; 1 some images failed (listed); 2 bad input, or a
registry that is unreachable or refuses the credentials.
"""


# --------------------------------------------------------------------------------------------------
# flags


def register(commands: Any) -> None:
    """Add `dth image ...` to the top-level subcommands; the commands themselves load on use."""
    parser = commands.add_parser("image", help="container image transfers")
    image_commands = parser.add_subparsers(dest="image_command", required=True, metavar="COMMAND")
    sync = image_commands.add_parser(
        "sync",
        help="copy images that differ from one registry (or ECR) to another",
        description="Copy container images with skopeo, skipping every image whose manifest digest the "
        "destination already has. SOURCE is a registry host; DESTINATION is a host, optionally with a "
        "repository prefix (host/mirror/). ECR hosts (ACCOUNT.dkr.ecr.REGION.amazonaws.com[.cn]) are "
        "recognised.",
        epilog=SYNC_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_sync_arguments(sync)
    sync.set_defaults(handler=_sync_command)
    env = image_commands.add_parser(
        "sync-env",
        help="container entrypoint: one sync, configured by DTH_TASK_SPEC (and DTH_TASK_NAME)",
    )
    env.set_defaults(handler=_env_command, log_format_default="json")


def add_sync_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE", help="registry host[:port], e.g. quay.io")
    parser.add_argument("destination", metavar="DESTINATION", help="registry host[:port][/prefix]")
    what = parser.add_argument_group("which images (exactly one of --image, --all, --ssm-parameter)")
    what.add_argument(
        "--image",
        "-i",
        dest="images",
        action="append",
        default=[],
        metavar="REPO[:TAG]",
        help="an image; the tag defaults to latest, REPO:ALL_TAGS means every tag (repeat, or separate by commas)",
    )
    what.add_argument("--all", action="store_true", help="every repository and tag of the source")
    what.add_argument("--ssm-parameter", help="an SSM parameter holding the image list (as DTH keeps it)")
    what.add_argument("--tag-regex", help="only tags matching this regular expression")
    what.add_argument("--semver", help="only tags that are versions in this range, e.g. '>=1.2 <2'")
    for role, flag in (("source", "source"), ("destination", "dest")):
        group = parser.add_argument_group(f"{role}")
        group.add_argument(f"--{flag}-type", choices=[t.value for t in RegistryType], help="default: from the host")
        group.add_argument(f"--{flag}-account-id", help="Amazon_ECR: account (default: from the host)")
        group.add_argument(f"--{flag}-region", help="Amazon_ECR: region (default: from the host)")
        group.add_argument(f"--{flag}-endpoint", help="Amazon_ECR: ECR API endpoint URL")
        group.add_argument(f"--{flag}-insecure", action="store_true", help="plain HTTP or unverified TLS")
        group.add_argument(f"--{flag}-profile", help="Amazon_ECR: AWS profile")
        group.add_argument(
            f"--{flag}-credentials-env",
            metavar="PREFIX",
            help="Registry: read PREFIX_USERNAME and PREFIX_PASSWORD from the environment",
        )
        group.add_argument(f"--{flag}-secrets-manager-arn", help="a Secrets Manager secret with the credentials")
    parser.add_argument("--insecure", action="store_true", help="both registries: plain HTTP or unverified TLS")
    how = parser.add_argument_group("how")
    how.add_argument("--multi-arch", choices=[m.value for m in MultiArch], help="default all")
    how.add_argument("--concurrency", type=int, help="images at once (default 10)")
    how.add_argument("--max-retries", type=int, help="attempts per image after the first (default 3)")
    how.add_argument("--no-create-repositories", action="store_true", help="ECR: do not create repositories")
    add_run_arguments(parser)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true", help="print the plan, copy nothing")
    parser.add_argument("--output", choices=["text", "json"], default="text")
    parser.add_argument("--state", type=Path, help="SQLite file for the status (default: per task)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")


def _sync_command(args: argparse.Namespace) -> int:
    from dth.cli.image import sync_command

    return sync_command(args)


def _env_command(args: argparse.Namespace) -> int:
    from dth.cli.image import env_command

    return env_command(args)
