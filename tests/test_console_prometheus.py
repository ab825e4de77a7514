"""The detail page's chart from history: the console asks a real Prometheus (Debian's) for the operator's
per-task metrics, scraped here from a small exposition served on 127.0.0.1."""

from __future__ import annotations

import asyncio
import http.server
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from dth.console.charts import polyline, prometheus_series
from dth.devtools.ports import free_port
from dth.devtools.waiting import wait_for

EXPOSITION = (
    "# HELP dth_task_objects Objects of the task's latest run, by outcome\n"
    "# TYPE dth_task_objects gauge\n"
    'dth_task_objects{namespace="team-a",name="copy",outcome="copied"} 12\n'
    'dth_task_objects{namespace="team-a",name="other",outcome="copied"} 99\n'
    "# HELP dth_task_bytes Bytes of the task's latest run, by outcome\n"
    "# TYPE dth_task_bytes gauge\n"
    'dth_task_bytes{namespace="team-a",name="copy",outcome="copied"} 4096\n'
)


class _Metrics(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = EXPOSITION.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed (apt-get install prometheus)", pytrace=False)
    metrics = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    threading.Thread(target=metrics.serve_forever, daemon=True).start()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: dth\n    static_configs: [{{targets: ['127.0.0.1:{metrics.server_port}']}}]\n"
    )
    port = free_port()
    with (tmp_path / "prometheus.log").open("w") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)
        metrics.shutdown()


def test_the_chart_draws_the_tasks_history_from_prometheus(prometheus: str) -> None:
    def scraped() -> bool:
        try:
            query = "/api/v1/query?query=dth_task_bytes"
            with urllib.request.urlopen(prometheus + query, timeout=2) as answer:
                return b'"copy"' in answer.read()
        except OSError:
            return False

    wait_for(scraped, timeout=60, what="Prometheus to scrape the exposition")
    wait_for(
        lambda: (
            all(len(s.points) >= 2 for s in asyncio.run(prometheus_series(prometheus, "team-a", "copy", 0.1)))
            and asyncio.run(prometheus_series(prometheus, "team-a", "copy", 0.1)) != []
        ),
        timeout=60,
        what="two samples of each series",
    )
    series = {s.name: s for s in asyncio.run(prometheus_series(prometheus, "team-a", "copy", 0.1))}
    assert set(series) == {"objects copied", "bytes copied"}
    assert {value for _, value in series["objects copied"].points} == {12.0}  # not the other task's 99
    assert len(polyline(series["bytes copied"].points).split()) == len(series["bytes copied"].points)
