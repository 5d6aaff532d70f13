"""The report's numbers are the training run's numbers, in JSON, CSV and the HTML page."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from bundle.report import CAPACITY_SHARES, REPORT_FILES, REPORT_SOURCE, SEGMENTS


def test_metrics_match_training(report_json, small_result):
    metrics, logged = report_json["metrics"], small_result.metrics
    for key, value in metrics["model"].items():
        assert value == pytest.approx(logged[f"test_{key}"], rel=1e-12, abs=1e-12), key
    for key, value in metrics["logistic_baseline"].items():
        assert value == pytest.approx(logged[f"baseline_logistic_{key}"], rel=1e-12, abs=1e-12), key
    assert metrics["priority_rule_baseline"]["roc_auc"] == pytest.approx(logged["baseline_priority_rule_roc_auc"])


def test_capacity_matches_training_and_is_consistent(report_json, small_result):
    rows = {round(r["share_reviewed"], 2): r for r in report_json["capacity"]}
    assert sorted(rows) == sorted(CAPACITY_SHARES)
    for share in small_result.params.evaluation.top_shares:
        pct = int(round(share * 100))
        row = rows[round(share, 2)]
        assert row["share_of_escalations_caught"] == pytest.approx(small_result.metrics[f"test_recall_at_{pct}pct"])
        assert row["precision"] == pytest.approx(small_result.metrics[f"test_precision_at_{pct}pct"])
    y = small_result.test_scores["escalates"].to_numpy()
    for row in report_json["capacity"]:
        assert row["reviews"] == max(1, round(len(y) * row["share_reviewed"]))
        assert row["escalations_total"] == y.sum()
        assert row["escalations_caught"] / row["escalations_total"] == pytest.approx(row["share_of_escalations_caught"])
        assert row["reviews_per_caught_escalation"] == pytest.approx(row["reviews"] / row["escalations_caught"])
    caught = [r["share_of_escalations_caught"] for r in report_json["capacity"]]
    assert caught == sorted(caught)


def test_earliness_confusion_and_importance_match_training(report_json, small_result):
    logged = small_result.metrics
    for row in report_json["earliness"]:
        expected = logged[f"test_roc_auc_position_{row['position']}"]
        assert (row["roc_auc"] is None and np.isnan(expected)) or row["roc_auc"] == pytest.approx(expected)
    confusion = report_json["priority_confusion"]
    assert confusion["matrix"] == small_result.confusion.to_numpy().tolist()
    assert confusion["accuracy"] == pytest.approx(logged["test_priority_accuracy"])
    assert confusion["macro_f1"] == pytest.approx(logged["test_priority_macro_f1"])
    assert confusion["typed"]["accuracy"] == pytest.approx(logged["baseline_typed_priority_accuracy"])
    importance = pd.DataFrame(report_json["importance"]).set_index("feature")
    expected = small_result.importance.set_index("feature")
    assert importance.index.tolist() == expected.index.tolist()
    np.testing.assert_allclose(importance["mean_abs_contribution"], expected["mean_abs_contribution"], rtol=1e-9)
    np.testing.assert_allclose(importance["gain"], expected["gain"], rtol=1e-9)


def test_headline_and_segments_add_up(report_json, small_result):
    head, test = report_json["headline"], small_result.test_scores
    tickets = small_result.tickets.drop_duplicates("ticket_id")  # a reopened ticket has a row per closed stretch
    assert head["tickets"] == len(tickets)
    assert head["escalated_tickets"] == int(tickets["escalated"].sum())
    assert head["test_snapshots"] == len(test)
    assert head["test_tickets"] == test["ticket_id"].nunique()
    assert head["test_snapshot_escalation_rate"] == pytest.approx(small_result.metrics["test_base_rate"])
    assert {"category", "channel", "customer_tier", "group", "escalation_type_later"} <= set(report_json["segments"])
    assert set(report_json["segments"]) <= set(SEGMENTS)
    for name, rows in report_json["segments"].items():
        assert sum(r["snapshots"] for r in rows) == len(test), name
        assert sum(r["escalations"] for r in rows) == test["escalates"].sum(), name
        assert sum(r["share_of_escalations"] for r in rows) == pytest.approx(1.0), name
    by_type = {r["value"]: r for r in report_json["segments"]["escalation_type_later"]}
    assert by_type["not escalated"]["escalations"] == 0
    assert len(by_type) > 1, "escalated test rows should carry the type of their escalation"


def test_drivers_are_described_in_words(report_json):
    drivers = report_json["drivers"]
    assert len(drivers) >= 5
    assert [d["feature"] for d in drivers] == [r["feature"] for r in report_json["importance"][: len(drivers)]]
    for driver in drivers:
        assert driver["direction"] and driver["sentence"].endswith(".")
        assert sum(b["rows"] for b in driver["bins"]) == report_json["headline"]["test_snapshots"]
    assert any("as often as the rest" in d["sentence"] for d in drivers)


class _PageText(HTMLParser):
    def __init__(self):
        super().__init__()
        self.text, self.tags, self.links = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.links += [v for k, v in attrs if k in ("src", "href") and v]

    def handle_data(self, data):
        self.text.append(data)


def test_html_is_self_contained_and_shows_the_same_numbers(report_html, report_json):
    page = _PageText()
    page.feed(report_html)
    text = re.sub(r"\s+", " ", " ".join(page.text))
    assert "script" not in page.tags and "iframe" not in page.tags
    assert all(link.startswith("data:") or link.startswith("#") for link in page.links), page.links
    assert "@media print" in report_html and "@page" in report_html
    assert page.tags.count("svg") >= 8 + len(report_json["segments"])
    head = report_json["headline"]
    assert f"{head['tickets']:,}" in text and f"{head['escalated_tickets']:,}" in text
    assert report_json["model"]["version"] in text
    for row in report_json["capacity"]:
        assert f"{row['share_of_escalations_caught']:.0%}" in text
        assert f"{row['reviews_per_caught_escalation']:.1f}" in text
    metrics = report_json["metrics"]
    assert f"{metrics['model']['roc_auc']:.3f}" in text and f"{metrics['logistic_baseline']['roc_auc']:.3f}" in text
    for driver in report_json["drivers"]:
        assert driver["label"] in text
    for limit in report_json["limits"]:
        assert limit.split(":")[0][:40] in text


def test_csv_copies_match_the_json(report_written, report_json):
    folder = report_written["dir"]
    assert sorted(p.name for p in folder.iterdir()) == sorted((*REPORT_FILES, REPORT_SOURCE))
    capacity = pd.read_csv(folder / "capacity.csv")
    np.testing.assert_allclose(capacity["share_of_escalations_caught"],
                               [r["share_of_escalations_caught"] for r in report_json["capacity"]])
    segments = pd.read_csv(folder / "segments.csv")
    assert set(segments["segment"]) == set(report_json["segments"])
    metrics = pd.read_csv(folder / "metrics.csv", index_col="metric")
    assert metrics.loc["roc_auc", "model"] == pytest.approx(report_json["metrics"]["model"]["roc_auc"])
    drivers = pd.read_csv(folder / "drivers.csv")
    assert drivers["feature"].tolist() == [r["feature"] for r in report_json["importance"]]


def test_each_kind_of_escalation_has_its_training_numbers(report_json, report_written, report_html, small_result):
    """The by-type section: one row per trained label, the primary first, with the run's own figures."""
    types = report_json["types"]
    assert [t["name"] for t in types] == [label.name for label in small_result.labels]
    for row, label in zip(types, small_result.labels, strict=True):
        assert row["roc_auc"] == pytest.approx(label.metrics["test_roc_auc"], rel=1e-12), label.name
        assert row["roc_auc_logistic"] == pytest.approx(label.metrics["baseline_logistic_roc_auc"], rel=1e-12)
        assert row["snapshots"] == len(label.test_scores)
        ten = next(c for c in row["capacity"] if c["share_reviewed"] == 0.10)
        assert ten["share_of_escalations_caught"] == pytest.approx(label.metrics["test_recall_at_10pct"])
        assert [d["feature"] for d in row["drivers"]] == label.importance["feature"].head(len(row["drivers"])).tolist()
        assert row["escalation_type"] == label.escalation_type
    table = pd.read_csv(report_written["dir"] / "types.csv")
    trained = table["not_trained"].isna()
    assert table.loc[trained, "label"].tolist() == [t["name"] for t in types]
    # A label asked for but not trained (too rare here) is named with its reason, never silently dropped.
    assert dict(zip(table.loc[~trained, "label"], table.loc[~trained, "not_trained"], strict=True)) == \
        small_result.skipped_labels == report_json["labels_not_trained"]
    assert 'id="types"' in report_html and all(t["definition"] in report_html for t in types)
