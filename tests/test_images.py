"""The container images (docker/*.Dockerfile), checked without building them: no container engine runs on
the test machines and no base image can be pulled there.

What a build would discover late is checked here instead: every file the Dockerfiles COPY exists and is in
the build context (.dockerignore), the base image is pinned, the user is the one the Helm chart runs as, the
entrypoints exist and accept the commands the plugin templates give them, the operator image's template
paths are the files it copies, and docker/requirements.lock pins, with hashes, every dependency of the
project (pyproject.toml) and of its build.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path, PurePosixPath

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from dth.spec.cfn import TEMPLATE_NAMES, load_template

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
LOCK = DOCKER / "requirements.lock"
OPERATOR = DOCKER / "operator.Dockerfile"
ENGINE = DOCKER / "engine.Dockerfile"
DOCKERFILES = (OPERATOR, ENGINE)
CHART_VALUES = ROOT / "helm" / "dth-operator" / "values.yaml"


@dataclass(frozen=True)
class Instruction:
    stage: int  # index of the FROM it follows
    keyword: str
    arguments: str


def instructions(dockerfile: Path) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    found: list[Instruction] = []
    stage = -1
    pending = ""
    for raw in dockerfile.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = pending + line
        pending = ""
        keyword, _, arguments = text.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        found.append(Instruction(stage, keyword, " ".join(arguments.split())))
    assert not pending, f"{dockerfile.name} ends inside a continued line"
    return found


def last_stage(dockerfile: Path) -> list[Instruction]:
    everything = instructions(dockerfile)
    final = max(i.stage for i in everything)
    return [i for i in everything if i.stage == final]


def exec_form(instruction: Instruction) -> list[str]:
    value = json.loads(instruction.arguments)
    assert isinstance(value, list) and all(isinstance(part, str) for part in value), instruction
    return value


def copies(dockerfile: Path) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY from the build context (not from another stage)."""
    result = []
    for instruction in instructions(dockerfile):
        if instruction.keyword not in {"COPY", "ADD"}:
            continue
        words = shlex.split(instruction.arguments)
        if any(word.startswith("--from") for word in words):
            continue
        words = [word for word in words if not word.startswith("--")]
        result.append((words[:-1], words[-1]))
    return result


def environment(dockerfile: Path) -> dict[str, str]:
    """The final stage's ENV (key=value form)."""
    values: dict[str, str] = {}
    for instruction in last_stage(dockerfile):
        if instruction.keyword == "ENV":
            for word in shlex.split(instruction.arguments):
                key, separator, value = word.partition("=")
                assert separator, f"ENV in key value form is ambiguous: {instruction.arguments}"
                values[key] = value
    return values


