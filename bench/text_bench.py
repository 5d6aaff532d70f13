"""Text features of new texts: CPU per ticket of this checkout against a baseline commit, alternating rounds.

    .venv/bin/python bench/text_bench.py [--models models/current] [--baseline main] [--rounds 6]
                                         [--tickets 200]

The baseline commit's code (`git archive` into a temporary folder) and this checkout's are both
imported into this one (niced) process, the first under its own module objects (the package
modules are imported from the baseline folder, set aside, and imported again from here; the
packages import nothing inside functions, so each keeps its own code), so that the rounds
alternate under the same load: A B, B A, A B, ... Each arm loads the same bundle with its own loader and
scores the same generated tickets through its own `OnlineFeatures.transform_many`: a subject,
description and latest message of 5, 59 and 19 words drawn from the demo log's words, each
ending in a unique "(ref N)" (7, 61 and 21 words in all), new in every round. Scenarios: single tickets and batches of 100, with all texts new, and with
only the latest message new (the ticket's subject and description scored before, as on a real
update); "cached" repeats texts already scored. Times are CPU seconds of the process
(time.process_time) per ticket; the table shows the median over rounds and the ratio
baseline / this checkout. The two arms' feature rows are compared bit for bit.
"""

from __future__ import annotations

import argparse
import gc
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

import numpy as np

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


PACKAGES = ("features", "bundle", "serving", "training")


def import_arm(tree: Path) -> tuple:
    """(load_bundle, OnlineFeatures) imported from the packages in `tree`, then set aside."""
    for name in [m for m in sys.modules if m.split(".")[0] in PACKAGES]:
        del sys.modules[name]
    sys.path.insert(0, str(tree))
    try:
        from bundle.model import load_bundle
        from features.online import OnlineFeatures
    finally:
        sys.path.remove(str(tree))
    assert Path(sys.modules["features.text"].__file__).is_relative_to(tree), "imported from the wrong tree"
    return load_bundle, OnlineFeatures


def time_scenarios(online_class, builder, tickets: list[dict], updates: list[dict]) -> tuple[dict, list]:
    """CPU µs per ticket of each scenario and the feature rows computed (in scenario order)."""
    results, rows = {}, []

    def run(key: str, calls) -> None:
        start = time.process_time()
        out = [call() for call in calls]
        results[key] = (time.process_time() - start) / len(tickets) * 1e6
        rows.append(np.vstack([o[0] for o in out]))

    online = online_class(builder)
    run("single_new", [lambda t=t: online.transform_many([t]) for t in tickets])
    run("single_message", [lambda t=t: online.transform_many([t]) for t in updates])  # tickets scored just above
    run("single_cached", [lambda t=t: online.transform_many([t]) for t in updates])
    online = online_class(builder)
    batches = range(0, len(tickets), 100)
    run("batch_new", [lambda i=i: online.transform_many(tickets[i:i + 100]) for i in batches])
    run("batch_message", [lambda i=i: online.transform_many(updates[i:i + 100]) for i in batches])
    return results, rows


def export_tree(ref: str, target: Path) -> None:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=ROOT / "models" / "current", help="a model bundle folder")
    parser.add_argument("--baseline", default="main", help="git ref of the code to compare with")
    parser.add_argument("--rounds", type=int, default=6, help="rounds per arm (A B, B A, ...)")
    parser.add_argument("--tickets", type=int, default=200, help="tickets per scenario and round (a multiple of 100)")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    os.nice(5)
    load_before = os.getloadavg()
    tickets, messages = make_tickets(args.tickets * args.rounds, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        export_tree(args.baseline, Path(tmp))
        arms = {"baseline": import_arm(Path(tmp)), "this checkout": import_arm(ROOT)}
        builders = {arm: load(args.models.resolve()).builder for arm, (load, _) in arms.items()}
        warm_up, _ = make_tickets(100, args.seed + 1)
        for arm, (_, online_class) in arms.items():
            online_class(builders[arm]).transform_many(warm_up)
        results: dict[str, list[dict]] = {arm: [] for arm in arms}
        identical = True
        for r in range(args.rounds):
            part = slice(r * args.tickets, (r + 1) * args.tickets)
            updates = [{**t, "last_customer_message": m} for t, m in zip(tickets[part], messages[part], strict=True)]
            rows = {}
            # A B, then B A: neither arm always runs second (after the other's garbage, in a warmer cache).
            for arm, (_, online_class) in (list(arms.items()) if r % 2 == 0 else list(arms.items())[::-1]):
                gc.collect()
                timings, rows[arm] = time_scenarios(online_class, builders[arm], tickets[part], updates)
                results[arm].append(timings)
            identical &= all(a.tobytes() == b.tobytes() for a, b in zip(rows["baseline"], rows["this checkout"], strict=True))
    load_after = os.getloadavg()
    print(f"text features of new texts, CPU µs per ticket (time.process_time), median of {args.rounds} rounds "
          f"per arm, A B B A ... in one process; baseline {args.baseline}; {args.tickets} tickets per scenario and round")
    print(f"{'scenario':<30}{'baseline':>10}{'this':>10}{'ratio':>8}   rounds (baseline | this)")
    for label, key in SCENARIOS:
        old = [r[key] for r in results["baseline"]]
        new = [r[key] for r in results["this checkout"]]
        a, b = statistics.median(old), statistics.median(new)
        spread = " ".join(f"{v:.0f}" for v in old) + " | " + " ".join(f"{v:.0f}" for v in new)
        print(f"{label:<30}{a:>10.1f}{b:>10.1f}{a / b:>7.2f}x   {spread}")
    print(f"feature rows identical bit for bit between the arms: {'yes' if identical else 'NO'}")
    print(f"load average (1, 5, 15 min) before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f} (2 cores)")


if __name__ == "__main__":
    main()
