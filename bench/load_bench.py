"""Load benchmark: a bounded loopback load run against the service under gunicorn.

Starts gunicorn (serving/gunicorn.conf.py) on a free port with the model in models/current,
sends N single-ticket POST /v1/score requests at concurrency C over keep-alive connections,
and prints requests held, errors, p50/p99 latency, throughput and the workers' resident memory
after the first and after the last 10,000 requests. Needs a trained model: `make train` first.

    .venv/bin/python bench/load_bench.py [--requests 30000] [--concurrency 16] [--workers 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features.schema import CANONICAL_COLUMNS  # noqa: E402
from features.settings import Settings  # noqa: E402
from tests.reliability.harness import LoadRun, percentile_ms, start_service  # noqa: E402
from training.registry import to_wire_format  # noqa: E402


def load_tickets(settings: Settings, n: int = 500) -> list[dict]:
    """The latest update of some demo tickets, in the JSON shape clients send."""
    events = pd.read_parquet(settings.resolved_data_path)
    latest = events.sort_values("event_time").groupby("ticket_id").tail(1).tail(n)
    return to_wire_format(latest[[c for c in CANONICAL_COLUMNS if c in latest]]).to_dict(orient="records")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    window = min(10_000, args.requests // 3)

    settings = Settings()
    tickets = load_tickets(settings)
    rss: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        service = start_service({"ESCALATION_RISK_API_KEYS": "", "ESCALATION_RISK_MODELS_DIR":
                                 str(settings.resolved_models_dir)}, Path(tmp) / "gunicorn.log", workers=args.workers)

        def sample(done: int) -> None:
            if done == window:
                rss["first"] = service.workers_rss() / 2**20

        try:
            started = time.monotonic()
            load = LoadRun(service.port, tickets, {}, concurrency=args.concurrency, total=args.requests,
                           on_progress=sample).run()
            seconds = time.monotonic() - started
            rss["last"] = service.workers_rss() / 2**20
        finally:
            service.stop()
    errors = load.failures
    rows = [
        ("requests held", f"{len(load.outcomes) - len(errors):,} of {args.requests:,}"),
        ("errors", f"{len(errors):,}" + (f" (first: {errors[0].status} {errors[0].error})" if errors else "")),
        ("concurrency / workers", f"{args.concurrency} / {args.workers} (gthread)"),
        ("throughput", f"{len(load.outcomes) / seconds:,.0f} requests/s over {seconds:.1f} s"),
        ("latency p50", f"{percentile_ms(load.outcomes, 50):.1f} ms"),
        ("latency p99", f"{percentile_ms(load.outcomes, 99):.1f} ms"),
        (f"workers RSS after first {window:,}", f"{rss['first']:.1f} MiB"),
        (f"workers RSS after last {window:,}", f"{rss['last']:.1f} MiB ({100 * (rss['last'] / rss['first'] - 1):+.1f} %)"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"\nload run: single-ticket POST /v1/score on loopback, model {settings.resolved_model_path.resolve().name}")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
