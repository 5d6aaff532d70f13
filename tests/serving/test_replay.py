"""The replay backtest: its bookkeeping on hand-made observations, and a short real replay through the
store and the watcher whose alert count the evaluation reproduces exactly."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from click.testing import CliRunner

from serving.replay import (
    ReplayRun,
    describe_replay_labels,
    episode_peaks,
    evaluate_replay,
    evaluate_types,
    find_escalations,
    find_label_escalations,
    first_alerts,
    parse_duration,
    score_rule,
    sla_share,
    threshold_for_volume,
)

T0 = datetime(2026, 1, 5, tzinfo=UTC)


def hand_run(rows: list[tuple[int, int, float, float, bool]], ticket_ids: list[str]) -> ReplayRun:
    """Observations (tick, ticket, probability, sla_share, supervisor) on hourly ticks from T0."""
    frame = pd.DataFrame(rows, columns=["tick", "ticket", "probability", "sla_share", "supervisor"])
    frame["above_line"] = frame["probability"] >= 0.5
    ticks = [T0 + timedelta(hours=k) for k in range(int(frame["tick"].max()) + 1)]
    return ReplayRun(ticks, ticket_ids, frame, 0, 0, len(ticket_ids), 1.0, (ticks[0], ticks[-1]))


def test_one_alert_per_open_period_and_lead_times():
    # ticket 0 rises at tick 1, wavers, stays open (one alert); it escalates at 5h.
    # ticket 1 crosses at tick 2, is closed after tick 2 (absent at 3) and reopened at 4: two alerts.
    rows = [(0, 0, 0.2, 0.1, False), (1, 0, 0.6, 0.2, False), (2, 0, 0.4, 0.3, False), (3, 0, 0.7, 0.4, True),
            (0, 1, 0.1, 0.5, False), (1, 1, 0.3, 0.9, False), (2, 1, 0.55, 1.2, False),
            (4, 1, 0.9, 0.1, False)]
    run = hand_run(rows, ["A", "B"])
    obs = episode_peaks(run.observations)
    assert obs.groupby("ticket")["episode"].nunique().to_dict() == {0: 1, 1: 2}
    alerts = first_alerts(obs, obs["above_line"].to_numpy())
    assert alerts[["ticket", "tick"]].values.tolist() == [[0, 1], [1, 2], [1, 4]]
    escalations = pd.DataFrame({"escalated_at": [pd.Timestamp(T0 + timedelta(hours=5)), pd.NaT],
                                "at_creation": [False, False]}, index=["A", "B"])
    result = score_rule("model", "line", alerts, run, escalations)
    assert (result.alerts, result.caught, result.escalations, result.alerts_never_escalated) == (3, 1, 1, 2)
    assert result.lead_hours == (4.0, 4.0, 4.0)  # first alert at 1h, escalation at 5h
    # matched volume: the SLA rule's threshold for 2 alerts is the 2nd largest episode peak
    assert threshold_for_volume(obs, "sla_share", 2) == pytest.approx(0.4)

    table = evaluate_replay(run, escalations, volumes=(1.0,))
    model, sla = table[0], table[1]
    assert model.alerts == 3 and sla.alerts == 3 and sla.threshold.endswith("of SLA elapsed")
    assert table[2].rule == "supervisor request" and table[2].alerts == 1 and table[2].caught == 1


def test_escalation_events_follow_the_label_rule():
    events = pd.DataFrame({
        "ticket_id": ["A", "A", "A", "B", "B", "C"],
        "event_time": pd.to_datetime(["2026-01-01 00:00", "2026-01-01 05:00", "2026-01-01 09:00",
                                      "2026-01-02 00:00", "2026-01-02 03:00", "2026-01-03 00:00"], utc=True),
        "escalation_level": [0, 0, 1, 0, 0, 2], "reassignment_count": [0, 1, 2, 0, 3, 0]})
    level = find_escalations(events, {"rule": "level_rise"})
    assert level.loc["A", "escalated_at"] == pd.Timestamp("2026-01-01 09:00", tz="UTC")
    assert pd.isna(level.loc["B", "escalated_at"]) and bool(level.loc["C", "at_creation"])
    counter = find_escalations(events, {"rule": "counter_rise", "counter": "reassignment_count", "min_rise": 2})
    assert counter.loc["B", "escalated_at"] == pd.Timestamp("2026-01-02 03:00", tz="UTC")


def test_lead_time_per_type_counts_each_labels_own_escalations():
    """Two typed labels: A's first escalation is functional, B's hierarchical. Each label's table row
    counts only its own kind, caught by its own line or by the watcher's (primary) line."""
    events = pd.DataFrame({
        "ticket_id": ["A", "A", "A", "B", "B", "B"],
        "event_time": pd.to_datetime([T0, T0 + timedelta(hours=1), T0 + timedelta(hours=5),
                                      T0, T0 + timedelta(hours=2), T0 + timedelta(hours=6)], utc=True),
        "escalation_level": [0, 0, 1, 0, 0, 1],
        "escalation_type": [None, None, "functional", None, None, "hierarchical"],
        "status": ["open"] * 6, "reassignment_count": [0] * 6})
    metadata = {"labels": [
        {"name": "functional", "primary": False, "rule": "level_rise", "rise_type": "functional",
         "escalation_type": "functional"},
        {"name": "any", "primary": True, "rule": "level_rise"},
        {"name": "hierarchical", "primary": False, "rule": "level_rise", "rise_type": "hierarchical",
         "escalation_type": "hierarchical"}]}
    labels = describe_replay_labels(metadata)
    assert [label.name for label in labels] == ["any", "functional", "hierarchical"]
    assert describe_replay_labels({"labels": metadata["labels"][1:2]}) == []  # one label: no by-type table
    primary = find_escalations(events, {"rule": "level_rise"})
    per_label = find_label_escalations(events, labels, ["closed"], primary)
    assert per_label["functional"]["escalated_at"].notna().to_dict() == {"A": True, "B": False}
    assert per_label["hierarchical"].loc["B", "escalated_at"] == pd.Timestamp(T0 + timedelta(hours=6))
    assert per_label["any"]["escalated_at"].notna().all()
    # ticks 0..4; the primary line fires on A at 1h only; the functional line on A at 0h, the
    # hierarchical line on B at 3h.
    rows = [(k, t, 0.1, 0.0, False) for k in range(5) for t in (0, 1)]
    run = hand_run(rows, ["A", "B"])
    frame = run.observations
    frame["above_line"] = (frame["ticket"] == 0) & (frame["tick"] == 1)
    frame["above_line__functional"] = (frame["ticket"] == 0) & (frame["tick"] >= 0)
    frame["above_line__hierarchical"] = (frame["ticket"] == 1) & (frame["tick"] == 3)
    frame["above_line__any"] = frame["above_line"]
    table = {(r.rule, r.threshold.startswith("its own")): r for r in evaluate_types(run, per_label, labels)}
    own_f, watch_f = table[("functional", True)], table[("functional", False)]
    assert (own_f.escalations, own_f.caught, own_f.lead_hours) == (1, 1, (5.0, 5.0, 5.0))
    assert (watch_f.caught, watch_f.lead_hours) == (1, (4.0, 4.0, 4.0))
    own_h, watch_h = table[("hierarchical", True)], table[("hierarchical", False)]
    assert (own_h.escalations, own_h.caught, own_h.lead_hours) == (1, 1, (3.0, 3.0, 3.0))
    assert watch_h.caught == 0 and watch_h.alerts_never_escalated == 1  # A: never escalates this way
    assert table[("any", False)].escalations == 2


