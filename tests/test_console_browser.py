"""The web console in a real browser (Debian's chromium, driven by Playwright) against the real local
kube-apiserver: local mode (`dth console --kubeconfig`), the wizard through a server-side dry run, field
errors, escaping, CSRF, and the screenshots the README shows."""

from __future__ import annotations

import base64
import json
import re
import shutil
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dth.devtools.console import ConsoleProcess
from dth.devtools.kubernetes import LocalKubernetes
from dth.devtools.waiting import wait_for

SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SOURCE_SECRET_KEY = f"src-Secret-{uuid.uuid4().hex}"
SCRIPT = "<script>document.title='pwned'</script>"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed (apt-get install chromium)", pytrace=False)
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def namespace(kubernetes: LocalKubernetes, transfertask_crd: str) -> Iterator[str]:
    name = f"console-{uuid.uuid4().hex[:6]}"
    kubernetes.kubectl("create", "namespace", name)
    yield name
    kubernetes.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def local_console(
    kubernetes: LocalKubernetes, namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ConsoleProcess]:
    log = tmp_path_factory.mktemp("console") / "console.log"
    with ConsoleProcess(
        log, kubeconfig=kubernetes.kubeconfig, settings={"DTH_CONSOLE_NAMESPACES": namespace}
    ) as console:
        console.start()
        yield console
        assert SOURCE_SECRET_KEY not in console.log_text()


def tasks(kubernetes: LocalKubernetes, namespace: str) -> list[dict[str, Any]]:
    listed = kubernetes.kubectl("-n", namespace, "get", "transfertasks", "-o", "json").stdout
    return list(json.loads(listed)["items"])


def fill(page: Any, values: dict[str, str]) -> None:
    for path, value in values.items():
        page.fill(f'[id="in-{path}"]', value)


def test_wizard_creates_a_task_through_a_dry_run_and_shows_it(
    browser: Any, local_console: ConsoleProcess, kubernetes: LocalKubernetes, namespace: str
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(local_console.url + "/")
    page.click("#new-s3")
    fill(
        page,
        {
            "metadata.name": "nightly-logs",
            "metadata.namespace": namespace,
            "description": SCRIPT,
            "source.bucket": "team-logs",
            "source.prefix": "app/",
            "destination.bucket": "team-logs-copy",
            "destination.region": "cn-north-1",
        },
    )
    page.select_option('[id="in-source.type"]', "Aliyun_OSS")
    fill(page, {"source.region": "cn-hangzhou"})
    page.fill('[name="keys.source.accessKeyId"]', "LTAI-test-key")
    page.fill('[name="keys.source.secretAccessKey"]', SOURCE_SECRET_KEY)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(SCREENSHOTS / "wizard.png"), full_page=False)
    page.click("#preview")
    preview = page.locator("#yaml").inner_text()
    assert "name: nightly-logs" in preview and "secretName: nightly-logs-source-keys" in preview
    assert SOURCE_SECRET_KEY not in page.content()
    assert tasks(kubernetes, namespace) == []  # a dry run so far
    page.click("#confirm")
    page.wait_for_url(re.compile(f"/tasks/{namespace}/nightly-logs$"))
    # The description is shown as text: the script neither ran nor became an element.
    assert page.locator("#description").inner_text() == SCRIPT
    assert page.title() != "pwned"
    assert SOURCE_SECRET_KEY not in page.content()
    page.screenshot(path=str(SCREENSHOTS / "detail.png"), full_page=False)
    (task,) = tasks(kubernetes, namespace)
    assert task["spec"]["source"]["credentials"] == {"secretName": "nightly-logs-source-keys"}
    assert task["metadata"]["annotations"]["dth.io/description"] == SCRIPT
    secret = json.loads(
        kubernetes.kubectl("-n", namespace, "get", "secret", "nightly-logs-source-keys", "-o", "json").stdout
    )
    assert base64.b64decode(secret["data"]["secret_access_key"]).decode() == SOURCE_SECRET_KEY
    page.goto(local_console.url + "/")
    page.wait_for_selector(f'tr[data-key="{namespace}/nightly-logs"]')
    assert "s3://team-logs/app/ (Aliyun_OSS) → s3://team-logs-copy/" in page.locator("#tasks").inner_text()
    assert SCRIPT in page.locator("#tasks").inner_text()  # escaped in the list too
    # The operator's progress reaches the open list through the console's watch, without a reload.
    page.evaluate("window.notReloaded = true")
    status = {"status": {"phase": "Running", "objects": {"found": 10, "copied": 4, "bytesFound": 5 << 20}}}
    httpx.patch(
        f"{kubernetes.server_url}/apis/dth.io/v1alpha1/namespaces/{namespace}/transfertasks/nightly-logs/status",
        json=status,
        headers={"Authorization": f"Bearer {kubernetes.token}", "Content-Type": "application/merge-patch+json"},
        verify=ssl.create_default_context(cafile=str(kubernetes.ca_path)),
    ).raise_for_status()
    row = page.locator(f'tr[data-key="{namespace}/nightly-logs"]')
    page.wait_for_function(
        f"document.querySelector('tr[data-key=\"{namespace}/nightly-logs\"] [data-field=phase]').textContent === 'Running'"
    )
    assert "4/10" in row.inner_text() and page.evaluate("window.notReloaded === true")
    assert SCRIPT in row.inner_text()  # the row sent over the stream is escaped as well
    page.screenshot(path=str(SCREENSHOTS / "list.png"), full_page=False)
    page.close()


