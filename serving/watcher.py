"""The queue watcher: re-scores every open ticket as time passes, raises one alert per rise, and
delivers alerts to the configured destinations.

A tick (default every 5 minutes, APScheduler; `escalation-risk watch`, started beside gunicorn
by `escalation-risk serve`) takes the one-watcher lease in the store, then walks the open
tickets in batches: each stored state is re-scored as of now through the one scoring path
(serving.scoring.score_states, with `event_time` = now so age and the SLA clock advance, and
`last_update_at` = the ticket's latest real update for the matrix's time rules), and each batch's
alert changes commit in one transaction (serving.alerts). Tickets with unclosed alerts that left
the open queue get their outcome. Delivery rounds run on their own schedule and threads, so a
destination that is down never slows a tick, and only the lease holder delivers.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import requests
from sqlalchemy import Engine

from features.settings import Settings
from serving.alerts import AlertStore, Sighting, line_trigger
from serving.delivery import deliver
from serving.destinations import Destinations
from serving.gc_pause import paused_collection
from serving.policy import EscalationMatrix
from serving.scoring import score_states
from serving.store.tickets import TicketStore

log = logging.getLogger("escalation_risk.watcher")


@dataclass(frozen=True)
class TickReport:
    ran: bool  # False: another watcher holds the lease (or no model is loaded)
    tickets: int = 0
    alerts_raised: int = 0
    outcomes_checked: int = 0
    seconds: float = 0.0
    reason: str | None = None


def label_rule(metadata: dict) -> dict:
    """The bundle's label rule with its counter and min_rise (kept among the params)."""
    params = metadata.get("params") or {}
    label = dict(metadata.get("label") or {})
    label.setdefault("rule", params.get("label.rule") or "level_rise")
    label.setdefault("counter", params.get("label.counter"))
    label.setdefault("min_rise", params.get("label.min_rise"))
    return label


def escalation_check(label: dict | None) -> Callable[[dict], bool]:
    """Whether a stored state has already escalated, by the bundle's label rule: level_rise -> its
    escalation_level is above 0; counter_rise -> its counter reached `min_rise` (counters start at 0).
    An escalated ticket is not alerted on (its question is answered)."""
    label = label or {}
    if label.get("rule") == "counter_rise":
        counter, min_rise = label.get("counter") or "reassignment_count", int(label.get("min_rise") or 1)
        return lambda state: int(state.get(counter) or 0) >= min_rise
    return lambda state: int(state.get("escalation_level") or 0) > 0


def watch_state(state: dict, now_iso: str) -> dict:
    """The stored state as the watcher scores it: as of now, remembering its latest real update."""
    return {**state, "event_time": now_iso, "last_update_at": state.get("event_time")}


