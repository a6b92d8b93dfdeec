"""loadtests/run_load.py's own parts, without locust: the /metrics deltas, the ids files, the report folder."""

from __future__ import annotations

import pytest

from loadtests import run_load

BEFORE = """# HELP herald_deliveries_total Delivery attempts concluded by this node's consumers, by channel and outcome.
# TYPE herald_deliveries_total counter
herald_deliveries_total{channel="web",outcome="delivered"} 10.0
herald_deliveries_total{channel="sms",outcome="delivered"} 4.0
herald_bus_consumer_lag_records{topic="herald.web",partition="0"} 0.0
process_cpu_seconds_total 1.5
"""
AFTER = """herald_deliveries_total{channel="web",outcome="delivered"} 110.0
herald_deliveries_total{channel="sms",outcome="delivered"} 4.0
herald_deliveries_total{channel="sms",outcome="retry"} 2.0
herald_bus_consumer_lag_records{topic="herald.web",partition="0"} 3.0
herald_bus_consumer_lag_records{topic="herald.web",partition="1"} 4.0
process_cpu_seconds_total 9.5
"""


def test_metrics_deltas_per_channel_and_outcome_and_the_lag_at_the_end():
    summary = run_load.metrics_summary(run_load.parse_metrics(BEFORE), run_load.parse_metrics(AFTER))
    assert summary["deliveries_per_channel"] == {"sms": {"retry": 2.0}, "web": {"delivered": 100.0}}
    assert summary["bus_lag_records_at_end"] == 7.0
    assert "process_cpu_seconds_total" not in str(summary["counter_deltas"])  # only Herald's families
    assert summary["source"].startswith("/metrics")


def test_without_metrics_the_summary_says_the_counters_come_from_the_api():
    assert "from the API alone" in run_load.metrics_summary(None, None)["source"]


def test_ids_files_of_every_process_are_read(tmp_path):
    (tmp_path / "sent-a-1.tsv").write_text("01A\tsingle\temail,web\n01B\tbatch\tweb\n")
    (tmp_path / "sent-b-2.tsv").write_text("01C\ttopic\tweb\n")
    (tmp_path / "cpu-a-1.txt").write_text("1.0\n")
    assert run_load.read_sent(tmp_path) == [("01A", "single", ["email", "web"]), ("01B", "batch", ["web"]), ("01C", "topic", ["web"])]


def test_a_topic_sends_subscribers_are_read_from_its_fourth_column(tmp_path):
    (tmp_path / "sent-a-1.tsv").write_text("01T\ttopic\tweb\tuser-:3\n01A\tsingle\tweb\n")
    assert run_load.read_topic_members(tmp_path) == {"01T": ["user-0", "user-1", "user-2"]}
    assert run_load.read_sent(tmp_path) == [("01T", "topic", ["web"]), ("01A", "single", ["web"])]


def test_a_folder_that_is_not_a_report_is_never_emptied(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "precious").write_text("keep")
    with pytest.raises(SystemExit, match="not a report folder"):
        run_load.main(["--out", str(tmp_path), "--no-install", "--duration", "1"])
    assert (tmp_path / "data" / "precious").read_text() == "keep"


def test_bad_options_are_refused_by_name():
    with pytest.raises(SystemExit):
        run_load.parse_args(["--classes", "Sender,Nobody"])
    with pytest.raises(SystemExit):
        run_load.parse_args(["--processes", "2", "--workers", "2"])