def test_a_field_error_is_shown_beside_the_field_and_nothing_is_created(
    browser: Any, local_console: ConsoleProcess, kubernetes: LocalKubernetes, namespace: str
) -> None:
    page = browser.new_page()
    page.goto(local_console.url + "/new?type=S3")
    fill(
        page,
        {
            "metadata.name": "too-small-parts",
            "metadata.namespace": namespace,
            "source.bucket": "bucket-a",
            "destination.bucket": "bucket-b",
            "options.chunkSize": "1MiB",
        },
    )
    page.click("#preview")
    error = page.locator('[id="field-options.chunkSize"] .field-error').inner_text()
    # The same words as `dth validate`: the rule beside the constraint in the model.
    assert error == "chunkSize must be at least 5 MiB and at most 5 GiB (S3's part sizes), such as `8MiB`"
    assert page.locator('[id="in-options.chunkSize"]').input_value() == "1MiB"  # what was typed stays
    assert [t["metadata"]["name"] for t in tasks(kubernetes, namespace)] in ([], ["nightly-logs"])
    page.close()


def test_a_post_without_the_csrf_token_is_refused(
    local_console: ConsoleProcess, kubernetes: LocalKubernetes, namespace: str
) -> None:
    form = {
        "type": "S3",
        "mode": "create",
        "metadata.name": "forged",
        "metadata.namespace": namespace,
        "source.bucket": "bucket-a",
        "destination.bucket": "bucket-b",
    }
    with httpx.Client(base_url=local_console.url) as client:
        client.get("/")  # a session, whose token the forged form does not carry
        refused = client.post("/preview", data=form)
        assert refused.status_code == 403
        assert "did not come from the console" in refused.text
        assert "Traceback" not in refused.text
        wrong = client.post("/preview", data={**form, "csrf": "guessed"})
        assert wrong.status_code == 403
    assert "forged" not in [t["metadata"]["name"] for t in tasks(kubernetes, namespace)]


# --- signed in with OIDC, acting through impersonation, authorised by RBAC -----------------------------------
EDITOR, VIEWER = "editor@example.com", "viewer@example.com"
CLIENT_SECRET = f"client-{uuid.uuid4().hex}"
SESSION_SECRET = f"session-{uuid.uuid4().hex}"
TEAM_A, TEAM_B = "team-a", "team-b"


