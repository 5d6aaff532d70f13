"""Alerts in a real SQLite store (migrated by Alembic): one alert per rise, acknowledgement, outcomes,
the one-watcher lease, and the delivery outbox against a loopback receiver that fails for ten
(simulated) minutes and then recovers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from features.settings import Settings
from serving.alerts import AlertConflict, AlertNotFound, AlertStore, Sighting, rise_decision
from serving.delivery import verify_webhook_signature
from serving.destinations import Destination
from serving.store.db import create_store_engine, upgrade_database
from tests.serving.receivers import Receiver

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ACTION = {"route_to": "team supervisor", "tier": "supervisor", "escalation_type": "hierarchical",
          "respond_within": 24.0, "rule": "high-risk"}


def score(ticket_id: str, probability: float, band: str, escalate_now: bool = False) -> dict:
    return {"ticket_id": ticket_id,
            "escalation": {"probability": probability, "band": band, "escalate_now": escalate_now,
                           "reasons": [{"feature": "age_hours", "label": "age (hours)", "value": 30.0,
                                        "effect": 0.4, "direction": "raises risk"}]},
            "action": ACTION, "model": {"name": "escalation-risk", "version": "v-test"}}


def seen(ticket_id: str, probability: float, band: str, escalate_now: bool = False, **extra) -> Sighting:
    return Sighting(ticket_id, score(ticket_id, probability, band, escalate_now), team="billing_team", **extra)


@pytest.fixture()
def engine(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade_database(url)
    engine = create_store_engine(url)
    yield engine
    engine.dispose()


def test_rise_decisions():
    from serving.alerts import ActiveAlert

    rising = ActiveAlert(1, 1, "open", rise_ended=False, level_at_raise=0)
    ended_open = ActiveAlert(1, 1, "open", rise_ended=True, level_at_raise=0)
    ended_acked = ActiveAlert(1, 1, "acknowledged", rise_ended=True, level_at_raise=0)
    assert rise_decision(True, None) == "raise"
    assert rise_decision(True, rising) is None
    assert rise_decision(True, ended_open) == "risen_again"
    assert rise_decision(True, ended_acked) == "raise"
    assert rise_decision(False, rising) == "fell_below"
    assert rise_decision(False, ended_open) is None and rise_decision(False, None) is None


def test_one_alert_per_rise_and_its_timeline(engine):
    alerts = AlertStore(engine)
    assert alerts.apply_sightings([seen("T1", 0.2, "medium"), seen("T2", 0.1, "low")], T0) == []
    raised = alerts.apply_sightings([seen("T1", 0.5, "high", True), seen("T2", 0.1, "low")], T0 + timedelta(minutes=5))
    assert len(raised) == 1
    for minutes in (10, 15, 20):  # still above the line: no second alert
        assert alerts.apply_sightings([seen("T1", 0.55, "high", True)], T0 + timedelta(minutes=minutes)) == []
    alerts.apply_sightings([seen("T1", 0.3, "medium")], T0 + timedelta(minutes=25))  # falls below
    assert alerts.apply_sightings([seen("T1", 0.5, "high")], T0 + timedelta(minutes=30)) == []  # unacked: same alert
    alert = alerts.get_alert(raised[0])
    assert [e["kind"] for e in alert["timeline"]] == ["raised", "fell_below", "risen_again"]
    assert alert["trigger"] == "escalate_now" and alert["route_to"] == "team supervisor"
    assert alert["due_at"] == (T0 + timedelta(minutes=5, hours=24)).isoformat(timespec="milliseconds")
    assert alert["reasons"][0]["feature"] == "age_hours"
    # acknowledged, then a new rise is a new alert
    alerts.acknowledge(raised[0], "lead@example.com", "agree", "called the customer", T0 + timedelta(hours=1))
    alerts.apply_sightings([seen("T1", 0.3, "medium")], T0 + timedelta(hours=2))
    again = alerts.apply_sightings([seen("T1", 0.6, "high")], T0 + timedelta(hours=3))
    assert len(again) == 1 and alerts.get_alert(again[0])["rise"] == 2


def test_acknowledge(engine):
    alerts = AlertStore(engine)
    [alert_id] = alerts.apply_sightings([seen("T9", 0.7, "high", True)], T0)
    acked = alerts.acknowledge(alert_id, "ana", "acting", "moved to tier 2", T0 + timedelta(minutes=3))
    assert acked["status"] == "acknowledged"
    assert acked["acknowledgement"] == {"at": "2026-03-02T09:03:00.000+00:00", "by": "ana", "verdict": "acting",
                                        "note": "moved to tier 2"}
    assert acked["timeline"][-1]["kind"] == "acknowledged"
    with pytest.raises(AlertConflict):
        alerts.acknowledge(alert_id, "bob", "disagree", None, T0 + timedelta(minutes=4))
    with pytest.raises(AlertNotFound):
        alerts.acknowledge(99_999, "bob", "agree", None, T0)
    with pytest.raises(ValueError, match="verdict must be one of"):
        alerts.acknowledge(alert_id, "bob", "maybe", None, T0)


def test_outcomes_close_alerts(engine):
    alerts = AlertStore(engine)
    [escalating] = alerts.apply_sightings([seen("E1", 0.7, "high", True)], T0)
    [closing] = alerts.apply_sightings([seen("C1", 0.6, "high")], T0)
    alerts.apply_sightings([Sighting("E1", None, level=1, escalated=True),
                            Sighting("C1", None, level=0, closed=True)], T0 + timedelta(hours=5))
    assert alerts.get_alert(escalating)["outcome"] == "escalated"
    assert alerts.get_alert(closing)["outcome"] == "closed_without_escalation"
    assert {a["status"] for a in alerts.list_alerts(T0)["alerts"]} == {"closed"}
    assert alerts.get_alert(closing)["timeline"][-1] == {"kind": "outcome", "time": "2026-03-02T14:00:00.000+00:00",
                                                         "outcome": "closed_without_escalation"}
    # an escalated ticket raises nothing new
    assert alerts.apply_sightings([seen("E1", 0.9, "high", True, level=1, escalated=True)], T0 + timedelta(hours=6)) == []


def test_list_alerts_filters(engine):
    alerts = AlertStore(engine)
    alerts.apply_sightings([seen("A", 0.7, "high")], T0)
    alerts.apply_sightings([Sighting("B", score("B", 0.8, "high"), team="tech_support_t1")], T0 + timedelta(hours=10))
    now = T0 + timedelta(hours=12)
    assert [a["ticket_id"] for a in alerts.list_alerts(now)["alerts"]] == ["B", "A"]
    assert [a["ticket_id"] for a in alerts.list_alerts(now, team="billing_team")["alerts"]] == ["A"]
    assert [a["ticket_id"] for a in alerts.list_alerts(now, min_age_hours=6)["alerts"]] == ["A"]
    assert [a["ticket_id"] for a in alerts.list_alerts(now, max_age_hours=6)["alerts"]] == ["B"]
    assert alerts.list_alerts(now, status="acknowledged")["total"] == 0


def test_one_watcher_holds_the_lease(engine):
    first, second = AlertStore(engine), AlertStore(engine)
    assert first.acquire_lease("w1", 60, T0)
    assert not second.acquire_lease("w2", 60, T0 + timedelta(seconds=30))
    assert first.acquire_lease("w1", 60, T0 + timedelta(seconds=50))  # renewal
    assert not second.acquire_lease("w2", 60, T0 + timedelta(seconds=100))
    assert second.acquire_lease("w2", 60, T0 + timedelta(seconds=111))  # w1 stopped renewing: expired
    assert first.lease_holder(T0 + timedelta(seconds=112)) == "w2"
    second.release_lease("w2")
    assert first.acquire_lease("w1", 60, T0 + timedelta(seconds=113))


class FakeClock:
    """Simulated time: sleeping advances it (the delivery code's only waits)."""

    def __init__(self, start: datetime):
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def test_a_destination_down_for_ten_minutes_gets_every_alert_exactly_once(engine):
    """The receiver answers 500 for ten (simulated) minutes, then 200, and dedupes by Idempotency-Key."""
    from serving.destinations import Destinations
    from serving.watcher import Watcher

    clock = FakeClock(T0)
    outage_end = T0 + timedelta(minutes=10)
    receiver = Receiver(respond=lambda request: (500, {}, {}) if clock() < outage_end else (200, {}, {})).start()
    try:
        settings = Settings(alert_webhook_secret="s3cret", mlflow_tracking_uri=None, watch_lease_seconds=3600)
        hook = Destination(name="ops", type="webhook", url=f"{receiver.url}/hook",
                           retry={"attempts": 3, "initial_seconds": 1, "max_seconds": 4})
        watcher = Watcher(settings, engine, live=lambda: None, policy=None, destinations=Destinations(destinations=[hook]))
        raised = []
        for i in range(12):  # alerts keep coming during the outage
            raised += watcher.alerts.apply_sightings([seen(f"T{i}", 0.6, "high")], clock())
            watcher.deliver_round(clock(), sleep=clock.sleep, clock=clock)
            clock.sleep(50)
        assert watcher.alerts.count_deliveries() == {"pending": 12}
        while clock() < outage_end + timedelta(minutes=5):
            watcher.deliver_round(clock(), sleep=clock.sleep, clock=clock)
            clock.sleep(5)
        assert watcher.alerts.count_deliveries() == {"delivered": 12}
        assert len(receiver.accepted) == 12 and set(receiver.accepted.values()) == {1}
        failed = [r for r in receiver.requests if r.headers["Idempotency-Key"] not in receiver.accepted]
        assert not failed  # every request, failed or not, carried a key of one of the alerts
        assert all(verify_webhook_signature("s3cret", r.body, r.headers["X-Escalation-Risk-Timestamp"],
                                            r.headers["X-Escalation-Risk-Signature"]) is None
                   for r in receiver.requests)
        timeline = watcher.alerts.get_alert(raised[0])["timeline"]
        assert timeline[0]["kind"] == "raised" and timeline[-1]["kind"] == "delivered"
        assert "delivery_failed" in [e["kind"] for e in timeline]
    finally:
        receiver.stop()


def test_a_permanent_failure_is_a_dead_letter_and_can_be_redriven(engine):
    from serving.destinations import Destinations
    from serving.watcher import Watcher

    answers = {"status": 404}
    receiver = Receiver(respond=lambda request: (answers["status"], {}, {})).start()
    try:
        settings = Settings(zendesk_email="a@b.c", zendesk_api_token="t", mlflow_tracking_uri=None)
        desk = Destination(name="desk", type="zendesk", base_url=receiver.url)
        watcher = Watcher(settings, engine, live=lambda: None, policy=None, destinations=Destinations(destinations=[desk]))
        [alert_id] = watcher.alerts.apply_sightings([seen("123", 0.6, "high")], T0)
        watcher.deliver_round(T0, sleep=lambda s: None, clock=lambda: T0)
        assert watcher.alerts.count_deliveries() == {"dead": 1}
        assert watcher.alerts.get_alert(alert_id)["deliveries"][0]["last_error"] == "HTTP 404"
        answers["status"] = 200
        assert watcher.alerts.redrive_dead_letters(T0) == 1
        watcher.deliver_round(T0, sleep=lambda s: None, clock=lambda: T0)
        assert watcher.alerts.count_deliveries() == {"delivered": 1}
    finally:
        receiver.stop()


def test_the_holder_gets_its_lease_from_two_threads_at_once(engine):
    """The watcher's tick and delivery jobs ask at the same moment: both must see the lease as theirs."""
    from concurrent.futures import ThreadPoolExecutor

    alerts = AlertStore(engine)
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda _: alerts.acquire_lease("w1", 60, T0), range(4))) == [True] * 4
    assert not AlertStore(engine).acquire_lease("w2", 60, T0 + timedelta(seconds=1))