def test_sla_share_and_durations():
    created = "2026-01-05T00:00:00+00:00"
    assert sla_share({"created_at": created, "sla_due_at": "2026-01-05T10:00:00+00:00"},
                     T0 + timedelta(hours=5), {}) == 0.5
    assert sla_share({"created_at": created, "priority": "P1"}, T0 + timedelta(hours=2), {"urgent": 4.0}) == 0.5
    assert math.isnan(sla_share({"created_at": created}, T0, {"urgent": 4.0}))
    assert parse_duration("5m") == timedelta(minutes=5) and parse_duration("1.5h") == timedelta(minutes=90)
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")


def test_replay_cli_on_a_short_window(serving_models_dir, small_events_path, tmp_path, monkeypatch):
    """The real thing on a week of the small history: the store's alerts are what the table counts."""
    from cli.main import main

    monkeypatch.setenv("ESCALATION_RISK_PROJECT_DIR", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    events = pd.read_parquet(small_events_path)
    end = events["created_at"].max()
    start = end - pd.Timedelta(days=7)
    result = CliRunner().invoke(main, ["replay", "--data", str(small_events_path), "--model",
                                       str(serving_models_dir / "current"), "--tick", "1h",
                                       "--from", start.isoformat(), "--store", f"sqlite:///{tmp_path / 'r.db'}"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "SLA timer" in out and "supervisor request" in out and "lead p25" in out
    # The demo params train several labels: lead time per type, each label with its own line.
    bundle_labels = [entry["name"] for entry in json.loads(
        (serving_models_dir / "current" / "metadata.json").read_text())["labels"]]
    assert len(bundle_labels) > 1
    by_type = out.split("by type")[1].split("alerts raised by the store")[0]
    for name in bundle_labels:
        assert f"{name} " in by_type and "its own model's alert line" in by_type
    line = next(s for s in out.splitlines() if s.startswith("alerts raised by the store"))
    store_count = int(line.split(":")[1].split("(")[0])
    table_count = int(line.split("counts ")[1].split(")")[0])
    assert store_count == table_count


def test_replay_cli_refuses_a_bad_tick(serving_models_dir, small_events_path):
    from cli.main import main

    result = CliRunner().invoke(main, ["replay", "--data", str(small_events_path), "--tick", "often",
                                       "--model", str(serving_models_dir / "current")])
    assert result.exit_code != 0 and "not a duration" in result.output


def test_volume_threshold_takes_the_count_nearest_the_target_when_values_repeat():
    """Calibrated probabilities repeat: the 2nd largest maximum (0.5) is shared by four episodes, so
    `>= 0.5` would raise 5 alerts for a target of 2; 0.9 raises 1, the nearest count."""
    obs = pd.DataFrame({"episode": range(6), "probability": [0.9, 0.5, 0.5, 0.5, 0.5, 0.2]})
    assert threshold_for_volume(obs, "probability", 2) == 0.9
    assert threshold_for_volume(obs, "probability", 4) == 0.5   # 5 is nearer 4 than 1
    assert threshold_for_volume(obs, "probability", 6) == 0.2
    assert threshold_for_volume(obs, "probability", 60) == 0.2
    assert threshold_for_volume(obs.iloc[:0], "probability", 2) == float("inf")
