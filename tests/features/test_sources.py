"""Mapping-file import, the leakage audit and the counter_rise label, on small exports made here."""

from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner

from cli.main import main
from features.audit import audit_columns
from features.schema import validate_events
from features.snapshots import build_snapshots
from features.sources.mapping import (
    MAPPINGS_DIR,
    Mapping,
    MappingError,
    apply_mapping,
    import_export,
    label_tickets,
    load_mapping,
    sort_export,
)

UPDATES = [(0, "08:00"), (0, "09:00"), (0, "12:00"), (1, "10:00")]  # (days after opening, time)


def make_export(n_tickets: int = 40) -> pd.DataFrame:
    """Tickets of 4 updates; `final_code` is back-filled on every row; `closing_note` appears at close."""
    rows = []
    for i in range(n_tickets):
        escalates = i % 3 == 0
        for k, (days, time) in enumerate(UPDATES):
            rows.append({
                "id": f"T{i:03d}", "updated": f"{1 + i % 20 + days:02d}/03/2024 {time}",
                "opened": f"{1 + i % 20:02d}/03/2024 07:55", "prio": "2 - High" if i % 4 else "1 - Critical",
                "team": ["Desk", "L2", "L3" if escalates else "L2", "L3" if escalates else "L2"][k],
                "state": ["New", "Active", "Active", "Closed"][k], "sla_ok": "false" if escalates and k == 3 else "true",
                "final_code": "code A" if escalates else "code B", "closing_note": "done" if k == 3 else "?",
                "resolved": f"{1 + i % 20:02d}/03/2024 20:00" if i % 2 else f"{1 + i % 20:02d}/04/2024 20:00",
                "seq": k,
            })
    return pd.DataFrame(rows)


MAPPING = {
    "name": "test", "read": {"na_values": ["?"], "time_format": "%d/%m/%Y %H:%M", "order_by": ["seq"]},
    "columns": {"ticket_id": "id", "event_time": "updated", "created_at": "opened", "priority": "prio",
                "group": "team", "status": "state"},
    "values": {"priority": {"1 - Critical": "urgent", "2 - High": "high"}, "status": {"Closed": "closed"}},
    "text": {"description": ["team", "final_code"]},
    "escalation": {"rule": "flag_turns", "column": "sla_ok", "value": False, "type": "time_based"},
    "priority_target": {"rule": "resolution_hours", "column": "resolved", "buckets_hours": [24, 168],
                        "classes": ["normal", "high", "urgent"]},
    "audit": {"known_at_creation": ["opened"]},
}


def test_apply_mapping_translates_columns_codes_times_and_rules():
    mapping = Mapping.model_validate(MAPPING)
    raw = sort_export(make_export(), mapping)
    events = validate_events(apply_mapping(raw, mapping)).events
    assert len(events) == 160
    assert set(events["priority"]) == {"urgent", "high"}
    assert events["event_time"].dt.month.eq(3).all()  # day-first: 01/03 is the 1st of March
    first = events[events["ticket_id"] == "T000"]
    assert first["escalation_level"].tolist() == [0, 0, 0, 1]
    assert first["escalation_type"].iloc[-1] == "time_based"
    assert events.groupby("ticket_id")["target_priority"].last().isin(["normal", "urgent"]).all()
    assert "L2" in first["description"].iloc[1]


def test_value_changes_rule_skips_routine_handoffs():
    mapping = Mapping.model_validate(MAPPING | {"escalation": {"rule": "value_changes", "column": "team",
                                                               "routine_changes": 1}})
    events = apply_mapping(sort_export(make_export(), mapping), mapping)
    levels = events.groupby("ticket_id")["escalation_level"].max()
    assert levels["T000"] == 1 and levels["T001"] == 0  # Desk->L2 is routine; ->L3 escalates


def test_audit_flags_backfilled_and_closing_columns_and_the_import_drops_them(tmp_path):
    path = tmp_path / "export.csv"
    make_export().to_csv(path, index=False)
    result = import_export(path, Mapping.model_validate(MAPPING))
    table = result.audit.set_index("column")
    assert table.loc["final_code", "flagged"], table.loc["final_code", "reasons"]
    assert "never changes" in table.loc["final_code", "reasons"]
    assert "closing update" in table.loc["closing_note", "reasons"]
    assert "later than the update" in table.loc["resolved", "reasons"]
    assert not table.loc["team", "flagged"] and not table.loc["opened", "flagged"]
    assert "final_code" in result.excluded
    assert not result.events["description"].str.contains("code").any(), "an excluded column reached a feature"


