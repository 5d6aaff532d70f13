"""Data tests on the real ServiceNow incident audit log (skipped when the file is absent).

    pytest tests/data/test_servicenow.py --servicenow-path PATH

Default path: ESCALATION_RISK_SERVICENOW_PATH, else ../shared/data/servicenow/ next to the
project. Checks the import (schema, timelines), the labels, the leakage audit's flags, a
tripwire (a first-update ROC-AUC above 0.90 for the SLA label means leaked information),
and the shipped params' out-of-time quality at the level bench/real_servicenow.py measured
(the issue's goals are higher; see the README): minutes of training per label.
"""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from features.build import FeatureBuilder
from features.history import summarize_tickets
from features.schema import validate_events
from features.settings import Settings
from features.snapshots import LABEL, POSITION, build_snapshots
from features.sources.mapping import write_canonical
from features.sources.servicenow import import_servicenow
from training.config import load_params
from training.train import train_models

PARAMS_DIR = Path(__file__).resolve().parents[2] / "training"
MUST_FLAG = {"closed_code", "resolved_by", "resolved_at", "closed_at", "assigned_to", "knowledge"}
CLOSED = ("resolved", "closed")


@pytest.fixture(scope="module")
def servicenow_path(request) -> Path:
    given = request.config.getoption("--servicenow-path")
    path = Path(given) if given else Settings(project_dir=Path(__file__).resolve().parents[2]).resolved_servicenow_path
    if not path.exists():
        pytest.skip(f"ServiceNow export not found at {path}: pass --servicenow-path or set "
                    "ESCALATION_RISK_SERVICENOW_PATH (the file is read in place, never copied into the repo)")
    return path


@pytest.fixture(scope="module")
def imported(servicenow_path):
    return import_servicenow(servicenow_path)


@pytest.fixture(scope="module")
def events(imported):
    result = validate_events(imported.events)
    assert result.reject_share <= 0.01, f"{result.reject_share:.2%} of imported rows rejected"
    return result.events


def test_export_has_the_documented_shape(imported, events):
    assert imported.audit["column"].nunique() == 34  # 36 columns minus ticket id and update time
    assert events["ticket_id"].nunique() > 20_000
    assert events["event_time"].min() >= pd.Timestamp("2016-02-01", tz="UTC")
    assert events["priority"].isin(["low", "normal", "high", "urgent"]).all()
    assert set(events["status"].dropna()) >= {"new", "open", "resolved", "closed"}


def test_audit_flags_the_backfilled_columns(imported):
    flagged = set(imported.audit.loc[imported.audit["flagged"], "column"])
    missing = MUST_FLAG - flagged
    assert not missing, f"the leakage audit missed {sorted(missing)}"
    assert set(imported.excluded) >= MUST_FLAG
    reasons = imported.audit.set_index("column")["reasons"]
    assert "later than the update" in reasons["resolved_at"]
    assert "back-filled" in reasons["assigned_to"]


def test_audit_keeps_the_live_fields(imported):
    flagged = set(imported.audit.loc[imported.audit["flagged"], "column"])
    for live in ("assignment_group", "reassignment_count", "category", "priority", "incident_state", "opened_at"):
        assert live not in flagged, f"{live} changes during the ticket and must stay usable"


def test_importer_leaves_out_what_the_audit_flags(events):
    assert events["agent_id"].isna().all(), "assigned_to is back-filled: it must not become agent_id"
    text = events["description"].astype("string").str.cat(sep=" ")[:2_000_000]
    assert "Resolved_by" not in text and "code_" not in text


def test_timelines_are_coherent(events):
    first = events.groupby("ticket_id").first()
    lag = (first["event_time"] - first["created_at"]) / pd.Timedelta(hours=1)
    assert (lag.between(0, 24)).mean() >= 0.99, "the first logged update should follow the opening"
    drops = events.groupby("ticket_id")["reassignment_count"].diff().lt(0).mean()
    assert drops < 0.001, f"reassignment_count goes down on {drops:.2%} of updates: not a 'so far' counter"


def test_made_sla_turns_false_only_at_the_close(servicenow_path):
    """The finding behind the SLA label: made_sla is never back-filled false onto early updates."""
    raw = pd.read_csv(servicenow_path, na_values="?", usecols=["number", "made_sla", "incident_state", "sys_mod_count"])
    raw = raw.sort_values(["number", "sys_mod_count"], kind="stable")
    turned = raw["made_sla"].eq(False) & raw.groupby("number")["made_sla"].shift().eq(True)
    assert turned.sum() > 5_000
    assert (raw.loc[turned, "incident_state"] == "Closed").mean() > 0.99
    assert not (raw["made_sla"].eq(True) & raw.groupby("number")["made_sla"].cummin().eq(False)).any()


