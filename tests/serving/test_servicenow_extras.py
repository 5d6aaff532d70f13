"""Serving parity for a ServiceNow-trained model: the mapping's extra fields (opened_by, location,
symptom, impact, ...) reach the served model through /v1/integrations/servicenow.

A small export in the incident audit log's own shape is made here, imported with the shipped
servicenow mapping, trained with the source's params and served; incidents posted as
ServiceNow records must get the probability training computed for the same snapshot.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.settings import Settings
from features.sources.mapping import import_export, load_mapping, write_canonical
from serving.adapters import adapt_payload
from serving.app import close_app
from tests.helpers import make_servicenow_export
from tests.serving.conftest import AUTH, make_settings
from training.config import load_params
from training.packaging import point_current, write_bundle
from training.train import train_models

PARAMS = "training/params_servicenow.yaml"
EXTRAS = ("opened_by", "created_by", "updated_by", "location", "symptom", "impact", "urgency")


def record_time(value: str) -> str:
    """The export's day-first minute as the ServiceNow API writes times."""
    return pd.to_datetime(value, format="%d/%m/%Y %H:%M").strftime("%Y-%m-%d %H:%M:%S")


def to_servicenow_record(row: pd.Series) -> dict:
    """One export row as the ServiceNow table API sends an incident (display values, API times)."""
    record = {key: (None if pd.isna(value) else str(value)) for key, value in row.items()}
    record |= {"opened_at": record_time(row["opened_at"]), "sys_updated_on": record_time(row["sys_updated_at"]),
               "state": row["incident_state"], "location": {"display_value": row["location"], "value": "a1b2"}}
    return {"result": record}


@pytest.fixture(scope="module")
def servicenow_world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("servicenow_extras")
    export = make_servicenow_export()
    export.to_csv(tmp / "export.csv", index=False)
    imported = import_export(tmp / "export.csv", load_mapping("servicenow"))
    events_path = write_canonical(imported.events, tmp / "events.parquet")
    params = load_params(PARAMS)
    params = params.model_copy(update={
        "num_threads": 1,
        "split": params.split.model_copy(update={"train": 0.6, "valid": 0.1, "test": 0.3}),
        "features": params.features.model_copy(update={"min_category_count": 5}),
        "escalation_model": params.escalation_model.model_copy(update={"n_estimators": 60,
                                                                     "min_data_per_group": 20}),
        "priority_model": params.priority_model.model_copy(update={"n_estimators": 20}),
    })
    result = train_models(events_path, params)
    models_dir = tmp / "models"
    point_current(models_dir, write_bundle(result, models_dir, "v1-servicenow"))
    return export, result, models_dir


def map_servicenow(body: dict) -> dict:
    [event] = adapt_payload("servicenow", body, {}, Settings()).events
    return event


def iso(value: str) -> str:
    """A ServiceNow time (UTC) as the adapter writes it."""
    return pd.Timestamp(value, tz="UTC").isoformat()


def test_adapter_carries_the_mappings_extra_fields():
    row = make_servicenow_export(n_incidents=3).iloc[1]
    ticket = map_servicenow(to_servicenow_record(row))
    assert ticket["extra"] == {"opened_by": row["opened_by"], "created_by": row["sys_created_by"],
                               "updated_by": row["sys_updated_by"], "location": row["location"],
                               "symptom": row["u_symptom"], "impact": row["impact"], "urgency": row["urgency"]}
    assert (ticket["status"], ticket["agent_messages"]) == ("open", 1)
    # ISO times are times, not "2025 - ..." display codes.
    assert (ticket["created_at"], ticket["event_time"]) == (iso(record_time(row["opened_at"])),
                                                            iso(record_time(row["sys_updated_at"])))
    raw_codes = map_servicenow({"number": "INC1", "opened_at": "2025-01-01 10:00:00", "impact": "1", "urgency": 3})
    assert raw_codes["extra"] == {"impact": "1 - High", "urgency": "3 - Low"}


def test_served_servicenow_incident_gets_the_training_score(servicenow_world):
    from serving import create_app

    export, result, models_dir = servicenow_world
    used = set(result.builder.categorical_features_)
    assert {"opened_by", "location", "symptom", "updated_by", "impact"} <= used, "the model must use the extras"
    importance = result.importance.set_index("feature")["splits"]
    assert importance.reindex([c for c in EXTRAS if c in used]).sum() > 0

    # Test-period snapshots, each matched to its export row (the last row of that ticket and minute).
    scores = result.test_scores.drop_duplicates(["ticket_id", "snapshot_time"]).head(40)
    export_time = pd.to_datetime(export["sys_updated_at"], format="%d/%m/%Y %H:%M", utc=True)
    last_rows = export.assign(t=export_time).drop_duplicates(["number", "t"], keep="last").set_index(["number", "t"],
                                                                                                drop=False)

    # Stateless: with the ticket store on, the second record (extras left out) would keep the stored extras.
    app = create_app(make_settings(models_dir, state="off"))
    app.config.update(TESTING=True)
    try:
        client = app.test_client()
        served, without_extras = [], []
        for ticket_id, snapshot_time in zip(scores["ticket_id"], scores["snapshot_time"], strict=True):
            record = to_servicenow_record(last_rows.loc[(ticket_id, snapshot_time)].drop(labels="t"))
            response = client.post("/v1/integrations/servicenow", json=record, headers=AUTH)
            assert response.status_code == 200, response.get_json()
            served.append(response.get_json()["escalation"]["probability"])
            for source in ("opened_by", "sys_created_by", "sys_updated_by", "location", "u_symptom", "impact",
                           "urgency"):
                record["result"].pop(source)
            bare = client.post("/v1/integrations/servicenow", json=record, headers=AUTH)
            without_extras.append(bare.get_json()["escalation"]["probability"])
    finally:
        close_app(app)
    np.testing.assert_allclose(served, scores["probability"].to_numpy(), rtol=0, atol=1e-9)
    changed = np.abs(np.array(served) - np.array(without_extras)) > 1e-6
    assert changed.mean() > 0.5, "the extras must reach the served model (as 'not set' the scores differ)"


def test_extra_object_is_validated(servicenow_world):
    from serving import create_app

    _, result, models_dir = servicenow_world
    app = create_app(make_settings(models_dir))
    app.config.update(TESTING=True)
    try:
        ticket = {"ticket_id": "T1", "event_time": "2016-05-01T10:00:00", "created_at": "2016-05-01T09:00:00",
                  "extra": {"opened by!": "x"}}
        response = app.test_client().post("/v1/score", json=ticket, headers=AUTH)
        assert response.status_code == 422
        assert any("extra" in d["field"] for d in response.get_json()["details"])
        ticket["extra"] = {"opened_by": "Opened by  1", "location": None, "impact": 2}
        assert app.test_client().post("/v1/score", json=ticket, headers=AUTH).status_code == 200
    finally:
        close_app(app)
