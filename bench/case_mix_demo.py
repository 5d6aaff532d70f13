"""Does the against-case-mix table find the simulator's new agents, and only them?

    python bench/case_mix_demo.py [--model models/current] [--tickets 20000 --seed 42]
    escalation-risk replay --store sqlite:////tmp/replay.db && \
        python bench/case_mix_demo.py --store sqlite:////tmp/replay.db   # the live view of a replayed store

The demo simulator knows each agent's hire date (features.synthetic.describe_agents); an agent
with under 12 months' tenure escalates more (its hazard rises: +0.7 under 3 months, +0.3 under 12,
and it resolves less well). The table compares each agent's escalations with the case-mix model's
expectation on the model bundle's test period (as training saved it), or on a ticket store the
demo test period was replayed into (`--store`: the service's live view, serving/monitoring.py, over
every ticket in the store), flags rows whose interval excludes 1, and prints them beside the truth. The bundle must come from the demo data with
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
    parser.add_argument("--store", default=None, help="a ticket store URL (a replay's) instead of the bundle's test period")
    parser.add_argument("--tickets", type=int, default=20_000, help="the demo data's --tickets")
    parser.add_argument("--seed", type=int, default=42, help="the demo data's --seed")
    parser.add_argument("--confidence", type=float, default=None, help="default: the bundle's case_mix.confidence")
    args = parser.parse_args()

    import json

    metadata = json.loads((args.model / "metadata.json").read_text()) if (args.model / "metadata.json").is_file() else {}
    params = metadata.get("params", {})
    confidence = args.confidence or float(params.get("case_mix.confidence", 0.95))
    reference = str(params.get("case_mix.reference", "window"))
    if args.store:
        summary, window = live_view_agents(args.model, args.store)
    else:
        tickets = pd.read_parquet(args.model / CASE_MIX_DATA)
        summary = summarize_case_mix(tickets, confidence=confidence, reference=reference, dimensions={"agent_id": "Agent"},
                                     min_tickets=int(params.get("case_mix.min_tickets", 20)))
        created = pd.to_datetime(tickets["created_at"], utc=True)
        window = (created.min(), created.max())
    table = pd.DataFrame(summary["tables"]["agent_id"]["rows"]).rename(columns={"value": "agent_id"})

    agents = describe_agents(args.tickets, args.seed).set_index("agent_id")
    middle = window[0] + (window[1] - window[0]) / 2
    table["team"] = table["agent_id"].map(agents["team"])
    table["tenure_months"] = ((middle - table["agent_id"].map(agents["hired_at"])) / pd.Timedelta(days=30)).round(1)
    table["new"] = table["tenure_months"] < NEW_MONTHS

    print(f"{'store ' + args.store if args.store else 'bundle test period'}: tickets created {window[0]:%Y-%m-%d} to "
          f"{window[1]:%Y-%m-%d}; {summary['tickets']:,} tickets with a known outcome, "
          f"{summary['observed']:,} escalated; expected = case-mix model, reference '{summary['reference']}' "
          f"(logit offset {summary['offset']:+.3f}); {summary['confidence']:.0%} exact Poisson intervals, "
          f"flagged only with at least {summary['min_tickets']} tickets")
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


def live_view_agents(model_path: Path, store_url: str) -> tuple[dict, tuple[pd.Timestamp, pd.Timestamp]]:
    """The service's live view (OpsMonitor) over every ticket in the store, as of its newest event."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from features.settings import Settings
    from serving.live_model import ModelHolder
    from serving.monitoring import OpsMonitor
    from serving.store.db import create_store_engine
    from serving.store.tables import TicketRow
    from serving.store.tickets import TicketStore

    engine = create_store_engine(store_url)
    with Session(engine) as session:
        first, last = session.execute(select(func.min(TicketRow.created_at), func.max(TicketRow.last_event_time))).one()
    first, last = pd.Timestamp(first).tz_localize("UTC"), pd.Timestamp(last).tz_localize("UTC")
    settings = Settings(model_path=model_path, store_url=store_url, mlflow_tracking_uri=None, reload_poll_seconds=0,
                        monitoring_max_rows=1000)
    holder = ModelHolder(settings)
    holder.history_source = TicketStore(engine).read_history_since
    outcome = holder.reload()
    if not outcome.ok:
        raise SystemExit(f"cannot load the model: {outcome.error}")
    view = OpsMonitor(engine, holder, settings).compute(now=last.to_pydatetime(),
                                                         days=(last - first).total_seconds() / 86400 + 1,
                                                         max_rows=100_000)
    tables = view["case_mix"]
    return {**tables, "tables": {"agent_id": tables["tables"]["agent_id"]}}, (first, last)


if __name__ == "__main__":
    main()
