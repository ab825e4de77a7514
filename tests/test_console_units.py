"""Small pieces of the web console: the form generated from the spec model, the access review cache, the
language negotiation, the task store's fan-out and the list's rows."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dth.console.access import AccessReviews
from dth.console.forms import check, form_values, spec_from_form, task_form
from dth.console.i18n import negotiate, translator
from dth.console.kube import Identity
from dth.console.live import Change, TaskStore
from dth.console.settings import ConsoleSettings
from dth.console.views import row_for
from dth.spec.load import parse_task_spec
from dth.spec.model import S3Options


def test_the_form_comes_from_the_model_with_defaults_rules_and_enums() -> None:
    fields = {f.path: f for f in task_form("S3").walk()}
    chunk = fields["options.chunkSize"]
    assert chunk.kind == "size" and chunk.default == str(S3Options().chunk_size)
    # The description carries the rule, as the CRD says it (dth/spec/rules.py).
    assert "ChunkSize must be at least 5 MiB and at most 5 GiB" in chunk.description
    assert fields["options.compare"].choices == ("size", "size-etag", "checksum", "none")
    assert fields["options.compare"].default == "size-etag"
    assert fields["source.bucket"].required and fields["options.copyMetadata"].kind == "bool"
    assert "source.credentials.secretName" in fields
    image_fields = {f.path for f in task_form("Image").walk()}
    assert {"source.images.names", "destination.prefix", "options.multiArch"} <= image_fields


def test_a_submitted_form_becomes_a_short_spec_that_parses() -> None:
    form = {
        "source.bucket": "logs",
        "source.type": "Amazon_S3",  # the default: left out
        "destination.bucket": "logs-copy",
        "options.chunkSize": "16MiB",
        "options.workers": "4",
        "options.copyMetadata": "true",  # the default
        "options.deleteExtraneous": "true",
        "options.exclude": "*.tmp\n\n*.bak\n",
        "schedule": "0 2 * * *",
    }
    spec = spec_from_form("S3", form)
    assert spec == {
        "type": "S3",
        "source": {"bucket": "logs"},
        "destination": {"bucket": "logs-copy"},
        "options": {"chunkSize": "16MiB", "workers": 4, "deleteExtraneous": True, "exclude": ["*.tmp", "*.bak"]},
        "schedule": "0 2 * * *",
    }
    parse_task_spec(spec)
    values = form_values(spec)
    assert values["options.exclude"] == "*.tmp\n*.bak" and values["options.deleteExtraneous"] == "true"


def test_problems_are_put_beside_their_fields_in_dth_validates_words() -> None:
    form = task_form("S3")
    spec = spec_from_form("S3", {"source.bucket": "x", "destination.bucket": "ok-bucket", "options.workers": "0"})
    problems = check("S3", spec, "Not_A_Name", "team-a", form)
    assert problems.at("source.bucket")[0].startswith("bucket names are 3 to 255 characters")
    assert problems.at("options.workers") == ["workers must be a whole number from 1 to 512, such as `32`"]
    assert problems.at("metadata.name")[0].startswith("metadata.name must be a Kubernetes name")
    # A rule across fields lands on the nearest section (here the whole spec).
    same = spec_from_form("S3", {"source.bucket": "same", "destination.bucket": "same"})
    assert "overlap" in check("S3", same, "ok", "team-a", form).at("")[0]


class FakeReviews:
    """Answers SubjectAccessReviews as the API server would, counting them."""

    impersonate = True

    def __init__(self) -> None:
        self.asked: list[dict[str, Any]] = []

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        body = kwargs["body"]
        self.asked.append(body)
        spec = body["spec"]
        allowed = spec["user"] == "editor@example.com" and spec["resourceAttributes"]["namespace"] == "team-a"
        return {"status": {"allowed": allowed}}


def test_access_reviews_are_cached_briefly_per_user_and_namespace() -> None:
    kube = FakeReviews()
    now = [100.0]
    reviews = AccessReviews(kube, ttl=30, clock=lambda: now[0])  # type: ignore[arg-type]
    editor = Identity("editor@example.com", ("dth-users",))

    async def ask() -> list[bool]:
        return [
            await reviews.allowed(editor, "create", "team-a"),
            await reviews.allowed(editor, "create", "team-a"),
            await reviews.allowed(editor, "create", "team-b"),
            await reviews.allowed(Identity("viewer@example.com"), "create", "team-a"),
        ]

    assert asyncio.run(ask()) == [True, True, False, False]
    assert len(kube.asked) == 3  # the second question was answered from the cache
    assert kube.asked[0]["spec"]["groups"] == ["dth-users"]
    now[0] += 31
    asyncio.run(reviews.allowed(editor, "create", "team-a"))
    assert len(kube.asked) == 4  # expired: asked again


@pytest.mark.parametrize(
    ("header", "chosen", "expected"),
    [
        ("zh-CN,zh;q=0.9,en;q=0.8", None, "zh"),
        ("en-US,en;q=0.9,zh;q=0.8", None, "en"),
        ("fr-FR,zh;q=0.5", None, "zh"),
        ("de", None, "en"),
        ("zh-CN", "en", "en"),  # the switch wins over the browser
        ("", "zh", "zh"),
        ("zh-TW", None, "en"),
    ],
)
def test_the_language_follows_the_browser_unless_switched(header: str, chosen: str | None, expected: str) -> None:
    assert negotiate(header, chosen) == expected


def test_translations_fall_back_to_english() -> None:
    assert translator("zh")("Create task") == "创建任务"
    assert translator("zh")("a message nobody translated") == "a message nobody translated"


def _task(namespace: str, name: str, copied: int = 0, byte_count: int = 0) -> dict[str, Any]:
    return {
        "metadata": {"namespace": namespace, "name": name},
        "spec": {"type": "S3", "source": {"bucket": "a"}, "destination": {"bucket": "b"}},
        "status": {
            "phase": "Running",
            "objects": {"found": 10, "copied": copied, "bytesFound": 1000, "bytesCopied": byte_count},
        },
    }


def test_the_store_fans_changes_out_only_to_pages_that_may_see_them() -> None:
    async def scenario() -> tuple[list[str], list[str]]:
        store = TaskStore(kube=None)  # type: ignore[arg-type]
        team_a = store.subscribe(lambda key: key[0] == "team-a")
        everyone = store.subscribe(lambda key: True)
        store.publish(Change("ADDED", _task("team-a", "one")))
        store.publish(Change("ADDED", _task("team-b", "two")))
        store.unsubscribe(everyone)
        store.publish(Change("ADDED", _task("team-a", "three")))
        seen_a = [team_a.queue.get_nowait().key[1] for _ in range(team_a.queue.qsize())]
        seen_all = [everyone.queue.get_nowait().key[1] for _ in range(everyone.queue.qsize())]
        return seen_a, seen_all

    assert asyncio.run(scenario()) == (["one", "three"], ["one", "two"])


def test_rate_and_eta_come_from_the_watchs_samples() -> None:
    clock = [0.0]
    store = TaskStore(kube=None, clock=lambda: clock[0])  # type: ignore[arg-type]
    store._apply(Change("ADDED", _task("ns", "t", 1, 100)))
    clock[0] = 10.0
    store._apply(Change("MODIFIED", _task("ns", "t", 5, 500)))
    rate = store.rate(("ns", "t"))
    assert rate == 40.0
    row = row_for(store.tasks[("ns", "t")], rate)
    assert row.rate == "40 B/s" and row.eta == "12s" and row.percent == 50


def test_settings_read_the_environment_and_secret_files(tmp_path: Any) -> None:
    secret_file = tmp_path / "client-secret"
    secret_file.write_text("from-a-file\n")
    settings = ConsoleSettings.from_environment(
        {
            "DTH_CONSOLE_OIDC_ISSUER": "https://id.example.com/",
            "DTH_CONSOLE_OIDC_CLIENT_SECRET_FILE": str(secret_file),
            "DTH_CONSOLE_NAMESPACES": "team-a, team-b",
            "DTH_CONSOLE_SECURE_COOKIES": "false",
        }
    )
    assert settings.oidc_issuer == "https://id.example.com"
    assert settings.oidc_client_secret is not None and settings.oidc_client_secret.get_secret_value() == "from-a-file"
    assert "from-a-file" not in repr(settings)
    assert settings.namespaces == ("team-a", "team-b") and settings.secure_cookies is False
    assert settings.username_claim == "email" and settings.groups_claim == "groups"


def test_the_cli_imports_the_console_only_for_dth_console() -> None:
    import subprocess
    import sys

    probe = "import sys, dth.cli.main; print(any(m.split('.')[0] in ('starlette', 'uvicorn') for m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
    from dth.cli.main import build_parser

    args = build_parser().parse_args(["console", "--kubeconfig", "/tmp/kc"])
    assert (args.host, args.port) == ("127.0.0.1", 8080)


def test_the_detail_page_lists_failures_and_escapes_what_it_shows() -> None:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    from dth.console import i18n
    from dth.console.state import TEMPLATES
    from dth.console.views import human_bytes

    environment = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(default=True))
    environment.filters["bytes"] = human_bytes
    task = _task("ns", "t", 3, 300)
    task["status"]["failures"] = [{"key": "data/<b>bad</b>", "reason": "AccessDenied: the source refused"}]
    context: dict[str, Any] = {
        "request": type("R", (), {"url": type("U", (), {"path": "/"})()})(),
        "t": i18n.translator("en"),
        "lang": "en",
        "languages": i18n.LANGUAGES,
        "user": None,
        "local": True,
        "csrf": "token",
        "task": task,
        "row": row_for(task, None),
        "status": task["status"],
        "spec_yaml": "",
        "manifest_text": "",
        "events": [],
        "chart": [],
        "chart_error": "",
        "chart_size": (600, 160),
        "prometheus": False,
        "scheduled": False,
        "suspended": False,
        "can_change": False,
        "can_delete": False,
        "can_create": False,
    }
    page = environment.get_template("detail.html").render(**context)
    assert "data/&lt;b&gt;bad&lt;/b&gt;" in page and "AccessDenied: the source refused" in page
    del task["status"]["failures"]
    assert 'id="failures"' not in environment.get_template("detail.html").render(**context)