def test_labels_have_plausible_rates(events):
    functional = build_snapshots(events, closed_statuses=CLOSED, horizon_hours=None, rule="counter_rise",
                                 counter="reassignment_count", min_rise=2)
    sla = build_snapshots(events, closed_statuses=CLOSED, horizon_hours=None)
    f_rate = functional.groupby("ticket_id")[LABEL].first().mean()
    s_rate = sla.groupby("ticket_id")[LABEL].first().mean()
    assert 0.10 <= f_rate <= 0.35, f"{f_rate:.1%} of incidents reassigned twice more after the first update"
    assert 0.25 <= s_rate <= 0.55, f"{s_rate:.1%} of incidents miss the SLA"
    escalated = events[events["escalation_level"] > 0]
    assert (escalated["escalation_type"] == "time_based").all()
    assert not sla["status"].isin(CLOSED).any(), "a resolved or closed incident is never a snapshot"


def test_priority_target_is_time_to_resolve(events):
    target = events.groupby("ticket_id")["target_priority"].last().value_counts(normalize=True)
    assert set(target.index) == {"normal", "high", "urgent"}
    assert target.min() > 0.10, f"a time-to-resolve class is nearly empty: {target.to_dict()}"


def test_leakage_tripwire_sla_at_first_update(events):
    """A first-update ROC-AUC above 0.90 for the SLA label on this log means leaked information."""
    snaps = build_snapshots(events, closed_statuses=CLOSED, horizon_hours=None)
    snaps = snaps[snaps[POSITION] == 0].sort_values("created_at", kind="stable").reset_index(drop=True)
    cut = int(len(snaps) * 0.7)
    train, test = snaps.iloc[:cut], snaps.iloc[cut:]
    tickets = summarize_tickets(events, CLOSED)
    builder = FeatureBuilder(text_params={"svd_components": 16}).fit(train, tickets)
    model = lgb.LGBMClassifier(n_estimators=300, learning_rate=0.05, num_leaves=31, verbose=-1, n_jobs=2,
                               random_state=0, deterministic=True, force_row_wise=True)
    model.fit(builder.transform(train), train[LABEL])
    auc = roc_auc_score(test[LABEL], model.predict_proba(builder.transform(test))[:, 1])
    assert auc <= 0.90, f"first-update ROC-AUC {auc:.3f} for SLA-missed: leaked information in the features"
    assert auc >= 0.60, f"first-update ROC-AUC {auc:.3f}: the import lost the signal"
    assert np.isfinite(auc)


@pytest.fixture(scope="module")
def trained(imported, tmp_path_factory):
    """The shipped params for both labels, trained out of time (oldest 70 % fit, newest 30 % test)."""
    path = write_canonical(imported.events, tmp_path_factory.mktemp("servicenow") / "events.parquet")
    return {label: train_models(path, load_params(PARAMS_DIR / name)) for label, name in
            (("sla", "params_servicenow_sla.yaml"), ("functional", "params_servicenow.yaml"))}


def first_update_auc(result, column: str = "probability", position: int = 0) -> float:
    scores = result.test_scores
    at = scores["position"] == position
    return roc_auc_score(scores.loc[at, "escalates"], scores.loc[at, column])


def test_leakage_tripwire_with_the_shipped_features(trained):
    """The extra coded fields and every shipped feature stay below the leak level at the first update."""
    auc = first_update_auc(trained["sla"])
    assert auc <= 0.90, f"first-update ROC-AUC {auc:.3f} for SLA-missed with the shipped params: leaked information"


def test_sla_model_quality_out_of_time(trained):
    """Measured 0.815 at update 1, 0.909 at update 8, ECE 0.033 (bench); goals 0.82 / 0.89 / 0.05."""
    result = trained["sla"]
    first, eighth = first_update_auc(result), first_update_auc(result, position=7)
    logistic = first_update_auc(result, "logistic_probability")
    assert first >= 0.79, f"SLA-missed ROC-AUC at update 1 {first:.3f} fell below the measured level (0.815)"
    assert first > logistic, f"LightGBM {first:.3f} no better than logistic {logistic:.3f} at update 1"
    assert eighth >= 0.89, f"SLA-missed ROC-AUC at update 8 {eighth:.3f} below the goal 0.89"
    assert result.metrics["test_ece"] <= 0.05, f"SLA ECE {result.metrics['test_ece']:.3f} above the goal 0.05"


def test_functional_model_quality_out_of_time(trained):
    """Measured 0.736 at update 1, ECE 0.019 (bench); the goal 0.79 is not reached."""
    result = trained["functional"]
    first = first_update_auc(result)
    logistic = first_update_auc(result, "logistic_probability")
    assert first >= 0.72, f"reassigned-twice ROC-AUC at update 1 {first:.3f} fell below the measured level (0.736)"
    assert first > logistic, f"LightGBM {first:.3f} no better than logistic {logistic:.3f} at update 1"
    assert result.metrics["test_ece"] <= 0.05, f"functional ECE {result.metrics['test_ece']:.3f} above 0.05"