def test_keep_overrides_the_audit(tmp_path):
    path = tmp_path / "export.csv"
    make_export().to_csv(path, index=False)
    mapping = Mapping.model_validate(MAPPING | {"audit": {"known_at_creation": ["opened"], "keep": ["final_code"]}})
    result = import_export(path, mapping)
    assert "final_code" not in result.excluded
    assert result.events["description"].str.contains("code").all()


def test_predicts_label_check_flags_a_column_that_gives_the_answer_away():
    raw = make_export(200)
    mapping = Mapping.model_validate(MAPPING)
    raw = sort_export(raw, mapping)
    events = apply_mapping(raw, mapping)
    labels = {"sla": label_tickets(events)}
    raw["oracle"] = raw["id"].map(labels["sla"]).map({1: "x", 0: "y"})
    raw["oracle"] = raw["oracle"].where(raw["seq"] != 1, "z")  # changes, so only the AUC check can see it
    table = audit_columns(raw, events["ticket_id"], events["event_time"], events["status"].eq("closed"), labels)
    reasons = table.set_index("column").loc["oracle", "reasons"]
    assert "ROC-AUC 1.000" in reasons


def test_counter_rise_label_counts_rises_after_each_snapshot():
    events = validate_events(pd.DataFrame({
        "ticket_id": ["a"] * 5, "event_time": pd.date_range("2024-01-01", periods=5, freq="h"),
        "created_at": "2024-01-01", "reassignment_count": [0, 1, 1, 2, 3],
        "status": ["new", "active", "active", "active", "closed"],
    })).events
    snaps = build_snapshots(events, rule="counter_rise", counter="reassignment_count", min_rise=2, horizon_hours=None)
    assert snaps["escalates"].tolist() == [1, 1, 1, 0]


def test_shipped_mappings_are_valid():
    names = sorted(p.stem for p in MAPPINGS_DIR.glob("*.yaml"))
    assert "servicenow" in names and len(names) >= 3
    for name in names:
        assert load_mapping(name).name


@pytest.mark.parametrize("change, message", [
    ({"columns": {"ticket_id": "id", "event_time": "updated"}}, "created_at"),
    ({"columns": {"ticket_id": "id", "event_time": "updated", "created_at": "opened", "tiket": "x"}}, "tiket"),
    ({"escalation": {"rule": "flag_turns", "column": "sla_ok"}}, "value"),
    ({"extra": {"group": "team"}}, "already canonical"),
])
def test_bad_mapping_is_named(tmp_path, change, message):
    path = tmp_path / "bad.yaml"
    import yaml

    path.write_text(yaml.safe_dump(MAPPING | change))
    with pytest.raises(MappingError, match=message):
        load_mapping(path)


def test_cli_audit_and_bad_input_exit_2(tmp_path):
    import yaml

    export, mapping_path = tmp_path / "export.csv", tmp_path / "m.yaml"
    make_export().to_csv(export, index=False)
    mapping_path.write_text(yaml.safe_dump(MAPPING))
    runner = CliRunner()
    env = {"ESCALATION_RISK_PROJECT_DIR": str(tmp_path)}
    ok = runner.invoke(main, ["audit-data", "--mapping", str(mapping_path), "--data", str(export)], env=env)
    assert ok.exit_code == 0, ok.output
    assert "final_code" in ok.output and (tmp_path / "reports" / "audit.csv").exists()
    missing_column = MAPPING | {"columns": MAPPING["columns"] | {"channel": "nope"}}
    mapping_path.write_text(yaml.safe_dump(missing_column))
    bad = runner.invoke(main, ["train", "--mapping", str(mapping_path), "--data", str(export), "--no-mlflow"], env=env)
    assert bad.exit_code == 2 and "nope" in bad.output and "Traceback" not in bad.output
    absent = runner.invoke(main, ["train", "--source", "mapping", "--data", str(export)], env=env)
    assert absent.exit_code == 2 and "--mapping" in absent.output


def test_extra_columns_are_copied_unless_the_audit_flags_them(tmp_path):
    path = tmp_path / "export.csv"
    make_export().to_csv(path, index=False)
    mapping = Mapping.model_validate(MAPPING | {"extra": {"team_code": "team", "final": "final_code"}})
    result = import_export(path, mapping)
    assert "final" not in result.events, "final_code is back-filled: the audit leaves it out, extra or not"
    assert set(result.events["team_code"]) == {"Desk", "L2", "L3"}
