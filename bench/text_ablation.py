"""What the text features are worth: the same training with and without them.

    python bench/text_ablation.py [--data PATH] [--tickets 20000]

Training is deterministic, so one run per arm is the measurement (no timing involved).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from features.synthetic import generate_event_log
from training.config import load_params
from training.train import train_models

ROWS = [
    ("ROC-AUC", "test_roc_auc"),
    ("ROC-AUC at creation", "test_roc_auc_position_0"),
    ("ROC-AUC after update 3", "test_roc_auc_position_3"),
    ("PR-AUC", "test_pr_auc"),
    ("recall @ top 10%", "test_recall_at_10pct"),
    ("precision @ top 5%", "test_precision_at_5pct"),
    ("ECE", "test_ece"),
    ("priority macro-F1", "test_priority_macro_f1"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="event log (default: demo data generated here)")
    parser.add_argument("--tickets", type=int, default=20_000)
    parser.add_argument("--params", type=Path, default=Path(__file__).resolve().parent.parent / "training/params.yaml")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "events.parquet"
            generate_event_log(data, n_tickets=args.tickets)
        with_text = load_params(args.params)
        without_text = with_text.model_copy(deep=True)
        without_text.text.enabled = False
        for name in ("monotone_increasing", "monotone_decreasing"):
            kept = [f for f in getattr(with_text.escalation_model, name) if "cue" not in f and "sentiment" not in f]
            setattr(without_text.escalation_model, name, kept)
        metrics = {arm: train_models(data, p).metrics for arm, p in (("text", with_text), ("no text", without_text))}
    print(f"text-feature ablation on {args.data or f'demo data ({args.tickets:,} tickets)'}, test period")
    print(f"{'metric':<26}{'with text':>11}{'without':>11}{'difference':>12}")
    for label, key in ROWS:
        a, b = metrics["text"][key], metrics["no text"][key]
        print(f"{label:<26}{a:>11.4f}{b:>11.4f}{a - b:>+12.4f}")


if __name__ == "__main__":
    main()
