"""Against case mix on the demo test period: the simulator's new agents escalate beyond their case mix
(features.synthetic: tenure under 12 months raises the escalation hazard), the others do not."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from bundle.case_mix import ABOVE, CASE_MIX_DATA, summarize_case_mix
from features.synthetic import describe_agents
from tests.conftest import DEMO_TICKETS


def test_new_agents_are_flagged_above_their_case_mix_and_established_ones_are_not(demo_bundle_dir):
    tickets = pd.read_parquet(demo_bundle_dir / CASE_MIX_DATA)
    params = json.loads((demo_bundle_dir / "metadata.json").read_text())["params"]
    agents = describe_agents(DEMO_TICKETS, 42).set_index("agent_id")
    if not set(tickets["agent_id"].dropna()) <= set(agents.index):
        pytest.skip("not a bundle trained on the demo data (its agents are not the simulator's)")
    summary = summarize_case_mix(tickets, params["case_mix.confidence"], params["case_mix.reference"],
                                 {"agent_id": "Agent"}, min_tickets=params["case_mix.min_tickets"])
    table = pd.DataFrame(summary["tables"]["agent_id"]["rows"]).set_index("value")
    created = pd.to_datetime(tickets["created_at"], utc=True)
    middle = created.min() + (created.max() - created.min()) / 2
    new = ((middle - agents.loc[table.index, "hired_at"]) / pd.Timedelta(days=30) < 12).to_numpy()
    flagged = (table["flag"] == ABOVE).to_numpy()
    assert not (flagged & ~new).any(), f"established agents flagged: {table.index[flagged & ~new].tolist()}"
    assert (flagged & new).sum() >= 1, f"no new agent flagged; new agents:\n{table[new]}"
    pooled = table.groupby(new)[["observed", "expected"]].sum()
    ratio = pooled["observed"] / pooled["expected"]
    assert ratio[True] > 1.15 > ratio[False], f"new agents' pooled O/E {ratio[True]:.2f}, others' {ratio[False]:.2f}"
