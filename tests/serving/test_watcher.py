"""The watcher on a real store and model: a ticket that ages past its line without any new event
raises exactly one alert, delivered once as a signed webhook that verifies with the documented check."""

from __future__ import annotations

from datetime import timedelta

import pytest

from serving.alerts import line_trigger
from serving.delivery import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_webhook_signature
from serving.destinations import Destination, Destinations
from serving.live_model import ModelHolder
from serving.policy import as_utc, load_policy
from serving.scoring import score_states
from serving.store.db import create_store_engine, upgrade_database
from serving.store.tickets import TicketStore
from serving.watcher import Watcher, watch_state
from tests.serving.conftest import make_settings
from tests.serving.receivers import Receiver

SECRET = "watch-secret"
AGES = [timedelta(hours=h) for h in (1, 3, 6, 12, 24, 48, 96, 168, 240, 336)]


@pytest.fixture()
def store_setup(tmp_path, serving_models_dir):
    url = f"sqlite:///{tmp_path / 'tickets.db'}"
    upgrade_database(url)
    engine = create_store_engine(url)
    settings = make_settings(serving_models_dir, store_url=url, alert_webhook_secret=SECRET, watch_batch_size=50)
    holder = ModelHolder(settings)
    holder.history_source = TicketStore(engine).read_history_since
    assert holder.reload().ok
    yield settings, engine, holder
    engine.dispose()


def find_aging_ticket(live, policy, settings, tickets: list[dict]) -> tuple[dict, timedelta]:
    """A ticket below the line when it arrives that crosses it later with no new event."""
    fresh = [t for t in tickets if t["event_time"] == t["created_at"]]
    for ticket in fresh:
        start = as_utc(ticket["event_time"])
        states = [watch_state(ticket, (start + age).isoformat()) for age in [timedelta(0), *AGES]]
        scores = score_states(live, policy, states, settings, start)
        above = [line_trigger(s) is not None for s in scores]
        if not above[0] and any(above):
            return ticket, AGES[above.index(True) - 1]
    pytest.fail(f"none of {len(fresh)} fresh test tickets crosses the line by aging alone (model changed?)")


def test_an_idle_ticket_crossing_its_line_raises_one_signed_alert(store_setup, wire_tickets):
    settings, engine, holder = store_setup
    policy = load_policy(settings.resolved_policy_path)
    ticket, age = find_aging_ticket(holder.live, policy, settings, wire_tickets)
    receiver = Receiver().start()
    try:
        hook = Destination(name="ops", type="webhook", url=f"{receiver.url}/alerts")
        watcher = Watcher(settings, engine, lambda: holder.live, policy, Destinations(destinations=[hook]))
        watcher.tickets.record_events([ticket], "test")
        start = as_utc(ticket["event_time"])
        first = watcher.tick(start + timedelta(minutes=5))
        assert first.ran and first.tickets == 1 and first.alerts_raised == 0
        crossed = watcher.tick(start + age)
        assert crossed.alerts_raised == 1, "the ticket aged past its line: one alert"
        for minutes in (5, 10, 15):
            assert watcher.tick(start + age + timedelta(minutes=minutes)).alerts_raised == 0
        watcher.deliver_round(start + age, sleep=lambda s: None)
        watcher.deliver_round(start + age + timedelta(minutes=20), sleep=lambda s: None)
        assert len(receiver.requests) == 1
        got = receiver.requests[0]
        assert verify_webhook_signature(SECRET, got.body, got.headers[TIMESTAMP_HEADER],
                                        got.headers[SIGNATURE_HEADER]) is None
        body = got.json()
        assert body["ticket_id"] == str(ticket["ticket_id"]) and body["probability"] >= 0
        assert got.headers[IDEMPOTENCY_HEADER] == body["idempotency_key"]
        alerts = watcher.alerts.alerts_for_ticket(str(ticket["ticket_id"]))
        assert len(alerts) == 1 and [e["kind"] for e in alerts[0]["timeline"]] == ["raised", "delivered"]
        queue = watcher.tickets.list_queue()
        assert queue["tickets"][0]["probability"] == pytest.approx(alerts[0]["probability"])  # the queue is current
    finally:
        receiver.stop()


