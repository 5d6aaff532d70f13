"""Does the against-case-mix table find the simulator's new agents, and only them?

    python bench/case_mix_demo.py [--model models/current] [--tickets 20000 --seed 42]
    python bench/case_mix_demo.py --tickets-file replayed.parquet   # tickets with escalated + expected

The demo simulator knows each agent's hire date (features.synthetic.describe_agents); an agent
with under 12 months' tenure escalates more (its hazard rises: +0.7 under 3 months, +0.3 under 12,
and it resolves less well). The table compares each agent's escalations with the case-mix model's
expectation on the model bundle's test period (or on the tickets of a replay), flags rows whose
interval excludes 1, and prints them beside the truth. The bundle must come from the demo data with
the same --tickets and --seed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from bundle.case_mix import CASE_MIX_DATA, summarize_case_mix
from features.synthetic import describe_agents

NEW_MONTHS = 12  # the simulator's tenure effect stops at 12 months


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models/current"), help="a model bundle trained on the demo data")
    parser.add_argument("--tickets-file", type=Path, default=None,
                        help="tickets (agent_id, created_at, escalated, expected) instead of the bundle's test period")
    parser.add_argument("--tickets", type=int, default=20_000, help="the demo data's --tickets")
    parser.add_argument("--seed", type=int, default=42, help="the demo data's --seed")
    parser.add_argument("--confidence", type=float, default=None, help="default: the bundle's case_mix.confidence")
    args = parser.parse_args()

    import json

    metadata = json.loads((args.model / "metadata.json").read_text()) if (args.model / "metadata.json").is_file() else {}
    params = metadata.get("params", {})
    confidence = args.confidence or float(params.get("case_mix.confidence", 0.95))
    reference = str(params.get("case_mix.reference", "window"))
    tickets = pd.read_parquet(args.tickets_file or args.model / CASE_MIX_DATA)
    summary = summarize_case_mix(tickets, confidence=confidence, reference=reference,
                                 dimensions={"agent_id": "Agent"}, min_tickets=int(params.get("case_mix.min_tickets", 20)))
    table = pd.DataFrame(summary["tables"]["agent_id"]["rows"]).rename(columns={"value": "agent_id"})

    agents = describe_agents(args.tickets, args.seed).set_index("agent_id")
    created = pd.to_datetime(tickets["created_at"], utc=True)
    middle = created.min() + (created.max() - created.min()) / 2
    table["team"] = table["agent_id"].map(agents["team"])
    table["tenure_months"] = ((middle - table["agent_id"].map(agents["hired_at"])) / pd.Timedelta(days=30)).round(1)
    table["new"] = table["tenure_months"] < NEW_MONTHS

    print(f"window: tickets created {created.min():%Y-%m-%d} to {created.max():%Y-%m-%d}; {summary['tickets']:,} tickets, "
          f"{summary['observed']:,} escalated; expected = case-mix model, reference '{reference}' "
          f"(logit offset {summary['offset']:+.3f}); {confidence:.0%} exact Poisson intervals")
    columns = ["agent_id", "team", "tenure_months", "new", "tickets", "observed", "expected", "ratio", "ci_low",
               "ci_high", "flag"]
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print(table[columns].to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    new, old = table[table["new"]], table[~table["new"]]
    print()
    print(f"new agents (tenure < {NEW_MONTHS} months at mid-window): {len(new)}; flagged above: "
          f"{int((new['flag'] == 'above').sum())} ({', '.join(new.loc[new['flag'] == 'above', 'agent_id'])})")
    print(f"established agents: {len(old)}; flagged above: {int((old['flag'] == 'above').sum())} "
          f"({', '.join(old.loc[old['flag'] == 'above', 'agent_id']) or 'none'}); flagged below: "
          f"{int((old['flag'] == 'below').sum())}")


if __name__ == "__main__":
    main()
