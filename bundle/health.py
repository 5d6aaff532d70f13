"""Is the model still right? Drift against the training distribution, and quality from outcomes.

- **Reference distribution** (`describe_reference`): written into the bundle at training as
  plain JSON (reference.json; never a pickle): per feature, quantile-bin edges of the training
  period and each bin's share (categorical features: each level's share), and the same for the
  calibrated score on the validation period (the period the bands were chosen on).
- **Drift**: the population stability index of each feature and of the score, live against
  reference, PSI = sum over bins of (a - e) * ln(a / e), shares floored at 1e-4 (Siddiqi,
  "Credit Risk Scorecards", 2006, ch. 8; Yurdakul, "Statistical properties of the population
  stability index", 2018). Read as: under 0.10 stable, 0.10-0.25 watch, over 0.25 drifted.
- **Outcomes**: realised escalation rate per band, ROC-AUC (scikit-learn) and expected calibration
  error (bundle.evaluate, as training computes them) over rolling windows, alert precision and
  lead time, and how people's verdicts compared with what happened.
- **Retrain recommended** when the score or enough features drift past the threshold, or the
  latest judged window's ECE or ROC-AUC crosses its threshold (params file: `monitoring`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bundle import evaluate

REFERENCE = "reference.json"
SCORE = "score"
MISSING_BIN = "(missing)"
OTHER_LEVEL = "(other)"
MAX_LEVELS = 20
SHARE_FLOOR = 1e-4
BANDS = ("high", "medium", "low")
# The params file's `monitoring` section (training/config.MonitoringParams uses these defaults);
# a bundle's own params win (read_thresholds).
DEFAULTS = {
    "window_days": 7.0,
    "windows": 6,
    "psi_bins": 10,
    "psi_watch": 0.10,
    "psi_retrain": 0.25,
    "drifting_features_for_retrain": 3,
    "ece_retrain": 0.05,
    "auc_drop_retrain": 0.05,
    "min_outcomes": 200,
    "min_drift_rows": 500,
    "reference_rows": 200_000,
}


def read_thresholds(metadata: dict) -> dict:
    """The bundle's `monitoring.*` params over DEFAULTS (bundles trained before them get the defaults)."""
    params = metadata.get("params") or {}
    out = dict(DEFAULTS)
    for key, default in DEFAULTS.items():
        value = params.get(f"monitoring.{key}")
        if value is not None:
            out[key] = type(default)(value)
    return out


# --- reference distributions ------------------------------------------------------------------


def _is_categorical(values: pd.Series) -> bool:
    return isinstance(values.dtype, pd.CategoricalDtype) or values.dtype == object or \
        pd.api.types.is_string_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype)


def describe_numeric(values: np.ndarray, bins: int) -> dict:
    """Quantile edges of the finite values and the share in each bin (plus the missing share)."""
    values = np.asarray(values, dtype="float64")
    finite = values[np.isfinite(values)]
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1])) if len(finite) else np.array([])
    entry = {"kind": "numeric", "edges": edges.tolist(), "rows": int(len(values))}
    entry["shares"], entry["missing"] = bin_numeric(entry, values)
    return entry


def bin_numeric(entry: dict, values: np.ndarray) -> tuple[list[float], float]:
    """Shares of `values` in the entry's bins: (-inf, e1), [e1, e2), ..., [ek, inf); and the missing share."""
    values = np.asarray(values, dtype="float64")
    n = max(len(values), 1)
    finite = np.isfinite(values)
    codes = np.searchsorted(np.asarray(entry["edges"], dtype="float64"), values[finite], side="right")
    counts = np.bincount(codes, minlength=len(entry["edges"]) + 1)
    return (counts / n).tolist(), float((~finite).sum() / n)


def describe_categorical(values: pd.Series, max_levels: int = MAX_LEVELS) -> dict:
    """Each frequent level's share (the rest as one "other" level) and the missing share."""
    text = values.astype("string")
    counts = text.value_counts()
    levels = [str(v) for v in counts.index[:max_levels]]
    entry = {"kind": "categorical", "levels": levels, "rows": int(len(values))}
    entry["shares"], entry["missing"] = bin_categorical(entry, values)
    return entry


def bin_categorical(entry: dict, values: pd.Series) -> tuple[list[float], float]:
    """Shares of the entry's levels, then of every other level together; and the missing share."""
    text = pd.Series(values).astype("string")
    n = max(len(text), 1)
    known = text.dropna()
    counts = known.value_counts()
    shares = [float(counts.get(level, 0) / n) for level in entry["levels"]]
    shares.append(float(known[~known.isin(entry["levels"])].size / n))
    return shares, float(text.isna().sum() / n)