def test_only_the_lease_holder_ticks(store_setup, wire_tickets):
    settings, engine, holder = store_setup
    policy = load_policy(settings.resolved_policy_path)
    first = Watcher(settings, engine, lambda: holder.live, policy, Destinations())
    second = Watcher(settings, engine, lambda: holder.live, policy, Destinations())
    first.tickets.record_events(wire_tickets[:20], "test")
    now = max(as_utc(t["event_time"]) for t in wire_tickets[:20]) + timedelta(hours=1)
    assert first.tick(now).ran
    report = second.tick(now + timedelta(seconds=30))  # within the lease (120 s)
    assert not report.ran and report.reason == "another watcher holds the lease"
    first.release()
    assert second.tick(now + timedelta(seconds=40)).ran


def test_the_tick_explains_exactly_the_tickets_above_the_line(store_setup, wire_tickets):
    """The watcher scores a batch without reasons and explains only tickets above the alert line:
    every probability, band and action equals a full scoring pass, reasons are kept for the tickets
    an alert can be raised for, and an alert raised by a tick carries its reasons."""
    settings, engine, holder = store_setup
    policy = load_policy(settings.resolved_policy_path)
    watcher = Watcher(settings, engine, lambda: holder.live, policy, Destinations())
    now = max(as_utc(t["event_time"]) for t in wire_tickets) + timedelta(days=2)
    states = [watch_state(t, now.isoformat()) for t in wire_tickets]
    full = score_states(holder.live, policy, states, settings, now)
    cheap = watcher.rescore(holder.live, states, now)
    above = [line_trigger(s) is not None for s in full]
    assert any(above) and not all(above), "the fixture should put some tickets on each side of the line"
    for a, b, is_above in zip(full, cheap, above, strict=True):
        if is_above:
            assert a == b
        else:
            assert b["escalation"]["reasons"] == [] and a["escalation"]["reasons"]
            assert all(entry["reasons"] == [] for entry in b["escalation"]["types"].values())
            assert ({k: v for k, v in a["escalation"].items() if k not in ("reasons", "types")}
                    == {k: v for k, v in b["escalation"].items() if k not in ("reasons", "types")})
            assert ({n: {k: v for k, v in e.items() if k != "reasons"} for n, e in a["escalation"]["types"].items()}
                    == {n: {k: v for k, v in e.items() if k != "reasons"} for n, e in b["escalation"]["types"].items()})
            assert (a["action"], a["priority"]) == (b["action"], b["priority"])
    watcher.tickets.record_events(wire_tickets, "test")
    assert watcher.tick(now).alerts_raised > 0
    raised = [a for t in wire_tickets for a in watcher.alerts.alerts_for_ticket(str(t["ticket_id"]))]
    assert raised and all(alert["reasons"] for alert in raised)


def test_a_tick_runs_with_the_cyclic_collector_paused(store_setup, wire_tickets):
    """serving.gc_pause around the tick: off while batches are scored, as it was afterwards."""
    import gc

    settings, engine, holder = store_setup
    watcher = Watcher(settings, engine, lambda: holder.live, load_policy(settings.resolved_policy_path),
                      Destinations())
    watcher.tickets.record_events(wire_tickets, "test")
    seen: list[bool] = []
    was = gc.isenabled()
    gc.enable()
    try:
        now = max(as_utc(t["event_time"]) for t in wire_tickets) + timedelta(hours=1)
        report = watcher.tick(now, observe=lambda states, scores: seen.append(gc.isenabled()))
        assert report.ran and report.tickets > 0
        assert seen and not any(seen), "the collector ran during the tick"
        assert gc.isenabled(), "the tick did not restore the collector"
    finally:
        (gc.enable if was else gc.disable)()
