"""kill -9 of the watcher in the middle of a tick, then a restart: no alert lost, none raised twice,
and every alert reaches the loopback receiver (deduped by its Idempotency-Key)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from features.schema import CANONICAL_COLUMNS
from serving.store.alert_tables import AlertRow, DeliveryRow
from serving.store.db import create_store_engine, upgrade_database
from serving.store.tables import TicketRow
from serving.store.tickets import TicketStore
from tests.serving.receivers import Receiver
from training.registry import to_wire_format

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.reliability


def open_tickets(small_result, n: int) -> list[dict]:
    snaps = small_result.snapshots
    last = snaps.groupby("ticket_id").tail(1).head(n)
    tickets = to_wire_format(last[list(CANONICAL_COLUMNS)]).to_dict(orient="records")
    return [{**t, "status": "open", "escalation_level": 0} for t in tickets]


def count(engine, query) -> int:
    with Session(engine) as session:
        return session.execute(query).scalar_one()


def start_watcher(env: dict, log: Path) -> subprocess.Popen:
    handle = open(log, "a")  # noqa: SIM115 - the child keeps it
    process = subprocess.Popen([sys.executable, "-m", "cli", "watch"], cwd=ROOT, env=env, stdout=handle,
                               stderr=subprocess.STDOUT, start_new_session=True)
    handle.close()
    return process


def wait_for(condition, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout} s; watcher log:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


def test_kill_9_mid_tick_then_restart(serving_models_dir, small_result, tmp_path):
    url = f"sqlite:///{tmp_path / 'tickets.db'}"
    upgrade_database(url)
    engine = create_store_engine(url)
    tickets = open_tickets(small_result, 1500)
    TicketStore(engine).record_events(tickets, "test")
    receiver = Receiver().start()
    destinations = tmp_path / "destinations.yaml"
    destinations.write_text(f"destinations:\n  - name: ops\n    type: webhook\n    url: {receiver.url}/alerts\n"
                            "    redeliver_initial_seconds: 1\n    redeliver_max_seconds: 2\n")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update({"ESCALATION_RISK_MODELS_DIR": str(serving_models_dir), "ESCALATION_RISK_STORE_URL": url,
                "ESCALATION_RISK_WATCH_BATCH_SIZE": "20", "ESCALATION_RISK_WATCH_LEASE_SECONDS": "3",
                "ESCALATION_RISK_WATCH_INTERVAL_SECONDS": "3600", "ESCALATION_RISK_DELIVERY_POLL_SECONDS": "0.5",
                "ESCALATION_RISK_DESTINATIONS_PATH": str(destinations), "ESCALATION_RISK_ALERT_WEBHOOK_SECRET": "k",
                "ESCALATION_RISK_PROJECT_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)})
    log = tmp_path / "watcher.log"
    scored = select(func.count()).select_from(TicketRow).where(TicketRow.scored_at.is_not(None))
    alerts = select(func.count()).select_from(AlertRow)
    try:
        first = start_watcher(env, log)
        wait_for(lambda: count(engine, alerts) > 0, 300, "no alert raised", log)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        mid_tick = count(engine, scored)
        assert 0 < mid_tick < len(tickets), f"killed mid-tick: {mid_tick} of {len(tickets)} re-scored"
        restarted_at = datetime.now(UTC)
        second = start_watcher(env, log)
        # the second watcher waits for the dead one's lease to expire, then ticks over every ticket
        stale = select(func.count()).select_from(TicketRow).where(
            TicketRow.scored_at.is_(None) | (TicketRow.scored_at < restarted_at))
        wait_for(lambda: count(engine, stale) == 0, 600, "the restarted watcher did not re-score every ticket", log)
        pending = select(func.count()).select_from(DeliveryRow).where(DeliveryRow.status != "delivered")
        wait_for(lambda: count(engine, pending) == 0, 120, "deliveries still pending", log)
        second.send_signal(signal.SIGTERM)
        second.wait(60)
    finally:
        receiver.stop()
    with Session(engine) as session:
        rows = session.execute(select(AlertRow.ticket_id, AlertRow.rise, AlertRow.key)).all()
        above = set(session.execute(select(TicketRow.ticket_id).where(
            (TicketRow.band == "high") | TicketRow.escalate_now.is_(True))).scalars())
        deliveries = session.execute(select(DeliveryRow.idempotency_key, DeliveryRow.status)).all()
    per_ticket = {}
    for ticket_id, rise, _ in rows:
        per_ticket.setdefault(ticket_id, []).append(rise)
    assert all(rises == [1] for rises in per_ticket.values()), "an alert was raised twice"
    assert above <= set(per_ticket), f"alerts lost for {sorted(above - set(per_ticket))[:5]}"
    assert len(deliveries) == len(rows) and {s for _, s in deliveries} == {"delivered"}
    assert set(receiver.accepted) == {f"{key}:ops" for _, _, key in rows}
    # the receiver dedupes by key: at most the one delivery in flight at the kill arrived twice
    assert sum(receiver.accepted.values()) - len(receiver.accepted) <= 1
