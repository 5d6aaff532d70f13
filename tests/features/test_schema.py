import pandas as pd
import pytest

from features.schema import (
    SchemaError,
    check_reject_share,
    normalize_categories,
    normalize_category,
    validate_events,
)
from tests.helpers import make_log, make_ticket


def _log() -> pd.DataFrame:
    return make_log(
        make_ticket("T1", "2025-03-01 09:00", [{"hours": 1}, {"hours": 2, "customer_messages": 2}]),
        make_ticket("T2", "2025-03-01 10:00", [{"hours": 3}], priority="P1"),
    )


def test_clean_log_passes_with_canonical_types():
    result = validate_events(_log())
    assert len(result.rejects) == 0
    assert len(result.events) == 5
    assert str(result.events["event_time"].dtype) == "datetime64[ns, UTC]"
    assert result.events["customer_messages"].dtype == "int64"
    assert set(result.events.loc[result.events.ticket_id == "T2", "priority"]) == {"urgent"}


@pytest.mark.parametrize(
    ("column", "bad_value", "reason"),
    [
        ("event_time", "not a time", "unparseable or missing time"),
        ("created_at", None, "unparseable or missing time"),
        ("customer_messages", -3, "negative counter"),
        ("reassignment_count", "lots", "not a number"),
        ("ticket_id", "  ", "missing ticket id"),
        ("event_time", pd.Timestamp("2025-02-01", tz="UTC"), "event before ticket creation"),
    ],
)
def test_bad_rows_are_rejected_with_row_column_and_reason(column, bad_value, reason):
    log = _log().astype({column: object})
    log.loc[1, column] = bad_value
    result = validate_events(log)
    assert list(result.rejects.columns) == ["row", "ticket_id", "column", "reason", "value"]
    assert ((result.rejects["row"] == 1) & (result.rejects["column"] == column)
            & (result.rejects["reason"] == reason)).any(), result.rejects
    assert len(result.events) == 4, "only the bad row is dropped"


def test_duplicate_updates_are_rejected_once():
    log = _log()
    log = pd.concat([log, log.iloc[[2]]], ignore_index=True)
    result = validate_events(log)
    dupes = result.rejects[result.rejects["reason"].str.startswith("duplicate")]
    assert dupes["row"].tolist() == [5]
    assert len(result.events) == 5


def test_missing_required_column_names_it():
    with pytest.raises(SchemaError, match="created_at"):
        validate_events(_log().drop(columns=["created_at"]))


def test_too_many_rejects_stops_with_the_common_reasons():
    log = _log().astype({"event_time": object})
    log.loc[[0, 1, 2], "event_time"] = "garbage"
    result = validate_events(log)
    assert result.reject_share == pytest.approx(3 / 5)
    with pytest.raises(SchemaError, match=r"60.0% of 5 rows.*event_time: unparseable"):
        check_reject_share(result, 0.05)
    check_reject_share(result, 0.7)


@pytest.mark.parametrize(("value", "normal"), [
    ("Email", "email"), ("  EMAIL ", "email"), ("Self service", "self_service"), ("self-service", "self_service"),
    ("SELF__SERVICE", "self_service"), ("1 - High", "1_high"), ("Opened by  1", "opened_by_1"), (2, "2"),
    ("---", None), ("", None), (None, None), (float("nan"), None),
])
def test_one_normal_form_for_categorical_values(value, normal):
    assert normalize_category(value) == normal


def test_validated_log_holds_categories_in_normal_form():
    log = _log()
    log["channel"] = ["Email", " email", "E-mail", "Phone", "PHONE"]
    log["status"] = ["Open", "open", "On Hold", "Closed", "closed"]
    log["priority"] = ["P1", "High ", "medium", None, "Urgent"]
    events = validate_events(log).events.set_index(log.index)
    assert events["channel"].tolist() == ["email", "email", "e_mail", "phone", "phone"]
    assert events["status"].tolist() == ["open", "open", "on_hold", "closed", "closed"]
    assert events["priority"].tolist()[:3] + events["priority"].tolist()[4:] == ["urgent", "high", "normal", "urgent"]
    assert events["priority"].isna().tolist() == [False, False, False, True, False]
    assert normalize_categories(pd.Series(["A b", None, "a-B"])).tolist()[::2] == ["a_b", "a_b"]
    before = validate_events(log, normalize=False).events
    assert set(before["channel"]) == {"Email", " email", "E-mail", "Phone", "PHONE"}
