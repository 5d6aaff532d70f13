"""The report's top-driver contributions are computed on a capped, evenly spaced sample of test rows."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd

from bundle.report import collect_driver_values


def test_contributions_on_a_sample_equal_the_full_computation_there():
    rng = np.random.default_rng(3)
    x = pd.DataFrame({"a": rng.normal(size=600), "b": rng.normal(size=600), "c": rng.integers(0, 5, 600)})
    y = (x["a"] + 0.5 * x["b"] + rng.normal(scale=0.5, size=600) > 0).astype(int)
    model = lgb.LGBMClassifier(n_estimators=20, num_leaves=7, verbose=-1).fit(x, y)
    importance = pd.DataFrame({"feature": ["a", "b", "c"]})

    full = collect_driver_values(model, x, importance, max_contribution_rows=None)
    sampled = collect_driver_values(model, x, importance, max_contribution_rows=100)

    assert len(sampled) == len(x) and sampled["value__a"].tolist() == x["a"].tolist()
    computed = sampled["contribution__a"].notna().to_numpy()
    assert computed.sum() == 100 and computed[::6].all() and not np.delete(computed, np.s_[::6]).any()
    for name in ("a", "b", "c"):
        np.testing.assert_array_equal(sampled[f"contribution__{name}"].to_numpy()[::6],
                                      full[f"contribution__{name}"].to_numpy()[::6])
    assert full["contribution__a"].notna().all()
