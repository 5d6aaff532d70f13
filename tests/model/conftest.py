from __future__ import annotations

import pandas as pd
import pytest

from bundle.model import load_bundle
from features.schema import CANONICAL_COLUMNS
from training.registry import to_wire_format


@pytest.fixture(scope="session")
def bundle(demo_bundle_dir):
    return load_bundle(demo_bundle_dir)


@pytest.fixture(scope="session")
def probe_tickets(demo_result) -> pd.DataFrame:
    """Open tickets from the test period, early in their life, as a ticketing system sends them."""
    test = demo_result.snapshots[demo_result.snapshots["split"] == "test"]
    early = test[test["position"] <= 3]
    return to_wire_format(early[list(CANONICAL_COLUMNS)].sample(400, random_state=0))