def _rbac(namespace: str) -> list[dict[str, Any]]:
    editor_rules = [
        {"apiGroups": ["dth.io"], "resources": ["transfertasks"], "verbs": ["*"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create", "patch"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list"]},
    ]
    viewer_rules = [
        {"apiGroups": ["dth.io"], "resources": ["transfertasks"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list"]},
    ]
    objects: list[dict[str, Any]] = []
    for role, rules, user in (("dth-editor", editor_rules, EDITOR), ("dth-viewer", viewer_rules, VIEWER)):
        objects.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": role, "namespace": namespace},
                "rules": rules,
            }
        )
        objects.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": role, "namespace": namespace},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
            }
        )
    return objects


@pytest.fixture(scope="module")
def teams(kubernetes: LocalKubernetes, transfertask_crd: str) -> Iterator[tuple[str, str]]:
    """team-a, where the editor may edit and the viewer may view, and team-b, where neither may do anything."""
    for name in (TEAM_A, TEAM_B):
        kubernetes.kubectl("create", "namespace", name, check=False)
    kubernetes.kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": _rbac(TEAM_A)})
    )
    yield TEAM_A, TEAM_B
    for name in (TEAM_A, TEAM_B):
        kubernetes.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def oidc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from dth.devtools.console import OidcProvider

    users = [{"sub": user, "email": user, "groups": ["dth-users"]} for user in (EDITOR, VIEWER)]
    with OidcProvider(tmp_path_factory.mktemp("oidc") / "oidc.log", users) as provider:
        provider.start()
        yield provider


@pytest.fixture(scope="module")
def cluster_console(
    kubernetes: LocalKubernetes, teams: tuple[str, str], oidc: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ConsoleProcess]:
    """The console as in a cluster: its own ServiceAccount (the chart's RBAC), impersonating who signs in."""
    from dth.devtools.console import service_account_kubeconfig

    workdir = tmp_path_factory.mktemp("cluster-console")
    service = service_account_kubeconfig(kubernetes, "dth-console-test", "dth-console", workdir / "sa.kubeconfig")
    console = ConsoleProcess(workdir / "console.log")
    console._env.update(  # type: ignore[union-attr]
        {
            "DTH_CONSOLE_OIDC_ISSUER": oidc.issuer,
            "DTH_CONSOLE_OIDC_CLIENT_ID": "dth-console",
            "DTH_CONSOLE_OIDC_CLIENT_SECRET": CLIENT_SECRET,
            "DTH_CONSOLE_SESSION_SECRET": SESSION_SECRET,
            "DTH_CONSOLE_PUBLIC_URL": f"http://127.0.0.1:{console.port}",
            "DTH_CONSOLE_SECURE_COOKIES": "false",  # plain http on 127.0.0.1
            "DTH_CONSOLE_NAMESPACES": ",".join(teams),
            "DTH_CONSOLE_SERVICE_KUBECONFIG": str(service),
        }
    )
    with console:
        console.start()
        yield console
        log = console.log_text()
        for secret in (CLIENT_SECRET, SESSION_SECRET, SOURCE_SECRET_KEY):
            assert secret not in log


