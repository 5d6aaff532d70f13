"""Live history parity: replaying a generated history through POST /v1/events in time order gives, at
every event, the history features that the offline FeatureBuilder computes for that snapshot from
the bundle's history table plus the log as the service had seen it by then (exactly), and the same
score as ModelBundle.score with that history."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pandas as pd
import pytest

from bundle.model import HISTORY, load_bundle
from features.history import HistoryFeatures, summarize_tickets
from features.schema import CANONICAL_COLUMNS, validate_events
from features.synthetic import generate_event_log
from serving.app import close_app
from tests.serving.conftest import AUTH, make_settings
from training.registry import to_wire_format


@pytest.fixture(scope="module")
def bundle(serving_models_dir):
    return load_bundle(serving_models_dir / "current")


@pytest.fixture(scope="module")
def replay_events(bundle, tmp_path_factory) -> pd.DataFrame:
    """A month after the bundle's data, its customers and agents drawn from the bundle's own, busiest first,
    so every as-of count mixes the bundle's history table with what the store learns."""
    path = tmp_path_factory.mktemp("replay") / "events.parquet"
    generate_event_log(path, n_tickets=45, seed=77, start="2026-01-05", months=1)
    events = validate_events(pd.read_parquet(path)).events
    base = pd.read_parquet(bundle.path / HISTORY)
    for column in ("customer_id", "agent_id"):
        known = base[column].value_counts().index.tolist()
        ours = events[column].dropna().unique().tolist()
        renamed = events[column].map(dict(zip(ours, known[: len(ours)], strict=False)))
        events[column] = renamed.fillna(events[column]).astype("string")  # beyond the bundle's: new ones
    events["ticket_id"] = "R" + events["ticket_id"].astype(str)
    return events.sort_values("event_time", kind="stable").reset_index(drop=True)


@pytest.fixture()
def api(serving_models_dir, tmp_path):
    from serving import create_app

    app = create_app(make_settings(serving_models_dir, store_url=f"sqlite:///{tmp_path / 'tickets.db'}", state="on"))
    app.config.update(TESTING=True)
    yield app.test_client()
    close_app(app)


def offline_history(bundle, summary: pd.DataFrame) -> HistoryFeatures:
    """HistoryFeatures fitted on the bundle's table plus the ticket summaries of the events seen so far,
    with the bundle's prior (a learned parameter of the model, not refitted on live data)."""
    table = pd.concat([pd.read_parquet(bundle.path / HISTORY), summary], ignore_index=True)
    fitted = bundle.builder.history_
    history = HistoryFeatures(fitted.windows_days, fitted.smoothing).fit(table)
    history.prior_ = fitted.prior_
    return history


def test_replay_through_events_equals_offline_history_and_score(api, bundle, replay_events):
    names = [n for n in bundle.builder.history_.feature_names_ if n in bundle.builder.feature_names_]
    wire = to_wire_format(replay_events[list(CANONICAL_COLUMNS)]).to_dict(orient="records")
    live_scores, live_features = [], []
    for event in wire:  # the service's side: every event in time order, and what it says right after
        response = api.post("/v1/events", json=event, headers=AUTH)
        assert response.status_code == 200, response.get_json()
        live_scores.append(response.get_json()["escalation"])
        live_features.append(api.get(f"/v1/tickets/{event['ticket_id']}", headers=AUTH).get_json()
                             ["latest_score"]["features"])

    # The offline side: at each event, the history fitted on the bundle's table plus the log cut there
    # (refitted only when the cut's ticket summaries change), then the snapshots of each run scored at once.
    closed = (bundle.metadata.get("params") or {}).get("snapshots.closed_statuses") or ["closed"]
    runs: list[tuple[HistoryFeatures, list[int]]] = []
    previous = None
    for i in range(len(replay_events)):
        cut = replay_events.iloc[: i + 1].sort_values(["ticket_id", "event_time"], kind="stable")
        summary = summarize_tickets(cut, closed).reset_index(drop=True)
        if previous is None or not summary.equals(previous):
            runs.append((offline_history(bundle, summary), []))
            previous = summary
        runs[-1][1].append(i)
    mismatches, counted = [], 0
    for history, rows in runs:
        snapshots = replay_events.iloc[rows].copy()
        snapshots["snapshot_time"] = snapshots["event_time"]
        expected = history.transform(snapshots)
        builder = copy.copy(bundle.builder)
        builder.history_ = history
        reference = dataclasses.replace(bundle, builder=builder).score(replay_events.iloc[rows].copy())
        for k, i in enumerate(rows):
            for name in names:
                if np.float32(expected[name].iat[k]) != np.float32(live_features[i][name]):
                    mismatches.append((i, wire[i]["ticket_id"], name, expected[name].iat[k], live_features[i][name]))
            counted += int(expected["customer_tickets_90d"].iat[k] > 0)
            assert live_scores[i]["probability"] == pytest.approx(
                reference["escalation_probability"].iat[k], rel=0, abs=1e-12), f"event {i}"
            assert live_scores[i]["band"] == reference["band"].iat[k]
    assert not mismatches, f"{len(mismatches)} live history values differ, first: {mismatches[:5]}"
    assert counted > len(wire) // 2  # the replay really exercised repeat customers
    assert len(runs) > len(wire) // 5  # and the history moved as the replay went


def test_a_batch_with_the_store_history_equals_one_ticket_at_a_time(api, bundle, replay_events):
    """The watcher scores open tickets in batches (OnlineFeatures.transform_many, numpy over the
    store's overlay as arrays); the request path one at a time (transform_one, binary searches in
    plain Python). Both count the bundle's table plus the store's rows: the rows must be identical,
    at several times (before, inside and long after the replayed month) and for tickets of customers,
    agents and teams the bundle never saw."""
    wire = to_wire_format(replay_events[list(CANONICAL_COLUMNS)]).to_dict(orient="records")
    for event in wire:
        assert api.post("/v1/events", json=event, headers=AUTH).status_code == 200
    live = api.application.extensions["model"].live
    live.sync_history()
    assert live.live_history is not None and live.live_history.facts, "the store's history reached the model"
    states = [api.get(f"/v1/tickets/{t}", headers=AUTH).get_json()["state"] for t in replay_events["ticket_id"].unique()]
    new_agent = {**states[0], "ticket_id": "NEW-1", "agent_id": "agent-never-seen", "customer_id": "cust-never-seen"}
    checked = 0
    for now in ("2026-01-20T12:00:00+00:00", "2026-02-03T08:30:00+00:00", "2026-09-01T00:00:00+00:00"):
        tickets = [{**state, "event_time": now} for state in [*states, new_agent]]
        batch, _ = live.online.transform_many(tickets)
        one = np.vstack([live.online.transform_one(ticket)[0] for ticket in tickets])
        np.testing.assert_array_equal(batch, one, err_msg=f"batch and single rows differ at {now}")
        history = [live.online.names.index(n) for n in bundle.builder.history_.feature_names_
                   if n in live.online.names]
        checked += int((batch[:, history] > 0).sum())
    assert checked > 100, "the history columns were mostly zero: the comparison proved little"
