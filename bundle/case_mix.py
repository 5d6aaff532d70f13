"""Escalations against case mix: observed / expected per agent, team, category and customer.

Indirect standardisation, as hospital league tables compare hospitals with their case mix
(Breslow & Day, "Statistical Methods in Cancer Research" vol. II, 1987, ch. 2; the standardised
mortality ratio): each ticket's expected escalation risk comes from a case-mix model that sees the
ticket as it arrived and its customer but nothing about who handled it (training/case_mix.py),
so an agent who escalates twice as often is not simply expected to. For a group of tickets:

    observed O = escalated tickets,  expected E = sum of the tickets' case-mix risks,  ratio = O / E

with the exact Poisson interval for O (Garwood 1936: chi-square quantiles, here scipy.stats.chi2)
divided by E, E taken as known. A row is flagged only when its interval excludes 1. The
Poisson interval is slightly conservative for a sum of Bernoulli outcomes (its variance is at
least theirs), so a flag errs on the side of not flagging.

Pure DataFrame-in, DataFrame-out functions, used by training (the report's test period) and by
the service (a window of the ticket store).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.special import expit, logit
from scipy.stats import chi2

from bundle.model import BundleError, apply_calibration, load_booster

# Who or what a table compares: the ticket's first agent and team (who had it when it arrived;
# features.history.summarize_tickets takes entities from the first update the same way).
DIMENSIONS = {"agent_id": "Agent", "group": "Team", "category": "Category", "customer_id": "Customer"}
OBSERVED = "escalated"
EXPECTED = "expected"
ABOVE, BELOW = "above", "below"
CASE_MIX_MODEL = "case_mix_model.txt"  # LightGBM text, in the bundle
CASE_MIX_DATA = "case_mix.parquet"  # the test period's tickets with their expected risk


@dataclass
class CaseMixModel:
    """The bundle's case-mix model: its booster, the features it sees and its calibration."""

    booster: lgb.Booster
    features: list[str]
    calibration: dict
    positions: list[int]  # where its features sit in the bundle's full feature list

    def predict(self, features: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Expected escalation risk (calibrated) of creation-time feature rows: a DataFrame with the
        case-mix features by name, or a matrix in the bundle's full feature order (the live path)."""
        if isinstance(features, pd.DataFrame):
            chosen = features[self.features]
        else:
            chosen = np.asarray(features, dtype="float64")[:, self.positions]
        return apply_calibration(self.calibration, self.booster.predict(chosen))


def load_case_mix_model(bundle_dir: Path, metadata: dict) -> CaseMixModel | None:
    """The bundle's case-mix model (None for a bundle trained without one). The caller verified the
    bundle's manifest (bundle.model.load_bundle does); the model file is checked as LightGBM text."""
    entry = metadata.get("case_mix")
    if not entry:
        return None
    booster = load_booster(Path(bundle_dir) / entry.get("model", CASE_MIX_MODEL))
    names = list(entry["features"])
    if booster.feature_name() != names:
        raise BundleError(f"{CASE_MIX_MODEL} does not use the features the metadata lists for it")
    position = {name: i for i, name in enumerate(metadata["features"])}
    return CaseMixModel(booster, names, entry["calibration"], [position[n] for n in names])


def select_case_mix_features(feature_names: list[str], exclude_prefixes: list[str] | tuple[str, ...],
                             exclude: list[str] | tuple[str, ...]) -> list[str]:
    """The features the case-mix model may see: all but the excluded names and prefixes, in order."""
    excluded = set(exclude)
    return [name for name in feature_names if name not in excluded and not name.startswith(tuple(exclude_prefixes))]


def fit_window_offset(expected: np.ndarray, observed: np.ndarray) -> float:
    """The logit offset d with sum(expit(logit(p) + d)) = sum(observed) (0 when it cannot be solved:
    no escalations, or all of them)."""
    expected = np.clip(np.asarray(expected, dtype=float), 1e-6, 1 - 1e-6)
    total = float(np.sum(observed))
    if len(expected) == 0 or total <= 0 or total >= len(expected):
        return 0.0
    base = logit(expected)
    return float(brentq(lambda d: expit(base + d).sum() - total, -20.0, 20.0, xtol=1e-10))


def standardize_to_window(tickets: pd.DataFrame, reference: str = "window") -> tuple[pd.DataFrame, float]:
    """`tickets` with EXPECTED shifted to the window's own average ("window"), or as fitted ("model").

    Returns (tickets, offset). With "window" the window's total O / E is 1 by construction: each
    row is compared with what the centre as a whole did with that case mix in the same window, so a
    month that is worse for everyone (an outage) flags nobody in particular."""
    if reference not in ("window", "model"):
        raise ValueError(f"reference must be 'window' or 'model', not {reference!r}")
    if reference == "model" or tickets.empty:
        return tickets, 0.0
    offset = fit_window_offset(tickets[EXPECTED].to_numpy(), tickets[OBSERVED].to_numpy())
    shifted = expit(logit(np.clip(tickets[EXPECTED].to_numpy(dtype=float), 1e-6, 1 - 1e-6)) + offset)
    return tickets.assign(**{EXPECTED: shifted}), offset


def poisson_interval(observed: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact (Garwood) two-sided interval for a Poisson count: chi2(a/2, 2O)/2 .. chi2(1-a/2, 2O+2)/2."""
    observed = np.asarray(observed, dtype=float)
    alpha = 1.0 - confidence
    low = np.where(observed > 0, chi2.ppf(alpha / 2, 2 * observed) / 2, 0.0)
    high = chi2.ppf(1 - alpha / 2, 2 * (observed + 1)) / 2
    return low, high


def compare_to_case_mix(tickets: pd.DataFrame, by: str, confidence: float = 0.95, min_tickets: int = 1
                        ) -> pd.DataFrame:
    """One row per value of `by`: tickets, observed, expected, ratio (O / E), ci_low, ci_high, flag
    ("above" when the interval lies above 1, "below" when under it, else empty), excess (O - E).
    Rows with fewer than `min_tickets` tickets are never flagged: with hundreds of one-ticket
    customers, some would fall outside any interval by chance alone.

    `tickets`: one row per ticket with `by`, OBSERVED (0/1) and EXPECTED (case-mix risk, 0..1).
    Tickets whose `by` is missing are left out. Sorted: flagged above first, then by ratio."""
    missing = {by, OBSERVED, EXPECTED} - set(tickets.columns)
    if missing:
        raise KeyError(f"case-mix comparison needs column(s) {sorted(missing)}")
    if not 0.5 < confidence < 1:
        raise ValueError(f"confidence must be between 0.5 and 1, not {confidence}")
    known = tickets[tickets[by].notna()]
    grouped = known.groupby(known[by].astype("string"), sort=False)
    table = pd.DataFrame({
        "tickets": grouped.size(),
        "observed": grouped[OBSERVED].sum().astype("int64"),
        "expected": grouped[EXPECTED].sum().astype("float64"),
    })
    table.index.name = by
    low, high = poisson_interval(table["observed"].to_numpy(), confidence)
    expected = table["expected"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        table["ratio"] = np.where(expected > 0, table["observed"] / expected, np.nan)
        table["ci_low"] = np.where(expected > 0, low / expected, np.nan)
        table["ci_high"] = np.where(expected > 0, high / expected, np.nan)
    judged = (table["tickets"] >= min_tickets).to_numpy()
    table["flag"] = np.where(judged & (table["ci_low"] > 1), ABOVE, np.where(judged & (table["ci_high"] < 1), BELOW, ""))
    table["excess"] = table["observed"] - table["expected"]
    order = table["flag"].map({ABOVE: 0, BELOW: 2}).fillna(1)
    table = table.assign(_order=order).sort_values(["_order", "ratio"], ascending=[True, False]).drop(columns="_order")
    return table.reset_index()


def summarize_case_mix(tickets: pd.DataFrame, confidence: float = 0.95, reference: str = "window",
                       dimensions: dict[str, str] | None = None, max_rows: int | None = None,
                       min_tickets: int = 1) -> dict:
    """Every dimension's table (JSON-ready) and how it was computed.

    `tickets`: one row per ticket with OBSERVED, EXPECTED and the dimension columns present.
    `max_rows` keeps the flagged rows and then the largest |excess| up to that many per table.
    Returns {"confidence", "reference", "offset", "tickets", "observed", "expected", "tables":
    {dimension: {"label", "rows": [...], "flagged_above", "flagged_below", "compared"}}}."""
    dimensions = dimensions or DIMENSIONS
    standardized, offset = standardize_to_window(tickets, reference)
    out = {"confidence": confidence, "reference": reference, "offset": offset, "min_tickets": min_tickets,
           "tickets": int(len(tickets)),
           "observed": int(tickets[OBSERVED].sum()) if len(tickets) else 0,
           "expected": float(standardized[EXPECTED].sum()) if len(tickets) else 0.0, "tables": {}}
    for column, label in dimensions.items():
        if column not in standardized or standardized[column].notna().sum() == 0:
            continue
        table = compare_to_case_mix(standardized, column, confidence, min_tickets)
        shown = table
        if max_rows is not None and len(table) > max_rows:
            flagged = table[table["flag"] != ""]
            rest = table[table["flag"] == ""]
            rest = rest.reindex(rest["excess"].abs().sort_values(ascending=False).index)
            shown = pd.concat([flagged, rest.head(max(0, max_rows - len(flagged)))])
        out["tables"][column] = {
            "label": label,
            "compared": int(len(table)),
            "flagged_above": int((table["flag"] == ABOVE).sum()),
            "flagged_below": int((table["flag"] == BELOW).sum()),
            "rows": [{k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}
                     for row in shown.rename(columns={column: "value"}).to_dict("records")],
        }
    return out