def describe_reference(features: pd.DataFrame, score: np.ndarray, bins: int = 10, max_rows: int | None = None,
                       seed: int = 0) -> dict:
    """The training distribution of every feature column and of the score, as JSON-ready data.

    `features`: the training period's feature matrix (numeric columns, categorical columns as
    pandas categoricals or strings); `score`: calibrated probabilities of the reference period.
    `max_rows`: rows sampled at random (seeded) to bound the work."""
    if max_rows is not None and len(features) > max_rows:
        pick = np.sort(np.random.default_rng(seed).choice(len(features), max_rows, replace=False))
        features = features.iloc[pick]
    out = {"bins": bins, "features": {}}
    for name in features.columns:
        column = features[name]
        out["features"][name] = describe_categorical(column) if _is_categorical(column) else \
            describe_numeric(column.to_numpy(dtype="float64", na_value=np.nan), bins)
    out[SCORE] = describe_numeric(np.asarray(score, dtype="float64"), bins)
    return out


# --- drift ----------------------------------------------------------------------------------


def population_stability_index(expected: list[float], actual: list[float], floor: float = SHARE_FLOOR) -> float:
    """PSI = sum (a - e) ln(a / e) over bins, both share vectors floored at `floor`."""
    e = np.maximum(np.asarray(expected, dtype="float64"), floor)
    a = np.maximum(np.asarray(actual, dtype="float64"), floor)
    return float(np.sum((a - e) * np.log(a / e)))


def compute_psi(entry: dict, values) -> float:
    """PSI of `values` against one reference entry (numeric or categorical), missing as its own bin."""
    if entry["kind"] == "numeric":
        shares, missing = bin_numeric(entry, pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(
            dtype="float64", na_value=np.nan))
    else:
        shares, missing = bin_categorical(entry, pd.Series(values))
    return population_stability_index([*entry["shares"], entry["missing"]], [*shares, missing])


def drift_level(psi: float | None, watch: float, drifted: float) -> str:
    if psi is None or psi != psi:
        return "not judged"
    return "drifted" if psi > drifted else ("watch" if psi > watch else "stable")


def summarize_drift(reference: dict, features: pd.DataFrame, score: np.ndarray | None,
                    thresholds: dict | None = None) -> dict:
    """PSI of the score and of every reference feature present in `features`, most drifted first.

    Returns {"rows", "judged", "score": {"psi", "level"}, "features": [{"feature", "psi", "level"}]};
    with fewer than `min_drift_rows` rows nothing is judged (psi None)."""
    thresholds = thresholds or DEFAULTS
    watch, drifted = thresholds["psi_watch"], thresholds["psi_retrain"]
    rows = int(len(features)) if features is not None else 0
    judged = rows >= thresholds["min_drift_rows"]
    table = []
    for name, entry in reference["features"].items():
        if features is None or name not in features:
            continue
        psi = compute_psi(entry, features[name]) if judged else None
        table.append({"feature": name, "psi": psi, "level": drift_level(psi, watch, drifted)})
    table.sort(key=lambda r: -1 if r["psi"] is None else r["psi"], reverse=True)
    score_rows = 0 if score is None else len(score)
    score_psi = compute_psi(reference[SCORE], np.asarray(score, dtype="float64")) \
        if score is not None and score_rows >= thresholds["min_drift_rows"] else None
    return {"rows": rows, "score_rows": int(score_rows), "judged": judged,
            "score": {"psi": score_psi, "level": drift_level(score_psi, watch, drifted)}, "features": table}


# --- outcomes ---------------------------------------------------------------------------------


def summarize_bands(outcomes: pd.DataFrame, reference_rates: dict[str, float | None] | None = None) -> list[dict]:
    """Per band: scores with a known outcome, mean predicted risk, realised escalation rate, and the
    test period's rate for the band. `outcomes`: band, probability, escalates (0/1)."""
    rows = []
    for band in BANDS:
        part = outcomes[outcomes["band"] == band] if len(outcomes) else outcomes
        rows.append({
            "band": band,
            "outcomes": int(len(part)),
            "escalations": int(part["escalates"].sum()) if len(part) else 0,
            "mean_predicted": float(part["probability"].mean()) if len(part) else None,
            "realised_rate": float(part["escalates"].mean()) if len(part) else None,
            "test_period_rate": (reference_rates or {}).get(band),
        })
    return rows


