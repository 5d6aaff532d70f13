"""The replay backtest: its bookkeeping on hand-made observations, and a short real replay through the
store and the watcher whose alert count the evaluation reproduces exactly."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from click.testing import CliRunner

from serving.replay import (
    ReplayRun,
    episode_peaks,
    evaluate_replay,
    find_escalations,
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
    line = next(s for s in out.splitlines() if s.startswith("alerts raised by the store"))
    store_count = int(line.split(":")[1].split("(")[0])
    table_count = int(line.split("counts ")[1].split(")")[0])
    assert store_count == table_count


def test_replay_cli_refuses_a_bad_tick(serving_models_dir, small_events_path):
    from cli.main import main

    result = CliRunner().invoke(main, ["replay", "--data", str(small_events_path), "--tick", "often",
                                       "--model", str(serving_models_dir / "current")])
    assert result.exit_code != 0 and "not a duration" in result.output