def docker_ignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` (relative to the root) out of the build context: its rules are an
    exclude-everything with exceptions, applied in order, last match wins."""
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    ignored = False
    target = PurePosixPath(path)
    for rule in rules:
        negate = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/")
        candidates = [target, *target.parents]
        if any(
            candidate.match(pattern) or str(candidate) == pattern for candidate in candidates if str(candidate) != "."
        ):
            ignored = not negate
    return ignored


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_copied_file_is_in_the_build_context(dockerfile: Path) -> None:
    found = copies(dockerfile)
    assert found, f"{dockerfile.name} copies nothing from the repository"
    for sources, _ in found:
        for source in sources:
            assert (ROOT / source).exists(), f"{dockerfile.name}: COPY {source}: no such file in the repository"
            assert not docker_ignored(source), f"{dockerfile.name}: COPY {source}: excluded by .dockerignore"


def test_dockerignore_check_can_fail() -> None:
    # The helper above is what keeps the previous test honest: it must see files that are left out.
    assert docker_ignored("tests/conftest.py")
    assert docker_ignored(".git/HEAD")
    assert docker_ignored("engines/dth/__pycache__/x.pyc")
    assert not docker_ignored("engines/dth/__init__.py")
    assert not docker_ignored("docker/requirements.lock")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_base_image_is_pinned_by_tag_and_digest(dockerfile: Path) -> None:
    everything = instructions(dockerfile)
    (argument,) = [i for i in everything if i.keyword == "ARG" and i.arguments.startswith("PYTHON_IMAGE=")]
    image = argument.arguments.removeprefix("PYTHON_IMAGE=")
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", image), image
    stages = [i for i in everything if i.keyword == "FROM"]
    assert len(stages) == 2, "a build stage and a runtime stage"
    assert all(i.arguments.split()[0] == "${PYTHON_IMAGE}" for i in stages)
    # The project's Python: the same minor version as pyproject's floor.
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["requires-python"]
    assert requires == ">=3.11"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_installs_only_the_lock_then_the_project_without_resolving(dockerfile: Path) -> None:
    runs = [i.arguments for i in instructions(dockerfile) if i.keyword == "RUN"]
    pip_runs = [run for run in runs if "pip install" in run]
    assert any(
        "--no-deps" in run and "--require-hashes" in run and "-r /tmp/requirements.lock" in run for run in pip_runs
    ), pip_runs
    project = [run for run in pip_runs if "/src" in run]
    assert project and all("--no-deps" in run and "--no-build-isolation" in run for run in project), project
    # No other pip install may fetch anything.
    assert len(pip_runs) == 2, pip_runs
    assert (["docker/requirements.lock"], "/tmp/requirements.lock") in copies(dockerfile)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_runs_as_the_non_root_user_the_chart_expects(dockerfile: Path) -> None:
    final = last_stage(dockerfile)
    (user,) = [i.arguments for i in final if i.keyword == "USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) != 0 and int(gid) != 0, user
    assert any(f"--uid {uid}" in i.arguments for i in final if i.keyword == "RUN"), "the user is created"
    values = yaml.safe_load(CHART_VALUES.read_text(encoding="utf-8"))
    pod = values["podSecurityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"]) == (int(uid), int(gid))
    assert pod["runAsNonRoot"] is True
    # USER comes after everything that needs root.
    keywords = [i.keyword for i in final]
    assert "RUN" not in keywords[keywords.index("USER") :]


def test_operator_entrypoint_is_the_operator_module() -> None:
    (entrypoint,) = [i for i in last_stage(OPERATOR) if i.keyword == "ENTRYPOINT"]
    assert exec_form(entrypoint) == ["python", "-m", "dth_operator"]
    assert find_spec("dth_operator.__main__") is not None
    done = subprocess.run(
        [sys.executable, "-m", "dth_operator", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    # The flags the Helm chart passes.
    for flag in (
        "--namespace",
        "--all-namespaces",
        "--standalone",
        "--peering",
        "--liveness",
        "--log-format",
        "--verbose",
    ):
        assert flag in done.stdout


def test_operator_image_points_the_operator_at_the_templates_it_copies() -> None:
    env = environment(OPERATOR)
    copied: dict[str, Path] = {}
    for sources, destination in copies(OPERATOR):
        for source in sources:
            if destination.endswith("/"):
                copied[destination + PurePosixPath(source).name] = ROOT / source
            else:
                copied[destination] = ROOT / source
    for variable, name in (("DTH_S3_TEMPLATE", "s3-plugin.yaml"), ("DTH_IMAGE_TEMPLATE", "image-plugin.yaml")):
        path = env[variable]
        assert path in copied, f"{variable}={path} is not a file the image copies ({sorted(copied)})"
        assert copied[path] == ROOT / "cfn" / name
        assert copied[path].is_file()
    assert set(TEMPLATE_NAMES) == {"s3-plugin.yaml", "image-plugin.yaml"}


def test_operator_reads_the_image_template_variables() -> None:
    """The variables the image sets are the operator's own settings (checked against its parser)."""
    from dth_operator.settings import OperatorSettings

    env = environment(OPERATOR)
    repository_paths = {
        "DTH_S3_TEMPLATE": str(ROOT / "cfn" / PurePosixPath(env["DTH_S3_TEMPLATE"]).name),
        "DTH_IMAGE_TEMPLATE": str(ROOT / "cfn" / PurePosixPath(env["DTH_IMAGE_TEMPLATE"]).name),
    }
    settings = OperatorSettings.from_environment(repository_paths)
    assert settings.s3_template == ROOT / "cfn" / "s3-plugin.yaml"
    assert settings.image_template == ROOT / "cfn" / "image-plugin.yaml"


def test_engine_entrypoint_runs_the_commands_of_the_task_definitions() -> None:
    (entrypoint,) = [i for i in last_stage(ENGINE) if i.keyword == "ENTRYPOINT"]
    assert exec_form(entrypoint) == ["dth"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert scripts["dth"] == "dth.cli.main:main"
    commands = []
    for name in TEMPLATE_NAMES:
        resources = load_template(name)["Resources"]
        for resource in resources.values():
            if resource["Type"] != "AWS::ECS::TaskDefinition":
                continue
            for container in resource["Properties"]["ContainerDefinitions"]:
                assert "EntryPoint" not in container, f"{name}: the image's entrypoint is assumed"
                commands.append([str(part) for part in container["Command"]])
    assert sorted(map(tuple, commands)) == [("image", "sync-env"), ("s3", "finder"), ("s3", "worker")]
    for command in commands:
        # `dth <command> --help` parses: the image's entrypoint plus the stack's command is a real command.
        done = subprocess.run(
            [sys.executable, "-m", "dth", *command, "--help"], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, f"dth {' '.join(command)}: {done.stderr}"


def test_engine_image_has_skopeo_and_writes_only_to_tmp() -> None:
    runs = [i.arguments for i in last_stage(ENGINE) if i.keyword == "RUN"]
    assert any(re.search(r"apt-get install -y --no-install-recommends [^&]*\bskopeo\b", run) for run in runs), runs
    assert any("rm -rf /var/lib/apt/lists/*" in run for run in runs)
    env = environment(ENGINE)
    # The task definitions run it with a read-only root filesystem and a volume at /tmp.
    assert env["TMPDIR"] == "/tmp"
    assert env["DTH_STATE_DIR"].startswith("/tmp/")
    for name in TEMPLATE_NAMES:
        for resource in load_template(name)["Resources"].values():
            if resource["Type"] == "AWS::ECS::TaskDefinition":
                for container in resource["Properties"]["ContainerDefinitions"]:
                    assert container["ReadonlyRootFilesystem"] is True
                    assert {"SourceVolume": "tmp", "ContainerPath": "/tmp"} in container["MountPoints"]


# --- the lock -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pin:
    name: str
    version: Version
    hashes: tuple[str, ...]


def locked() -> dict[str, Pin]:
    pins: dict[str, Pin] = {}
    text = LOCK.read_text(encoding="utf-8").replace("\\\n", " ")
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([^\s;]+)", words[0])
        assert match, f"not an exact pin: {line}"
        hashes = tuple(word.removeprefix("--hash=") for word in words[1:] if word.startswith("--hash="))
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"{name} pinned twice"
        pins[name] = Pin(name, Version(match.group(2)), hashes)
    return pins


def _pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_lock_pins_every_package_with_hashes() -> None:
    pins = locked()
    assert len(pins) > 10
    for pin in pins.values():
        assert pin.hashes, f"{pin.name} has no hash"
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in pin.hashes), pin
    assert "bash docker/lock.sh" in LOCK.read_text(encoding="utf-8"), "the lock names the script that makes it"


def test_lock_satisfies_the_project_and_its_build() -> None:
    pins = locked()
    project = _pyproject()
    dependencies = project["project"]["dependencies"]  # type: ignore[index]
    # The console extra: the chart runs `dth console` from the operator's image (docker/lock.sh --extra console).
    console = project["project"].get("optional-dependencies", {}).get("console", [])  # type: ignore[index,union-attr]
    build = project["build-system"]["requires"]  # type: ignore[index]
    for text in [*dependencies, *console, *build]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in {LOCK.name}: run bash docker/lock.sh"
        assert requirement.specifier.contains(pins[name].version, prereleases=True), (
            f"{LOCK.name} pins {name}=={pins[name].version}, which {requirement} excludes: run bash docker/lock.sh"
        )


def test_lock_is_closed_under_the_dependencies_of_what_it_pins() -> None:
    """Each pinned package's own requirements (as installed here, on the images' platform and Python) are
    pinned too: `pip install --no-deps` would otherwise leave one out."""
    pins = locked()
    environment_markers = {key: str(value) for key, value in default_environment().items()}
    environment_markers.update(python_version="3.11", sys_platform="linux", platform_system="Linux")
    checked = 0
    for pin in pins.values():
        try:
            requires = metadata.requires(pin.name) or []
        except metadata.PackageNotFoundError:
            continue
        checked += 1
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker and not requirement.marker.evaluate({**environment_markers, "extra": ""}):
                continue
            assert canonicalize_name(requirement.name) in pins, (
                f"{pin.name} requires {requirement}, which {LOCK.name} does not pin: run bash docker/lock.sh"
            )
    # The check means something only when most pinned packages are installed here (the test extras are).
    assert checked >= len(pins) // 2, f"only {checked} of {len(pins)} pinned packages are installed here"