def summarize_windows(outcomes: pd.DataFrame, end: pd.Timestamp, window_days: float, windows: int,
                      ece_bins: int = 15, min_outcomes: int = 200) -> list[dict]:
    """ROC-AUC and ECE over consecutive windows of `window_days` ending at `end`, newest first.

    `outcomes`: scored_at (UTC), probability, escalates (0/1), one row per score whose outcome is
    known. A window with fewer than `min_outcomes` outcomes (or one class) is shown but not judged."""
    end = pd.Timestamp(end)
    width = pd.Timedelta(days=window_days)
    times = pd.to_datetime(outcomes["scored_at"], utc=True) if len(outcomes) else pd.Series(dtype="datetime64[ns, UTC]")
    out = []
    for k in range(windows):
        start, stop = end - (k + 1) * width, end - k * width
        part = outcomes[((times > start) & (times <= stop)).to_numpy()] if len(outcomes) else outcomes
        y = part["escalates"].to_numpy(dtype=float) if len(part) else np.array([])
        p = part["probability"].to_numpy(dtype=float) if len(part) else np.array([])
        judged = len(part) >= min_outcomes and len(np.unique(y)) == 2
        out.append({
            "from": start.isoformat(), "to": stop.isoformat(), "outcomes": int(len(part)),
            "escalations": int(y.sum()), "base_rate": float(y.mean()) if len(y) else None,
            "mean_predicted": float(p.mean()) if len(p) else None,
            "roc_auc": evaluate.score_ranking(y, p, ())["roc_auc"] if judged else None,
            "ece": evaluate.expected_calibration_error(y, p, ece_bins) if judged else None,
            "judged": judged,
        })
    return out


def summarize_alerts(alerts: pd.DataFrame) -> dict:
    """Alert precision (closed alerts whose ticket escalated) and lead time from alert to escalation.

    `alerts`: raised_at, outcome ("escalated" / "closed_without_escalation" / None while open),
    escalated_at (when the ticket escalated; NaT otherwise). Lead times in hours."""
    closed = alerts[alerts["outcome"].notna()] if len(alerts) else alerts
    escalated = closed[closed["outcome"] == "escalated"] if len(closed) else closed
    lead = ((pd.to_datetime(escalated["escalated_at"], utc=True) - pd.to_datetime(escalated["raised_at"], utc=True))
            / pd.Timedelta(hours=1)).dropna() if len(escalated) else pd.Series(dtype=float)

    def quantile(q: float) -> float | None:
        return float(lead.quantile(q)) if len(lead) else None

    return {"raised": int(len(alerts)), "closed": int(len(closed)), "escalated": int(len(escalated)),
            "precision": float(len(escalated) / len(closed)) if len(closed) else None,
            "lead_hours_median": quantile(0.5), "lead_hours_p25": quantile(0.25), "lead_hours_p75": quantile(0.75)}


def summarize_verdicts(verdicts: pd.DataFrame) -> list[dict]:
    """How people's verdicts compared with what happened: per verdict, how many tickets then escalated.

    `verdicts`: verdict, outcome ("escalated" / "not_escalated" / None while unknown)."""
    rows = []
    if not len(verdicts):
        return rows
    for verdict, part in verdicts.groupby("verdict", sort=True):
        known = part[part["outcome"].notna()]
        escalated = int((known["outcome"] == "escalated").sum())
        rows.append({"verdict": str(verdict), "given": int(len(part)), "outcome_known": int(len(known)),
                     "escalated": escalated, "not_escalated": int(len(known) - escalated),
                     "escalated_share": float(escalated / len(known)) if len(known) else None})
    return rows


def recommend_retrain(drift: dict, windows: list[dict], test_roc_auc: float | None, thresholds: dict) -> dict:
    """{"recommended": bool, "reasons": [...]} from the drift summary and the newest judged window."""
    reasons = []
    limit = thresholds["psi_retrain"]
    score_psi = drift["score"]["psi"]
    if score_psi is not None and score_psi > limit:
        reasons.append(f"the score's distribution drifted (PSI {score_psi:.2f} > {limit:g})")
    drifted = [r["feature"] for r in drift["features"] if r["psi"] is not None and r["psi"] > limit]
    if len(drifted) >= thresholds["drifting_features_for_retrain"]:
        reasons.append(f"{len(drifted)} features drifted (PSI > {limit:g}): {', '.join(drifted[:5])}")
    judged = [w for w in windows if w["judged"]]
    if judged:
        latest = judged[0]
        if latest["ece"] > thresholds["ece_retrain"]:
            reasons.append(f"calibration error {latest['ece']:.3f} > {thresholds['ece_retrain']:g} "
                           f"in the window to {latest['to'][:10]}")
        if test_roc_auc is not None and not math.isnan(test_roc_auc) and \
                latest["roc_auc"] < test_roc_auc - thresholds["auc_drop_retrain"]:
            reasons.append(f"ROC-AUC {latest['roc_auc']:.3f} is more than {thresholds['auc_drop_retrain']:g} "
                           f"below the test period's {test_roc_auc:.3f}")
    return {"recommended": bool(reasons), "reasons": reasons}
