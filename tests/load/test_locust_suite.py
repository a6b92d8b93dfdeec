"""The load testers' suite (issue 13): each locust user class for 5 s against one test node, through run_load.py.

Locust runs from its own venv, .venv-load, built once per session from requirements/load.txt
(scripts/install-load-deps.sh), in a subprocess: gevent never touches this process. Each
run goes through loadtests/run_load.py's main() against the module's node (--host), so the
report, the summary and Herald's counters (every id sent, asked back) are what is checked:
every request type of the class is in the report, nothing failed, nothing was lost.
"""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest

from loadtests import run_load

ROOT = Path(__file__).resolve().parent.parent.parent

pytestmark = pytest.mark.slow

# Every request type (type, name) each class must put in the report.
EXPECTED = {
    "Sender": {("POST", "/v1/notifications [web]"), ("POST", "/v1/notifications [all channels]")},
    "BatchSender": {("POST", "/v1/notifications/batch")},
    "TopicSender": {("PUT", "/v1/topics/[topic]/subscribers"), ("POST", "/v1/notifications [topic]")},
    "Subscriber": {("POST", "/v1/users/[user]/tokens"), ("WS", "/v1/ws connect+sync"),
                   ("POST", "/v1/notifications [to a subscriber]"), ("deliver:web", "POST to WebSocket frame")},
    "SseSubscriber": {("POST", "/v1/users/[user]/tokens"), ("SSE", "/v1/sse connect+synced"),
                      ("POST", "/v1/notifications [to a subscriber]"), ("deliver:sse", "POST to SSE event")},
    "Reader": {("POST", "/v1/notifications [reader seed]"), ("GET", "/v1/notifications/[id]"),
               ("GET", "/v1/users/[user]/notifications"), ("GET", "/v1/users/[user]/inbox")},
}
USERS = {"Sender": 2, "BatchSender": 1, "TopicSender": 1, "Subscriber": 2, "SseSubscriber": 2, "Reader": 2}
EXTRA = {"BatchSender": ["--locust-arg=--herald-batch-size=20", "--locust-arg=--herald-wait-s=0.2"]}  # a few thousand ids to ask back


@pytest.fixture(scope="session")
def load_venv() -> Path:
    """.venv-load, installed (or checked up to date) from requirements/load.txt once per session."""
    result = subprocess.run([str(ROOT / "scripts" / "install-load-deps.sh")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        pytest.skip(f"the load venv cannot be built here (scripts/install-load-deps.sh exited {result.returncode}): "
                    f"{(result.stderr or result.stdout)[-500:]}")
    return ROOT / ".venv-load"


@pytest.fixture(scope="module")
def node(tmp_path_factory, load_venv):
    with run_load.embedded_node(tmp_path_factory.mktemp("load-node") / "data") as node:
        yield node


def run(node: run_load.Node, out: Path, *args: str) -> tuple[int, dict]:
    status = run_load.main(["--host", node.url, "--api-key", node.api_key, "--out", str(out), "--no-install", "--drain-s", "30",
                            "--locust-arg=--herald-wait-s=0.05", *args])
    return status, json.loads((out / "summary.json").read_text())


def request_types(summary: dict) -> set[tuple[str, str]]:
    return {(row["type"], row["name"]) for row in summary["per_type"] if row["requests"] > 0}


@pytest.mark.parametrize("user_class", list(EXPECTED))
def test_each_user_class_runs_five_seconds_with_every_request_type_and_no_failure_or_loss(node, tmp_path, user_class):
    status, summary = run(node, tmp_path, "--classes", user_class, "--users", str(USERS[user_class]), "--spawn-rate", "10",
                          "--duration", "5", *EXTRA.get(user_class, []))
    if summary["topics_missing"]:
        pytest.skip("TopicSender needs the topics feature (issue 10 item 5): the node answers 404 for PUT /v1/topics/{topic}/subscribers")
    missing = EXPECTED[user_class] - request_types(summary)
    assert not missing, f"{user_class}: request types missing from the report: {missing}\n{(tmp_path / 'summary.txt').read_text()}"
    assert summary["failures"] == 0, (tmp_path / "summary.txt").read_text()
    if user_class == "TopicSender":  # each send fans out; then each subscriber's copy is asked after (protocol.topics)
        assert summary["topic_sends"]["sent"] == summary["topic_sends"]["fan-out done"] > 0, (tmp_path / "summary.txt").read_text()
        assert summary["accepted"].get("topic member", 0) > 0 and summary["lost"] == 0, (tmp_path / "summary.txt").read_text()
    else:
        assert summary["lost"] == 0 and summary["checked"] > 0, (tmp_path / "summary.txt").read_text()
    assert status == 0
    report = (tmp_path / "report.html").read_text()
    for kind, name in EXPECTED[user_class]:
        assert f"\"{kind}\"" in report and f"\"{name}\"" in report
    if user_class == "Subscriber":
        web = summary["per_channel"]["web"]
        assert web["accepted"] == web["delivered"] > 0


def test_flash_sale_ramps_spikes_holds_and_falls_in_the_csv_history(node, tmp_path):
    status, summary = run(node, tmp_path, "--classes", "Reader", "--users", "2", "--shape", "flash", "--multiple", "3",
                          "--phases", "ramp=1,base=2,spike=1,hold=2,fall=1,tail=2", "--duration", "9",
                          "--locust-arg=--herald-wait-s=0.5")
    assert status == 0 and summary["failures"] == 0
    with open(tmp_path / "locust_stats_history.csv", newline="") as handle:
        counts = [int(row["User Count"]) for row in csv.DictReader(handle) if row["Name"] == "Aggregated"]
    peak_at = counts.index(max(counts))
    assert max(counts) == 6, counts  # base 2 x 3
    assert 2 in counts[:peak_at], counts  # the base was held before the spike
    assert counts[-1] < 6 and 2 in counts[peak_at:], counts  # and it fell back to the base


def test_distributed_master_and_two_worker_processes_share_the_load_and_measure_deliver_web(node, tmp_path):
    status, summary = run(node, tmp_path, "--classes", "Sender,Subscriber", "--users", "4", "--workers", "2", "--duration", "5",
                          "--weights", "Sender=1,Subscriber=1")
    assert {("deliver:web", "POST to WebSocket frame"), ("POST", "/v1/notifications [web]")} <= request_types(summary), summary
    assert summary["failures"] == 0 and summary["lost"] == 0 and status == 0
    ids_files = list((tmp_path / "ids").glob("sent-*.tsv"))
    assert len(ids_files) == 2  # one per worker process: both sent
