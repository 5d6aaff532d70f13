"""What recording costs per single-ticket request, and how much of it the database itself takes.

In one process (Flask's test client, no HTTP server, so the differences are the service's own):
1. `off`: CPU per POST /v1/score with ESCALATION_RISK_STATE=off (the stateless path);
2. `on`: the same stream of ticket updates with recording on (a fresh SQLite store per round);
3. `driver floor`: the SQL statements that `on` ran for each request, captured once, replayed
   through Python's sqlite3 driver alone (BEGIN IMMEDIATE ... COMMIT per request, the service's
   pragmas: WAL, synchronous=FULL, foreign keys) on a fresh store: the database's own share,
   with no SQLAlchemy, no merging, no JSON and no scoring.

Rounds are interleaved (off, on, floor, off, on, floor, ...); medians of CPU microseconds per
request (time.process_time). The issue's goal is on/off <= 1.25 per request (there measured
under gunicorn, bench/store_bench.py, where the HTTP layer adds the same to both sides).
Needs a trained model (`make train`).

    OMP_NUM_THREADS=1 .venv/bin/python bench/recording_floor.py [--requests 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import event  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402

from bench.store_bench import update_stream  # noqa: E402
from features.settings import Settings  # noqa: E402
from serving.app import close_app, create_app  # noqa: E402

WARM_UP = 50
PRAGMAS = ("journal_mode = WAL", "foreign_keys = ON", "synchronous = FULL")


class StatementLog:
    """The SQL each request ran, request by request (a SQLAlchemy cursor event; on while `units` is set)."""

    def __init__(self) -> None:
        self.units: list[list[tuple[str, object, bool]]] | None = None
        event.listen(Engine, "before_cursor_execute", self.record)

    def record(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if self.units and threading.current_thread() is threading.main_thread() \
                and not statement.startswith("BEGIN"):  # the requests', not a background pass's
            self.units[-1].append((statement, parameters, executemany))

    def close(self) -> None:
        event.remove(Engine, "before_cursor_execute", self.record)


def make_app(work: Path, name: str, state: str):
    settings = Settings(state=state, store_url=f"sqlite:///{work / name}", api_keys=[], monitoring_interval_seconds=0,
                        reload_poll_seconds=0)
    app = create_app(settings)
    app.config.update(TESTING=True)
    return app


def post_all(app, bodies: list[bytes], log: StatementLog | None = None) -> float:
    """CPU µs per request over `bodies` (after WARM_UP renamed warm-up requests, also logged)."""
    client = app.test_client()
    for body in bodies[:WARM_UP]:
        if log is not None:
            log.units.append([])
        client.post("/v1/score", data=body.replace(b'"bench-', b'"warm-'), content_type="application/json")
    started = time.process_time()
    for body in bodies:
        if log is not None:
            log.units.append([])
        response = client.post("/v1/score", data=body, content_type="application/json")
        if response.status_code != 200:
            raise SystemExit(f"POST /v1/score answered {response.status_code}: {response.get_data(as_text=True)[:200]}")
    return (time.process_time() - started) / len(bodies) * 1e6


def replay_units(store_path: Path, units: list[list[tuple[str, object, bool]]], timed_from: int) -> float:
    """CPU µs per unit of work replaying `units` through sqlite3 alone; units before `timed_from` untimed."""
    connection = sqlite3.connect(store_path, isolation_level=None)
    for pragma in PRAGMAS:
        connection.execute(f"PRAGMA {pragma}")
    started = 0.0
    for index, unit in enumerate(units):
        if index == timed_from:
            started = time.process_time()
        connection.execute("BEGIN IMMEDIATE")
        for statement, parameters, many in unit:
            (connection.executemany if many else connection.execute)(statement, parameters)
        connection.execute("COMMIT")
    elapsed = time.process_time() - started
    connection.close()
    return elapsed / (len(units) - timed_from) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="recording-floor-"))
    bodies = update_stream(Settings(), args.requests)

    log = StatementLog()
    log.units = []
    capture = make_app(work, "capture.db", "on")
    post_all(capture, bodies, log)
    close_app(capture)
    units, log.units = log.units, None
    log.close()
    per_request = sum(len(unit) for unit in units[WARM_UP:]) / args.requests
    print(f"{args.requests:,} single-ticket updates; {per_request:.1f} SQL statements per recorded request "
          "(plus BEGIN IMMEDIATE and COMMIT)")

    results: dict[str, list[float]] = {"off": [], "on": [], "driver floor": []}
    for r in range(args.rounds):
        for state in ("off", "on"):
            app = make_app(work, f"{state}-{r}.db", state)
            results[state].append(post_all(app, bodies))
            close_app(app)
        empty = make_app(work, f"floor-{r}.db", "on")  # a migrated, empty store
        close_app(empty)
        results["driver floor"].append(replay_units(work / f"floor-{r}.db", units, WARM_UP))
        print(f"  round {r + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in results.items()), flush=True)

    print(f"\nCPU per request, µs (medians of {args.rounds} rounds)")
    print(f"{'':<14}{'median':>10}  rounds")
    for name, values in results.items():
        print(f"{name:<14}{statistics.median(values):>10,.0f}  {', '.join(f'{v:,.0f}' for v in values)}")
    off, on, floor = (statistics.median(results[k]) for k in ("off", "on", "driver floor"))
    print(f"\non / off: {on / off:.2f}x (goal <= 1.25x: recording may add {0.25 * off:,.0f} µs); "
          f"recording adds {on - off:,.0f} µs, of which the SQL at the driver takes {floor:,.0f} µs "
          f"((off + floor) / off = {(off + floor) / off:.2f}x)")


if __name__ == "__main__":
    main()
