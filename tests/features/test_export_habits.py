"""Export habits a mapping must handle without code: derived opening times, text levels, combined
status columns, one definition of "closed", local times with DST, day order, encodings, separators,
zero-padded ids, extras as features; and init-mapping's draft."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.history import mark_closing, summarize_tickets
from features.schema import SchemaError, normalize_categories, validate_events
from features.snapshots import build_snapshots, find_first_escalations
from features.sources.draft import DraftError, draft_mapping
from features.sources.mapping import (
    Mapping,
    MappingError,
    apply_mapping,
    import_export,
    load_mapping,
    sort_export,
)
from features.synthetic import ExportOptions, simulate_export
from training.config import ParamsError, adopt_mapping, load_params
from training.train import read_event_log

BASE = {
    "name": "desk",
    "columns": {"ticket_id": "Ref", "event_time": "When", "status": ["State", "Sub"], "group": "Team"},
    "created_at": "first_event",
    "closing_statuses": ["Done / Closed"],
    "escalation": {"rule": "level_column", "column": "Level", "levels": ["L1", "L2", "L3"], "type": "hierarchical"},
    "extra": {"product": "Product", "site": "Site"},
    "audit": {"enabled": False},
}


def export(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["Ref", "When", "State", "Sub", "Team", "Level", "Product", "Site"])


def imported(raw: pd.DataFrame, **changes) -> pd.DataFrame:
    mapping = Mapping.model_validate(BASE | changes)
    return validate_events(apply_mapping(sort_export(raw, mapping), mapping)).events


ROWS = [
    ("0007", "2025-03-03T09:00:00+01:00", "Open", "New", "T1", "L1", "P1", "S1"),
    ("0007", "2025-03-03T10:00:00+01:00", "Open", "Working", "T2", "L2", "P1", "S1"),
    ("0007", "2025-03-03T11:00:00+01:00", "Done", "Closed", "T2", "L1", "P1", "S1"),   # handed back: a drop
    ("0008", "2025-03-03T12:00:00+01:00", "Open", "New", "T1", "L2", "P2", "S2"),
    ("0008", "2025-03-03T13:00:00+01:00", "Open", "Working", "T1", "L1", "P2", "S2"),  # a drop only
    ("0008", "2025-03-03T14:00:00+01:00", "Open", "Working", "T1", "L2", "P2", "S2"),  # ... then a rise
]


def test_created_at_from_the_first_event_ids_kept_and_offsets_read():
    events = imported(export(ROWS))
    assert sorted(events["ticket_id"].unique()) == ["0007", "0008"], "zero-padded ids keep their zeros"
    first = events.groupby("ticket_id")["created_at"].nunique()
    assert (first == 1).all()
    assert events.loc[events.ticket_id == "0007", "created_at"].iloc[0] == pd.Timestamp("2025-03-03 08:00", tz="UTC")
    from features.build import compute_ticket_features
    ages = compute_ticket_features(events.assign(snapshot_time=events["event_time"]))["age_hours"]
    assert ages.tolist() == [0, 1, 2, 0, 1, 2], "age_hours counts from the first update, not 0 everywhere"


def test_created_at_from_the_earliest_value_so_far_is_point_in_time():
    raw = export(ROWS).assign(Opened=["2025-03-03T08:30:00+01:00", None, "2025-03-03T07:00:00+01:00",
                                      None, None, None])
    events = imported(raw, created_at={"earliest_of": "Opened"})
    created = events.loc[events.ticket_id == "0007", "created_at"].tolist()
    assert created[:2] == [pd.Timestamp("2025-03-03 07:30", tz="UTC")] * 2, "a later, earlier value is not seen early"
    assert events.loc[events.ticket_id == "0008", "created_at"].iloc[0] == pd.Timestamp("2025-03-03 11:00", tz="UTC")


def test_a_mapping_without_an_opening_time_says_how_to_derive_it():
    with pytest.raises(ValueError, match="created_at: first_event"):
        Mapping.model_validate({k: v for k, v in BASE.items() if k != "created_at"})


def test_text_levels_only_a_rise_counts():
    events = imported(export(ROWS))
    assert events["escalation_level"].tolist() == [0, 1, 0, 1, 0, 1]
    first = find_first_escalations(events)
    assert first["0007"] == pd.Timestamp("2025-03-03 09:00", tz="UTC")
    assert first["0008"] == pd.Timestamp("2025-03-03 13:00", tz="UTC"), "the drop is no escalation, the rise after it is"
    summary = summarize_tickets(events, ["Done / Closed"]).set_index("ticket_id")
    assert summary.loc["0007", "escalated"] == 1


def test_undeclared_or_numeric_less_levels_are_a_clear_error():
    raw = export(ROWS)
    raw.loc[2, "Level"] = "L4"
    with pytest.raises(MappingError, match="'L4'.*escalation.levels"):
        imported(raw)
    with pytest.raises(MappingError, match="holds text.*escalation.levels"):
        imported(export(ROWS), escalation={"rule": "level_column", "column": "Level"})
    named = imported(export(ROWS), escalation={"rule": "level_column", "column": "Level",
                                               "levels": {"l1": 0, "l2": 1, "l3": 2}})
    assert named["escalation_level"].tolist() == [0, 1, 0, 1, 0, 1]


def test_status_and_sub_status_combine_and_one_closing_definition_drives_snapshots():
    events = imported(export(ROWS))
    # Combined, then in the log's one normal form (issue 16: lower case, separators joined by "_").
    assert events["status"].tolist()[:3] == ["open_/_new", "open_/_working", "done_/_closed"]
    # The mapping's closing statuses as users write them are the one definition: they match the
    # raw export's values (the audit) and the normalised log's (snapshots and history) alike.
    params = adopt_mapping(load_params_default(), ["Done / Closed"], [])
    assert params.snapshots.closing == ["done_/_closed"]
    assert mark_closing(pd.Series(["Done / Closed", "Open / New"]), ["Done / Closed"]).tolist() == [True, False]
    assert mark_closing(events["status"], ["Done / Closed"]).tolist() == [False, False, True, False, False, False]
    snaps = build_snapshots(events, closed_statuses=params.snapshots.closing, horizon_hours=None)
    assert "done_/_closed" not in set(snaps["status"]), "a closed update is not a snapshot"
    calm = build_snapshots(events.assign(escalation_level=0), closed_statuses=["Done / Closed"], horizon_hours=None)
    assert calm["status"].tolist() == ["open_/_new", "open_/_working"], "0007's updates before it closed"
    assert calm["ticket_id"].eq("0007").all(), "0008 never ends: no label, no snapshot"
    other = build_snapshots(events.assign(escalation_level=0), closed_statuses=["closed"], horizon_hours=None)
    assert other.empty, "with another definition of closed, 0007 would never end either"
    ended = summarize_tickets(events, ["Done / Closed"]).set_index("ticket_id")["ended_at"]
    assert ended["0007"] == pd.Timestamp("2025-03-03 10:00", tz="UTC") and pd.isna(ended["0008"])
    assert adopt_mapping(load_params_default().model_copy(update={"snapshots": params.snapshots}),
                         ["done / CLOSED"], []).snapshots.closing == ["done_/_closed"], "the same statuses, restated"
    conflicting = load_params_default().model_copy(deep=True)
    conflicting.snapshots.closed_statuses = ["closed"]
    with pytest.raises(ParamsError, match="define the closing statuses once"):
        adopt_mapping(conflicting, ["Done / Closed"], [])


def load_params_default():
    from pathlib import Path

    return load_params(Path(__file__).resolve().parents[2] / "training" / "params.yaml")


def test_extras_are_features_by_default_unless_opted_out_or_flagged(tmp_path):
    raw = simulate_export(300, seed=2, months=3, options=ExportOptions(n_products=40))
    raw["Closing Code"] = raw.groupby("Incident ID")["Update Type"].transform("last")  # back-filled outcome
    path = tmp_path / "export.csv"
    raw.to_csv(path, index=False)
    spec = {"name": "sim", "columns": {"ticket_id": "Incident ID", "event_time": "Changed At",
                                       "status": ["Status", "Sub Status"], "group": "Team"},
            "created_at": "first_event", "closing_statuses": ["Completed / Resolved", "Completed / Closed"],
            "escalation": {"rule": "level_column", "column": "Support Level", "levels": ["L1", "L2", "L3"]},
            "extra": {"product": "Product", "code": "Closing Code", "tier": "Customer Tier"},
            "not_features": ["tier"], "audit": {"known_at_creation": ["Product", "Customer Tier"]}}
    result = import_export(path, Mapping.model_validate(spec))
    assert "Closing Code" in result.excluded
    assert result.feature_extras == ["product"]
    params = adopt_mapping(load_params_default(), spec["closing_statuses"], result.feature_extras)
    assert params.features.extra_categorical == ["product"]
    listed = load_params_default().model_copy(deep=True)
    listed.features.extra_categorical = ["tier"]
    assert adopt_mapping(listed, spec["closing_statuses"], ["product"]).features.extra_categorical == ["tier"]


# --- times ---------------------------------------------------------------------------------------

def test_local_times_the_repeated_dst_hour_follows_each_tickets_update_order():
    # 26 Oct 2025, Europe/Amsterdam: 02:00-03:00 happens twice (first CEST +02:00, then CET +01:00).
    rows = [("1", "2025-10-26 01:30:00", "Open", "New", "T1", "L1", "P1", "S1"),
            ("1", "2025-10-26 02:50:00", "Open", "Working", "T1", "L1", "P1", "S1"),   # first pass (CEST)
            ("1", "2025-10-26 02:10:00", "Open", "Working", "T1", "L2", "P1", "S1"),   # second pass (CET)
            ("1", "2025-10-26 02:10:00", "Open", "Working", "T1", "L2", "P1", "S1"),   # a true duplicate
            ("2", "2025-10-26 02:30:00", "Open", "New", "T1", "L1", "P1", "S1"),
            ("2", "2025-03-30 02:30:00", "Open", "New", "T1", "L1", "P1", "S1")]       # skipped by the clocks
    mapping = Mapping.model_validate(BASE | {"read": {"timezone": "Europe/Amsterdam"}})
    result = validate_events(apply_mapping(sort_export(export(rows), mapping), mapping))
    one = result.events[result.events.ticket_id == "1"]
    assert one["event_time"].tolist() == [pd.Timestamp(t, tz="UTC") for t in
                                          ("2025-10-25 23:30", "2025-10-26 00:50", "2025-10-26 01:10")]
    assert one["escalation_level"].tolist() == [0, 0, 1], "one escalation, in the right place"
    reasons = dict(zip(result.rejects["value"].astype(str), result.rejects["reason"], strict=True))
    assert any("clocks skip it" in v for v in reasons), reasons
    assert "duplicate update (same ticket and time)" in set(result.rejects["reason"])
    assert len(result.rejects) == 2


def test_unknown_time_zone_is_refused_by_name():
    with pytest.raises(ValueError, match="Europe/Amsterdm"):
        Mapping.model_validate(BASE | {"read": {"timezone": "Europe/Amsterdm"}})


def test_day_order_one_way_per_column_never_per_row():
    log = pd.DataFrame({"ticket_id": ["a", "a", "b"], "created_at": ["03/11/2025 08:00", "03/11/2025 08:00",
                                                                     "13/11/2025 08:00"],
                        "event_time": ["03/11/2025 09:00", "04/11/2025 09:00", "13/11/2025 09:00"]})
    events = validate_events(log).events
    assert events.loc[0, "event_time"] == pd.Timestamp("2025-11-03 09:00", tz="UTC"), "read day-first like 13/11"
    both = log.assign(event_time=["03/11/2025 09:00", "11/14/2025 09:00", "13/11/2025 09:00"])
    with pytest.raises(SchemaError, match="event_time.*day-first.*month-first"):
        validate_events(both)
    undecided = [("1", "03/11/2025 09:00", "Open", "New", "T1", "L1", "P1", "S1"),
                 ("1", "04/11/2025 09:00", "Open", "New", "T1", "L1", "P1", "S1")]
    with pytest.raises(MappingError, match="read two ways.*read.dayfirst"):
        imported(export(undecided))
    events = imported(export(undecided), read={"dayfirst": False})
    assert events["event_time"].iloc[1] == pd.Timestamp("2025-04-11 09:00", tz="UTC")
    # A value that reads neither way is that row's problem (rejected), not evidence of a second order.
    corrupt = log.assign(event_time=["03/11/2025 09:00", "32/13/2025 25:61", "13/11/2025 09:00"])
    result = validate_events(corrupt)
    assert result.events["event_time"].tolist() == [pd.Timestamp("2025-11-03 09:00", tz="UTC"),
                                                    pd.Timestamp("2025-11-13 09:00", tz="UTC")]
    assert len(result.rejects) == 1 and "event_time" in str(result.rejects.iloc[0].to_dict())


# --- reading -------------------------------------------------------------------------------------

def test_encoding_and_delimiter_options_with_errors_that_name_them(tmp_path):
    frame = export(ROWS).assign(Team=["Équipe 1"] * 6)
    path = tmp_path / "latin.csv"
    frame.to_csv(path, index=False, sep=";", encoding="latin-1")
    mapping = Mapping.model_validate(BASE)
    with pytest.raises(MappingError, match="read.encoding"):
        import_export(path, mapping)
    latin = Mapping.model_validate(BASE | {"read": {"encoding": "latin-1"}})
    with pytest.raises(MappingError, match="read.delimiter: ';'"):
        import_export(path, latin)
    both = Mapping.model_validate(BASE | {"read": {"encoding": "latin-1", "delimiter": ";"}})
    events = import_export(path, both).events
    assert events["group"].iloc[0] == "Équipe 1" and events["ticket_id"].iloc[0] == "0007"
    with pytest.raises(ValueError, match="unknown encoding"):
        Mapping.model_validate(BASE | {"read": {"encoding": "latin-9000"}})


def test_canonical_csv_keeps_zero_padded_ids_and_names_bad_encodings(tmp_path):
    log = pd.DataFrame({"ticket_id": ["00000001", "00000001"], "customer_id": ["007", "007"],
                        "event_time": ["2025-03-01 09:00", "2025-03-01 10:00"],
                        "created_at": ["2025-03-01 09:00"] * 2, "description": ["Café", "Café"]})
    path = tmp_path / "events.csv"
    log.to_csv(path, index=False)
    frame = read_event_log(path)
    assert frame["ticket_id"].tolist() == ["00000001"] * 2 and frame["customer_id"].iloc[0] == "007"
    log.to_csv(path, index=False, encoding="latin-1")
    with pytest.raises(SchemaError, match="not UTF-8"):
        read_event_log(path)
    log.to_csv(path, index=False, sep=";")
    with pytest.raises(SchemaError, match="read.delimiter"):
        read_event_log(path)


# --- init-mapping --------------------------------------------------------------------------------

def test_draft_of_local_time_export_asks_for_the_zone_and_finds_the_opening_time():
    raw = simulate_export(200, seed=4, months=2, options=ExportOptions(
        offsets=False, drop_created_at=False, text_levels=False, reopen_closed_share=0.0))
    draft = draft_mapping(raw.astype("string"), "local")
    assert draft.created_at == "Opened At"
    assert "timezone: null" in draft.text and "read.timezone" in draft.text
    assert draft.level_candidates[0] == "Support Level"
    mapping = Mapping.model_validate(__import__("yaml").safe_load(draft.text))
    assert mapping.escalation.levels is None, "numeric levels need no list"


def test_draft_refuses_what_is_not_one_row_per_update():
    with pytest.raises(DraftError, match="one row per ticket update"):
        draft_mapping(pd.DataFrame({"a": range(50), "b": ["x"] * 50}))


def test_shipped_mappings_still_load():
    for name in ("servicenow", "example_helpdesk", "example_group_changes"):
        assert load_mapping(name).closing_statuses


# --- high-cardinality categoricals: out-of-fold rates, the same online ---------------------------

def test_out_of_fold_rates_hide_a_tickets_own_label_and_serve_identically():
    from features.build import FeatureBuilder, find_rate_folds
    from features.online import OnlineFeatures

    raw = simulate_export(400, seed=6, months=3, options=ExportOptions(n_products=80))
    mapping = Mapping.model_validate({
        "name": "sim", "columns": {"ticket_id": "Incident ID", "event_time": "Changed At",
                                   "status": ["Status", "Sub Status"], "group": "Team", "category": "Category"},
        "created_at": "first_event", "closing_statuses": ["Completed / Resolved", "Completed / Closed"],
        "escalation": {"rule": "level_column", "column": "Support Level", "levels": ["L1", "L2", "L3"]},
        "extra": {"product": "Product"}, "audit": {"enabled": False}})
    events = validate_events(apply_mapping(sort_export(raw, mapping), mapping)).events
    snaps = build_snapshots(events, horizon_hours=None, closed_statuses=mapping.closing_statuses)
    train = snaps[snaps["created_at"] <= snaps["created_at"].quantile(0.7)]
    builder = FeatureBuilder(text_enabled=False, extra_categorical=["product"], target_rate_min_levels=30).fit(
        train, summarize_tickets(events, mapping.closing_statuses))
    assert "product_rate" in builder.feature_names_ and "category_rate" not in builder.feature_names_
    features = builder.transform(snaps)
    # A training ticket's rate comes from the other folds: flipping its own labels changes nothing for it.
    ticket = train["ticket_id"].iloc[0]
    flipped = train.assign(escalates=lambda f: np.where(f["ticket_id"] == ticket, 1 - f["escalates"], f["escalates"]))
    again = FeatureBuilder(text_enabled=False, extra_categorical=["product"], target_rate_min_levels=30).fit(
        flipped, summarize_tickets(events, mapping.closing_statuses))
    mine = (snaps["ticket_id"] == ticket).to_numpy()
    assert (again.transform(snaps)["product_rate"].to_numpy()[mine] == features["product_rate"].to_numpy()[mine]).all()
    later = (snaps["created_at"] > builder.history_as_of_).to_numpy()
    table = builder.rates_["product"]
    expected = normalize_categories(snaps.loc[later, "product"]).map(table["all"]).astype(float).fillna(table["prior"]).astype("float32")
    assert (features.loc[later, "product_rate"].to_numpy() == expected.to_numpy()).all(), "later tickets: all rows"
    assert len(set(find_rate_folds(train["ticket_id"].unique()))) == 5
    # The service computes the same values from a ticket's JSON, extras included.
    online = OnlineFeatures(builder)
    rows = []
    for row in snaps.head(150).itertuples(index=False):
        rows.append({"ticket_id": row.ticket_id, "event_time": row.event_time.isoformat(),
                     "created_at": row.created_at.isoformat(), "status": row.status, "group": row.group,
                     "category": row.category, "extra": {"product": row.product}})
    got = online.transform_many(rows)[0][:, online.position["product_rate"]]
    single = [online.transform_many([r])[0][0, online.position["product_rate"]] for r in rows[:20]]
    want = features["product_rate"].to_numpy()[:150]
    assert (got == want).all() and (np.array(single) == want[:20]).all()