def sign_in(browser: Any, console: ConsoleProcess, user: str) -> Any:
    """A fresh browser context signed in as `user` through the provider's own page."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(console.url + "/")
    page.wait_for_selector("text=Authorize Client")  # the provider's page
    page.click(f'button[value="{user}"]')
    page.wait_for_url(console.url + "/")
    assert page.locator("#user").inner_text() == user
    return page


def csrf_of(page: Any) -> str:
    return str(page.locator('input[name="csrf"]').first.get_attribute("value"))


def test_the_viewer_sees_no_create_button_and_a_direct_post_is_refused_in_words(
    browser: Any, cluster_console: ConsoleProcess, kubernetes: LocalKubernetes, teams: tuple[str, str]
) -> None:
    team_a, _ = teams
    task = {
        "apiVersion": "dth.io/v1alpha1",
        "kind": "TransferTask",
        "metadata": {"name": "viewable", "namespace": team_a},
        "spec": {"type": "S3", "source": {"bucket": "bucket-a"}, "destination": {"bucket": "bucket-b"}},
    }
    kubernetes.kubectl("apply", "-f", "-", input=json.dumps(task))
    page = sign_in(browser, cluster_console, VIEWER)
    page.wait_for_selector(f'tr[data-key="{team_a}/viewable"]')
    assert page.locator("#create").count() == 0
    cookie = next(c for c in page.context.cookies() if c["name"] == "dth_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    form = {
        "csrf": csrf_of(page),
        "type": "S3",
        "mode": "create",
        "metadata.name": "not-allowed",
        "metadata.namespace": team_a,
        "source.bucket": "bucket-a",
        "destination.bucket": "bucket-b",
    }
    refused = page.request.post(cluster_console.url + "/preview", form=form)
    assert refused.status == 403
    assert f"you may not create transfertasks in namespace {team_a}" in refused.text()
    assert "Traceback" not in refused.text()
    page.goto(f"{cluster_console.url}/tasks/{team_a}/viewable")
    assert page.locator("#suspend").count() == 0 and page.locator("#delete").count() == 0
    suspend = page.request.post(
        f"{cluster_console.url}/tasks/{team_a}/viewable/suspend", form={"csrf": csrf_of(page), "suspend": "true"}
    )
    assert suspend.status == 403
    assert f"you may not change transfertasks in namespace {team_a}" in suspend.text()
    assert [t["metadata"]["name"] for t in tasks(kubernetes, team_a)] == ["viewable"]
    page.context.close()


def test_the_editor_is_refused_where_rbac_says_no(
    browser: Any, cluster_console: ConsoleProcess, kubernetes: LocalKubernetes, teams: tuple[str, str]
) -> None:
    _, team_b = teams
    page = sign_in(browser, cluster_console, EDITOR)
    assert page.locator("#create").count() == 1  # the editor may create in team-a
    page.goto(cluster_console.url + "/new?type=S3")
    fill(
        page,
        {
            "metadata.name": "elsewhere",
            "metadata.namespace": team_b,
            "source.bucket": "bucket-a",
            "destination.bucket": "bucket-b",
        },
    )
    page.click("#preview")
    assert page.locator("#top-error").inner_text() == f"you may not create transfertasks in namespace {team_b}"
    assert tasks(kubernetes, team_b) == []
    page.context.close()


# --- the full flow: the operator, moto as AWS, radosgw as S3 and the local ECS runner -----------------------
@pytest.fixture(scope="module")
def operator_in_team_a(
    kubernetes: LocalKubernetes, teams: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """The operator serving team-a, as in tests/test_operator.py; yields the moto server it deploys to."""
    import signal
    import subprocess
    import sys

    from dth.devtools.moto import MotoServer
    from dth.devtools.operator_env import operator_environment
    from dth.devtools.stacks import LocalStacks

    team_a, _ = teams
    log_path = tmp_path_factory.mktemp("operator") / "operator.log"
    with MotoServer() as moto:
        network = LocalStacks(moto.endpoint_url).network(team_a)
        env = operator_environment(
            kubernetes.kubeconfig, moto.endpoint_url, network, engine_image="dth-engine:test", observe_interval=1
        )
        with log_path.open("w") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "dth_operator", "--namespace", team_a, "--standalone", "--liveness", ""],
                env={**env, "DTH_STACK_RETRY_DELAY": "0.5"},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                yield moto
            finally:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
        assert SOURCE_SECRET_KEY not in log_path.read_text(errors="replace")


def test_the_editor_creates_watches_suspends_resumes_clones_and_deletes_a_task(
    browser: Any,
    cluster_console: ConsoleProcess,
    kubernetes: LocalKubernetes,
    teams: tuple[str, str],
    operator_in_team_a: Any,
    rgw_site: Any,
    tmp_path: Path,
) -> None:
    from dth.devtools.ecs_runner import EcsRunner

    team_a, _ = teams
    source, destination = f"src-{uuid.uuid4().hex[:8]}", f"dst-{uuid.uuid4().hex[:8]}"
    client = rgw_site.client()
    client.create_bucket(Bucket=source)
    client.create_bucket(Bucket=destination)
    for number in range(6):
        client.put_object(Bucket=source, Key=f"data/{number:02d}", Body=b"x" * (300 + number))
    page = sign_in(browser, cluster_console, EDITOR)
    page.click("#new-s3")
    fill(page, {"metadata.name": "copy", "metadata.namespace": team_a, "options.workers": "4"})
    for side, bucket in (("source", source), ("destination", destination)):
        page.select_option(f'[id="in-{side}.type"]', "S3_Compatible")
        fill(page, {f"{side}.bucket": bucket, f"{side}.endpoint": rgw_site.url})
        page.fill(f'[name="keys.{side}.accessKeyId"]', rgw_site.access_key)
        page.fill(f'[name="keys.{side}.secretAccessKey"]', rgw_site.secret_key)
    page.click("#preview")
    page.click("#confirm")
    page.wait_for_url(re.compile(f"/tasks/{team_a}/copy$"))
    page.evaluate("window.notReloaded = true")
    with EcsRunner(operator_in_team_a.endpoint_url, log_dir=tmp_path / "ecs", poll_interval=0.5):
        page.wait_for_function(
            "document.getElementById('phase').textContent === 'Succeeded'", timeout=180_000, polling=500
        )
    assert page.evaluate("window.notReloaded === true")  # the page changed by itself, over server-sent events
    assert page.locator("#progress-text").inner_text().startswith("6/6")
    assert rgw_site.secret_key not in page.content()
    assert len(client.list_objects_v2(Bucket=destination).get("Contents", [])) == 6

    page.click("#suspend")
    page.wait_for_selector("#resume")
    assert (
        kubernetes.kubectl("-n", team_a, "get", "transfertasks", "copy", "-o", "jsonpath={.spec.suspend}").stdout
        == "true"
    )
    page.click("#resume")
    page.wait_for_selector("#suspend")
    assert (
        kubernetes.kubectl("-n", team_a, "get", "transfertasks", "copy", "-o", "jsonpath={.spec.suspend}").stdout
        == "false"
    )

    page.click("#clone")
    assert page.locator('[id="in-metadata.name"]').input_value() == "copy-copy"
    assert page.locator('[id="in-source.bucket"]').input_value() == source
    page.check('[id="in-suspend"]')  # the clone waits: this test only checks it is made
    page.click("#preview")
    page.click("#confirm")
    page.wait_for_url(re.compile(f"/tasks/{team_a}/copy-copy$"))
    clone = json.loads(kubernetes.kubectl("-n", team_a, "get", "transfertasks", "copy-copy", "-o", "json").stdout)
    assert clone["spec"]["source"]["bucket"] == source and clone["spec"]["suspend"] is True

    for name in ("copy-copy", "copy"):
        page.goto(f"{cluster_console.url}/tasks/{team_a}/{name}")
        page.click("#delete")
        page.wait_for_url(cluster_console.url + "/")
        wait_for(
            lambda name=name: (
                kubernetes.kubectl("-n", team_a, "get", "transfertasks", name, check=False).returncode != 0
            ),
            timeout=120,
            what=f"the operator's finalizer to let {name} go",
        )
    page.context.close()


def test_run_now_and_edit_change_the_task_as_the_user(
    browser: Any, local_console: ConsoleProcess, kubernetes: LocalKubernetes, namespace: str
) -> None:
    task = {
        "apiVersion": "dth.io/v1alpha1",
        "kind": "TransferTask",
        "metadata": {"name": "nightly", "namespace": namespace},
        "spec": {
            "type": "S3",
            "source": {"bucket": "bucket-a"},
            "destination": {"bucket": "bucket-b"},
            "schedule": "0 2 * * *",
            "options": {"workers": 8, "exclude": ["*.tmp"]},
        },
    }
    kubernetes.kubectl("apply", "-f", "-", input=json.dumps(task))
    page = browser.new_page()
    page.goto(f"{local_console.url}/tasks/{namespace}/nightly")
    page.click("#run-now")
    page.wait_for_selector("#run-now")

    def stored() -> dict[str, Any]:
        done = kubernetes.kubectl("-n", namespace, "get", "transfertasks", "nightly", "-o", "json")
        return dict(json.loads(done.stdout))

    stamp = stored()["metadata"]["annotations"]["dth.io/run-now"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stamp)
    kubernetes.kubectl(  # keys typed in an earlier edit: typing new ones replaces them
        "-n", namespace, "create", "secret", "generic", "nightly-source-keys", "--from-literal=access_key_id=old"
    )
    page.click("#edit")
    assert page.locator('[id="in-options.workers"]').input_value() == "8"
    page.fill('[name="keys.source.accessKeyId"]', "new-key-id")
    page.fill('[name="keys.source.secretAccessKey"]', SOURCE_SECRET_KEY)
    page.fill('[id="in-options.workers"]', "7")
    page.fill('[id="in-options.exclude"]', "")
    page.fill('[id="in-description"]', "nightly copy of bucket-a")
    page.click("#preview")
    assert "workers: 7" in page.locator("#yaml").inner_text()
    page.click("#confirm")
    page.wait_for_url(re.compile(f"/tasks/{namespace}/nightly$"))
    edited = stored()
    assert edited["spec"]["options"] == {"workers": 7}  # the cleared list is gone, not kept
    assert edited["spec"]["schedule"] == "0 2 * * *"
    assert edited["metadata"]["annotations"]["dth.io/description"] == "nightly copy of bucket-a"
    assert edited["spec"]["source"]["credentials"] == {"secretName": "nightly-source-keys"}
    keys = json.loads(kubernetes.kubectl("-n", namespace, "get", "secret", "nightly-source-keys", "-o", "json").stdout)
    assert base64.b64decode(keys["data"]["access_key_id"]).decode() == "new-key-id"
    assert SOURCE_SECRET_KEY not in page.content()
    page.close()


def test_the_page_speaks_simplified_chinese_to_a_chinese_browser_with_a_switch(
    browser: Any, local_console: ConsoleProcess
) -> None:
    context = browser.new_context(locale="zh-CN")
    page = context.new_page()
    page.goto(local_console.url + "/")
    assert page.locator("h1").inner_text() == "传输任务"
    assert page.locator("#new-s3").inner_text() == "新建 S3 任务"
    page.click("#lang-en")
    assert page.locator("h1").inner_text() == "Transfer tasks"
    page.goto(local_console.url + "/new?type=S3")
    assert page.locator("h1").inner_text().startswith("Create task")
    context.close()


def test_the_image_wizard_previews_an_image_task_after_a_dry_run(
    local_console: ConsoleProcess, kubernetes: LocalKubernetes, namespace: str
) -> None:
    with httpx.Client(base_url=local_console.url) as client:
        page = client.get("/new", params={"type": "Image"}).text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        assert csrf is not None and 'id="in-source.images.names"' in page
        form = {
            "csrf": csrf.group(1),
            "type": "Image",
            "mode": "create",
            "metadata.name": "mirror-nginx",
            "metadata.namespace": namespace,
            "source.type": "Registry",
            "source.registry": "registry.example.com",
            "source.images.names": "library/nginx:1.27\nlibrary/redis",
            "destination.type": "Amazon_ECR",
            "destination.accountId": "123456789012",
            "destination.region": "cn-north-1",
            "destination.prefix": "mirror/",
        }
        previewed = client.post("/preview", data=form)
        assert previewed.status_code == 200, previewed.text
        assert "- library/nginx:1.27" in previewed.text and "accountId: &#39;123456789012&#39;" in previewed.text
        broken = client.post("/preview", data={**form, "destination.accountId": "12345"})
        assert broken.status_code == 422
        assert "accountId must be an AWS account number of 12 digits" in broken.text
    assert "mirror-nginx" not in [t["metadata"]["name"] for t in tasks(kubernetes, namespace)]