def new_holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Watcher:
    """One watcher process's work: `tick(now)` and `deliver_round(now)`; `live()` gives the current model."""

    def __init__(self, settings: Settings, engine: Engine, live: Callable[[], object], policy: EscalationMatrix,
                 destinations: Destinations, closed_statuses: tuple[str, ...] = ("closed",),
                 holder_id: str | None = None):
        self.settings = settings
        self.live = live
        self.policy = policy
        self.destinations = destinations
        self.tickets = TicketStore(engine, closed_statuses)
        self.alerts = AlertStore(engine, [d.name for d in destinations.destinations])
        self.holder_id = holder_id or new_holder_id()
        self.http = requests.Session()
        self._delivery_lock = threading.Lock()
        self._lease_until: datetime | None = None
        self._lease_lock = threading.Lock()

    def holds_lease(self, now: datetime) -> bool:
        """Take or renew the lease; while more than half of it is left, it is ours without asking the store.
        (The tick and delivery jobs run on two threads: one asks at a time.)"""
        ttl = self.settings.watch_lease_seconds
        with self._lease_lock:
            if self._lease_until is not None and now <= self._lease_until - timedelta(seconds=ttl / 2):
                return True
            if self.alerts.acquire_lease(self.holder_id, ttl, now):
                self._lease_until = now + timedelta(seconds=ttl)
                return True
            self._lease_until = None
            return False

    def tick(self, now: datetime | None = None,
             observe: Callable[[list[dict], list[dict]], None] | None = None) -> TickReport:
        """Re-score every open ticket as of `now` (default: the current time) and update alerts.

        `observe(states, scores)`, when given, sees each batch (the replay backtest records them).
        The cyclic garbage collector is paused meanwhile (serving.gc_pause)."""
        with paused_collection():
            return self._tick(now, observe)

    def _tick(self, now: datetime | None, observe: Callable[[list[dict], list[dict]], None] | None) -> TickReport:
        started = time.perf_counter()
        wall_clock = now is None
        now = now or datetime.now(UTC)
        live = self.live()
        if live is None:
            return TickReport(False, reason="no model loaded")
        if not self.holds_lease(now):
            return TickReport(False, reason="another watcher holds the lease")
        escalated = escalation_check(label_rule(live.bundle.metadata))
        now_iso = now.isoformat(timespec="milliseconds")
        seen: set[str] = set()
        n_tickets = n_raised = 0
        for batch in self.tickets.iter_open_tickets(self.settings.watch_batch_size):
            # A tick longer than the lease renews it per batch; a lost lease stops this tick.
            if n_tickets and not self.holds_lease(datetime.now(UTC) if wall_clock else now):
                return TickReport(False, n_tickets, n_raised, reason="lease lost during the tick")
            states = [watch_state(state, now_iso) for state in batch]
            explained: dict[int, dict] = {}
            scores = self.rescore(live, states, now, explained)
            if observe is not None:
                observe(batch, scores)
            sightings = [Sighting(str(state["ticket_id"]), score, int(state.get("escalation_level") or 0),
                                  state.get("group"), False, escalated(state), reasons_computed=i in explained,
                                  features=explained.get(i))
                         for i, (state, score) in enumerate(zip(batch, scores, strict=True))]
            n_raised += len(self.alerts.apply_sightings(sightings, now))
            seen.update(s.ticket_id for s in sightings)
            n_tickets += len(batch)
        left = sorted(self.alerts.tickets_with_unclosed_alerts() - seen)
        states = self.alerts.ticket_states(left)
        outcomes = [Sighting(ticket_id, None, int(state.get("escalation_level") or 0), state.get("group"),
                             closed=not is_open)
                    for ticket_id, (state, is_open) in states.items()]
        self.alerts.apply_sightings(outcomes, now)
        report = TickReport(True, n_tickets, n_raised, len(outcomes), time.perf_counter() - started)
        log.info("watch tick: %d open tickets re-scored (their alerts raised, ended or closed by outcome), "
                 "%d alerts raised, %d tickets with alerts that left the open queue checked in %.1f s",
                 report.tickets, report.alerts_raised, report.outcomes_checked, report.seconds)
        return report

    def rescore(self, live, states: list[dict], now: datetime, explained: dict[int, dict] | None = None
                ) -> list[dict]:
        """score_states of a batch without reasons, then with reasons for the tickets above the alert
        line (the only ones an alert can be raised for, and an alert keeps its reasons): the same
        scores as one pass with reasons for every ticket, at a fraction of the cost, since most
        open tickets are below the line. `explained`, when a dict, receives {index in `states`:
        feature values} of the tickets scored with reasons (the store keeps both as their latest score's)."""
        scores = score_states(live, self.policy, states, self.settings, now, explain=False)
        above = [i for i, score in enumerate(scores) if line_trigger(score)]
        if above:
            features: list[dict] = []
            rescored = score_states(live, self.policy, [states[i] for i in above], self.settings, now,
                                    features_out=features, sync_history=False)
            for i, score, values in zip(above, rescored, features, strict=True):
                scores[i] = score
                if explained is not None:
                    explained[i] = values
        return scores

    def deliver_round(self, now: datetime | None = None, sleep: Callable[[float], None] = time.sleep,
                      clock: Callable[[], datetime] | None = None) -> dict[str, int]:
        """Deliver what is due, each destination on its own thread; a destination whose round fails
        stops for this round (its later alerts wait for the next round instead of each timing out).
        Returns {destination: deliveries completed}. Only the lease holder delivers."""
        clock = clock or (lambda: datetime.now(UTC))
        now = now or clock()
        if not self.destinations.destinations or not self.holds_lease(now):
            return {}
        if not self._delivery_lock.acquire(blocking=False):
            return {}  # the previous round is still running
        try:
            with ThreadPoolExecutor(max_workers=len(self.destinations.destinations),
                                    thread_name_prefix="deliver") as pool:
                futures = {d.name: pool.submit(self._deliver_to, d, now, sleep, clock)
                           for d in self.destinations.destinations}
                return {name: future.result() for name, future in futures.items()}
        finally:
            self._delivery_lock.release()

    def _deliver_to(self, destination, now: datetime, sleep, clock) -> int:
        done = 0
        for delivery_id, alert in self.alerts.due_deliveries(destination.name, now):
            result = deliver(destination, alert, self.settings, self.http, sleep=sleep)
            row_status = self.alerts.record_delivery(delivery_id, result, clock(), destination)
            if result.ok:
                done += 1
            elif row_status == "pending":
                log.warning("delivery to %s failed (%s); next round later", destination.name, result.error)
                break
            else:
                log.error("delivery of alert %s to %s is a dead letter (%s)", alert["alert_id"], destination.name,
                          result.error)
        return done

    def release(self) -> None:
        self._lease_until = None
        self.alerts.release_lease(self.holder_id)
        self.http.close()


def run_scheduled(watcher: Watcher, settings: Settings, stop: threading.Event) -> None:
    """Tick every `watch_interval_seconds` and deliver every `delivery_poll_seconds` (APScheduler:
    one run of each job at a time, missed runs coalesced) until `stop` is set; then release the lease."""
    from apscheduler.schedulers.background import BackgroundScheduler

    def tick() -> None:
        try:
            report = watcher.tick()
        except Exception:  # a failed tick must not stop the schedule; the next tick tries again
            log.exception("watch tick failed")
            return
        if not report.ran and report.reason and "lease" in report.reason:
            # A standby: try again when the active watcher's lease could have expired, not a whole interval later.
            retry_at = datetime.now(UTC) + timedelta(seconds=min(settings.watch_lease_seconds,
                                                                 settings.watch_interval_seconds))
            scheduler.add_job(tick, "date", run_date=retry_at, id="watch-tick-retry", replace_existing=True)

    def deliver_due() -> None:
        try:
            watcher.deliver_round()
        except Exception:
            log.exception("delivery round failed")

    scheduler = BackgroundScheduler(timezone=UTC)
    now = datetime.now(UTC)
    scheduler.add_job(tick, "interval", seconds=settings.watch_interval_seconds, id="watch-tick",
                      max_instances=1, coalesce=True, next_run_time=now)
    scheduler.add_job(deliver_due, "interval", seconds=settings.delivery_poll_seconds, id="deliver",
                      max_instances=1, coalesce=True, next_run_time=now)
    scheduler.start()
    try:
        stop.wait()
    finally:
        scheduler.shutdown(wait=True)
        watcher.release()
