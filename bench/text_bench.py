"""Text features of new texts: CPU per ticket of this checkout against a baseline commit, A B A B.

    .venv/bin/python bench/text_bench.py [--models models/current] [--baseline main] [--rounds 4]
                                         [--tickets 400]

Each round runs `OnlineFeatures.transform_many` in a fresh subprocess (niced), alternately on the
baseline commit's code (`git archive` into a temporary folder) and on this checkout's, with the
same bundle and the same generated tickets: a 6-word subject, a 60-word description and a
20-word latest message drawn from the demo log's words, so every text is new to the worker's
caches. Scenarios: single tickets and batches of 100, with all texts new, and with only the
latest message new (the ticket's subject and description scored before, as on a real update);
"cached" repeats texts already scored. Times are CPU seconds of the process (time.process_time)
per ticket; the table shows the median over rounds and the ratio baseline / this checkout. Each
worker also returns a digest of the feature rows it computed: the two code versions must agree
bit for bit, or the bench says so.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = [
    ("single, all texts new", "single_new"),
    ("single, new message only", "single_message"),
    ("single, cached texts", "single_cached"),
    ("batch 100, all texts new", "batch_new"),
    ("batch 100, new message only", "batch_message"),
]


def make_tickets(n: int, seed: int) -> tuple[list[dict], list[str]]:
    """n wire-format tickets with new texts, and n more latest messages for the same tickets."""
    import pandas as pd

    from features.schema import CANONICAL_COLUMNS
    from features.synthetic import generate_event_log
    from serving.schemas import Ticket
    from training.registry import to_wire_format

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.parquet"
        generate_event_log(path, n_tickets=200, seed=seed)
        events = pd.read_parquet(path)
    texts = pd.concat([events[c].dropna() for c in ("subject", "description", "last_customer_message")])
    words = " ".join(texts.unique()).split()
    rows = to_wire_format(events[[c for c in CANONICAL_COLUMNS if c in events]]).to_dict(orient="records")
    base = [Ticket.model_validate(r).model_dump(mode="json") for r in rows[:n]]
    rng = random.Random(seed)

    def say(k: int, i: int) -> str:
        return " ".join(rng.choice(words) for _ in range(k)) + f" (ref {i})"

    tickets = [{**base[i % len(base)], "subject": say(5, i), "description": say(59, i),
                "last_customer_message": say(19, i)} for i in range(n)]
    return tickets, [say(19, n + i) for i in range(n)]


def run_worker(models: Path, n: int, seed: int) -> dict:
    """CPU µs per ticket of each scenario, and a digest of the rows, with the code on sys.path."""
    import numpy as np

    from bundle.model import load_bundle
    from features.online import OnlineFeatures

    bundle = load_bundle(models)
    tickets, messages = make_tickets(n, seed)
    fresh = [{**t, "last_customer_message": m} for t, m in zip(tickets, messages, strict=True)]
    OnlineFeatures(bundle.builder).transform_many(make_tickets(150, seed + 1)[0][:100])  # warm up imports
    results, digest = {}, hashlib.sha256()

    def time_singles(online, rows) -> float:
        start = time.process_time()
        out = [online.transform_many([t])[0] for t in rows]
        elapsed = time.process_time() - start
        digest.update(np.vstack(out).tobytes())
        return elapsed / len(rows) * 1e6

    def time_batches(online, rows) -> float:
        start = time.process_time()
        out = [online.transform_many(rows[i:i + 100])[0] for i in range(0, len(rows), 100)]
        elapsed = time.process_time() - start
        digest.update(np.vstack(out).tobytes())
        return elapsed / len(rows) * 1e6

    online = OnlineFeatures(bundle.builder)
    results["single_new"] = time_singles(online, tickets)
    results["single_message"] = time_singles(online, fresh)  # subject and description scored just above
    results["single_cached"] = time_singles(online, fresh)
    online = OnlineFeatures(bundle.builder)
    results["batch_new"] = time_batches(online, tickets)
    results["batch_message"] = time_batches(online, fresh)
    return {"us": results, "digest": digest.hexdigest()}


def export_tree(ref: str, target: Path) -> None:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=ROOT / "models" / "current", help="a model bundle folder")
    parser.add_argument("--baseline", default="main", help="git ref of the code to compare with")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per arm (A B A B ...)")
    parser.add_argument("--tickets", type=int, default=400, help="tickets per scenario (a multiple of 100)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_worker(args.models.resolve(), args.tickets, args.seed)))
        return
    results: dict[str, list[dict]] = {"baseline": [], "this checkout": []}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        export_tree(args.baseline, Path(tmp))
        trees = {"baseline": Path(tmp), "this checkout": ROOT}
        for _ in range(args.rounds):
            for arm, tree in trees.items():
                command = ["nice", "-n", "5", sys.executable, str(Path(__file__).resolve()), "--worker",
                           "--models", str(args.models.resolve()), "--tickets", str(args.tickets),
                           "--seed", str(args.seed)]
                done = subprocess.run(command, check=True, capture_output=True, text=True, cwd=tree,
                                      env={**os.environ, "PYTHONPATH": str(tree)})
                results[arm].append(json.loads(done.stdout.strip().splitlines()[-1]))
    load_after = os.getloadavg()
    digests = {arm: {r["digest"] for r in runs} for arm, runs in results.items()}
    print(f"text features of new texts, CPU µs per ticket (time.process_time), median of {args.rounds} rounds "
          f"per arm, A B A B; baseline {args.baseline}; {args.tickets} tickets per scenario")
    print(f"{'scenario':<30}{'baseline':>10}{'this':>10}{'ratio':>8}   rounds (baseline | this)")
    for label, key in SCENARIOS:
        old = [r["us"][key] for r in results["baseline"]]
        new = [r["us"][key] for r in results["this checkout"]]
        a, b = statistics.median(old), statistics.median(new)
        spread = " ".join(f"{v:.0f}" for v in old) + " | " + " ".join(f"{v:.0f}" for v in new)
        print(f"{label:<30}{a:>10.1f}{b:>10.1f}{a / b:>7.2f}x   {spread}")
    same = len(digests["baseline"]) == 1 and digests["baseline"] == digests["this checkout"]
    print(f"feature rows identical bit for bit across arms and rounds: {'yes' if same else 'NO'}")
    print(f"load average (1, 5, 15 min) before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f} (2 cores)")


if __name__ == "__main__":
    main()
