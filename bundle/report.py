"""The feature-importance report for ops leads: one self-contained HTML file plus JSON and CSVs.

Every number is computed from the test-period predictions that training saved in the
bundle (report_data.parquet) with the same functions training used (bundle.evaluate),
so the report agrees with the run's metrics and can be regenerated from the bundle alone.
"""

from __future__ import annotations

import io
import json
import math
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd

from bundle import evaluate
from bundle.case_mix import CASE_MIX_DATA, DIMENSIONS, summarize_case_mix
from bundle.model import METADATA, BundleError, label_feature, manifest_digest, verify_manifest
from bundle.repeats import summarize_repeat_issues

REPORT_DATA = "report_data.parquet"
IMPORTANCE = "feature_importance.csv"
REPORT_HTML = "report.html"
REPORT_JSON = "report.json"
# The sha256 of the manifest of the bundle a report was rendered from: a report is current only
# while its bundle still has that manifest (a bundle can be rewritten under the same version).
REPORT_SOURCE = "bundle_manifest.sha256"
# Files a report folder holds: what other tools (and the service) may read.
REPORT_FILES = (REPORT_HTML, REPORT_JSON, "capacity.csv", "drivers.csv", "segments.csv", "earliness.csv",
                "calibration.csv", "priority_confusion.csv", "metrics.csv", "case_mix.csv", "repeat_issues.csv",
                "types.csv")
TYPE_DRIVERS = 5  # drivers listed per label in the by-type section
ESCALATION_TYPE = "escalation_type_later"
REPEAT_FEATURE = "customer_category_tickets_30d"
CONTRIBUTION_ROWS = 200_000  # test rows whose top-driver contributions the report computes
CAPACITY_SHARES = (0.01, 0.05, 0.10, 0.20)
TOP_DRIVERS = 8
SEGMENTS = {
    "category": "Category",
    "channel": "Channel",
    "customer_tier": "Customer tier",
    "group": "Team",
    ESCALATION_TYPE: "Escalation type",
    "repeat_issue": "Repeat issue",
}
MAX_SEGMENT_ROWS = 12
SEGMENT_MIN_ROWS = 50
NOT_ESCALATED = "not escalated"


class ReportError(RuntimeError):
    """The bundle has no report data (trained before reports existed) or is not a bundle."""


# --- collected during training ------------------------------------------------------------


def find_escalation_types(events: pd.DataFrame) -> pd.Series:
    """Each escalated ticket's escalation type, from the update where its level first rose."""
    if "escalation_type" not in events or "escalation_level" not in events:
        return pd.Series(dtype="string")
    level = events["escalation_level"].to_numpy()
    first = events.groupby("ticket_id", sort=False)["escalation_level"].transform("first").to_numpy()
    rises = events.loc[(level > first) & events["escalation_type"].notna().to_numpy(), ["ticket_id", "escalation_type"]]
    return rises.groupby("ticket_id", sort=False, observed=True)["escalation_type"].first().astype("string")


def collect_driver_values(model, features: pd.DataFrame, importance: pd.DataFrame,
                          top_n: int = TOP_DRIVERS, chunk_rows: int = 100_000,
                          max_contribution_rows: int | None = CONTRIBUTION_ROWS) -> pd.DataFrame:
    """Test-period values and per-prediction contributions of the top drivers (for their charts).

    TreeSHAP costs about a millisecond a row, so contributions are computed on at most
    `max_contribution_rows` evenly spaced rows (NaN on the others; the report's directions skip
    them); the values are kept for every row."""
    names = importance["feature"].head(top_n).tolist()
    extra = [REPEAT_FEATURE] if REPEAT_FEATURE in features and REPEAT_FEATURE not in names else []
    index = {name: i for i, name in enumerate(model.booster_.feature_name())}
    keep = [index[name] for name in names]
    step = 1 if not max_contribution_rows else max(1, -(-len(features) // max_contribution_rows))
    sampled = features.iloc[::step]
    # In chunks, keeping only the top drivers' columns: the full matrix would be rows x features.
    contrib = np.concatenate([
        model.booster_.predict(sampled.iloc[i : i + chunk_rows], pred_contrib=True)[:, keep]
        for i in range(0, len(sampled), chunk_rows)
    ]) if len(sampled) else np.empty((0, len(keep)))
    out = {}
    for name in names + extra:
        out[f"value__{name}"] = features[name].reset_index(drop=True)
        if name in names:
            column = np.full(len(features), np.nan, dtype=np.float32)
            column[::step] = contrib[:, names.index(name)]
            out[f"contribution__{name}"] = column
    return pd.DataFrame(out)


def write_report_data(result, bundle_dir: Path) -> Path:
    """The test-period rows the report is computed from, saved inside the bundle."""
    return _write_scores(result.test_scores, result.driver_values, Path(bundle_dir) / REPORT_DATA)


def label_file(name: str, label: str) -> str:
    """A non-primary label's copy of a bundle file: report_data.sla.parquet, feature_importance.sla.csv."""
    stem, dot, suffix = name.partition(".")
    return f"{stem}.{label}{dot}{suffix}"


def write_label_report_data(label, bundle_dir: Path) -> Path:
    """A non-primary label's test rows, scores and top-driver values (training.train.LabelResult)."""
    return _write_scores(label.test_scores, label.driver_values, Path(bundle_dir) / label_file(REPORT_DATA, label.name))


def _write_scores(test_scores: pd.DataFrame, driver_values: pd.DataFrame, path: Path) -> Path:
    frame = pd.concat([test_scores.reset_index(drop=True), driver_values.reset_index(drop=True)], axis=1)
    for column in frame.columns:
        if frame[column].dtype == object:
            frame[column] = frame[column].astype("string")
    frame.to_parquet(path, index=False)
    return path


# --- computed from the bundle -------------------------------------------------------------


@dataclass
class ReportInputs:
    metadata: dict
    importance: pd.DataFrame
    data: pd.DataFrame
    tickets: pd.DataFrame
    case_mix: pd.DataFrame | None = None  # the test period's tickets with their case-mix risk
    # Per non-primary label (features.labels): its test rows and scores, and its feature importance.
    labels: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return self.metadata["version"]


def read_bundle_version(bundle_dir: Path) -> str:
    path = Path(bundle_dir) / METADATA
    if not path.is_file():
        raise ReportError(f"{bundle_dir} is not a model bundle (no {METADATA}); run `make train` first")
    return json.loads(path.read_text())["version"]


def load_report_inputs(bundle_dir: Path) -> ReportInputs:
    """The bundle's files, after checking them against its manifest."""
    bundle_dir = Path(bundle_dir)
    read_bundle_version(bundle_dir)
    if not (bundle_dir / REPORT_DATA).is_file():
        raise ReportError(f"{bundle_dir} has no {REPORT_DATA}: it was trained before reports existed; retrain it")
    try:
        verify_manifest(bundle_dir)
    except BundleError as exc:
        raise ReportError(str(exc)) from exc
    import pyarrow.parquet as pq

    history = bundle_dir / "history.parquet"
    columns = [c for c in ("ticket_id", "created_at", "escalated", "customer_id", "category")
               if c in pq.read_schema(history).names]
    metadata = json.loads((bundle_dir / METADATA).read_text())
    labels = {}
    for entry in metadata.get("labels") or []:
        name = entry["name"]
        if entry.get("primary") or not (bundle_dir / label_file(REPORT_DATA, name)).is_file():
            continue
        labels[name] = (pd.read_parquet(bundle_dir / label_file(REPORT_DATA, name)),
                        pd.read_csv(bundle_dir / label_file(IMPORTANCE, name)))
    return ReportInputs(
        metadata=metadata,
        importance=pd.read_csv(bundle_dir / IMPORTANCE),
        data=pd.read_parquet(bundle_dir / REPORT_DATA),
        # One row per ticket: a reopened ticket has a history row per closed stretch.
        tickets=pd.read_parquet(history, columns=columns).drop_duplicates("ticket_id"),
        case_mix=pd.read_parquet(bundle_dir / CASE_MIX_DATA) if (bundle_dir / CASE_MIX_DATA).is_file() else None,
        labels=labels,
    )


def _number(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def summarize_headline(inputs: ReportInputs) -> dict:
    data, tickets, window = inputs.data, inputs.tickets, inputs.metadata["data_window"]
    escalated_test = data.groupby("ticket_id")["escalates"].max()
    return {
        "model_version": inputs.version,
        "model_created_at": inputs.metadata.get("created_at"),
        "window_from": min(w["created_from"] for w in window.values()),
        "window_to": max(w["created_to"] for w in window.values()),
        "tickets": int(len(tickets)),
        "escalated_tickets": int(tickets["escalated"].sum()),
        "escalation_rate": float(tickets["escalated"].mean()),
        "test_from": window["test"]["created_from"],
        "test_to": window["test"]["created_to"],
        "test_tickets": int(data["ticket_id"].nunique()),
        "test_escalated_tickets": int(escalated_test.sum()),
        "test_snapshots": int(len(data)),
        "test_escalating_snapshots": int(data["escalates"].sum()),
        "test_snapshot_escalation_rate": float(data["escalates"].mean()),
    }


def summarize_capacity(data: pd.DataFrame) -> list[dict]:
    """Review the top X % riskiest open tickets: share of escalations caught, reviews per catch."""
    y, prob = data["escalates"].to_numpy(), data["probability"].to_numpy()
    rows = []
    for share in CAPACITY_SHARES:
        precision, recall = evaluate.precision_recall_at_top(y, prob, share)
        reviews = max(1, int(round(len(prob) * share)))
        rows.append({
            "share_reviewed": share,
            "reviews": reviews,
            "escalations_caught": int(round(precision * reviews)),
            "escalations_total": int(y.sum()),
            "share_of_escalations_caught": recall,
            "precision": precision,
            "reviews_per_caught_escalation": (1 / precision) if precision > 0 else None,
            "lift": (precision / y.mean()) if y.mean() > 0 else None,
        })
    return rows


def _integer_valued(values: pd.Series) -> bool:
    finite = values.dropna()
    return len(finite) > 0 and bool(np.all(np.mod(finite.to_numpy(dtype=float), 1) == 0))


def _format_value(value: float, integer: bool) -> str:
    return f"{int(value):,}" if integer else f"{value:.3g}"


def bin_numeric(values: pd.Series, n_bins: int = 5) -> tuple[pd.Series, list[str]]:
    """Quantile bins (fewer when values repeat), labelled in plain words; missing gets its own bin."""
    numeric = pd.to_numeric(values, errors="coerce").astype(float)
    integer = _integer_valued(numeric)
    finite = numeric.dropna()
    if finite.nunique() <= n_bins:
        levels = sorted(finite.unique())
        codes = numeric.map({v: i for i, v in enumerate(levels)})
        labels = [_format_value(v, integer) for v in levels]
    else:
        edges = np.unique(np.quantile(finite, np.linspace(0, 1, n_bins + 1)))
        codes = pd.Series(np.clip(np.searchsorted(edges, numeric, side="right") - 1, 0, len(edges) - 2),
                          index=numeric.index).where(numeric.notna())
        labels = []
        for i in range(len(edges) - 1):
            low, high = edges[i], edges[i + 1]
            if i == len(edges) - 2:
                labels.append(f"{_format_value(low, integer)} or more")
            elif integer:
                top = int(high) - 1
                labels.append(_format_value(low, True) if top <= low else f"{int(low):,}–{top:,}")
            else:
                labels.append(f"{_format_value(low, False)} to {_format_value(high, False)}")
    if numeric.isna().any():
        codes = codes.fillna(len(labels))
        labels.append("unknown")
    return codes.astype(int), labels


def describe_driver(feature: str, values: pd.Series, contributions: np.ndarray | None, y: np.ndarray) -> dict:
    """Escalation rate by value range, the direction of the effect in words, and one sentence."""
    label = label_feature(feature)
    categorical = isinstance(values.dtype, pd.CategoricalDtype) or values.dtype == object or \
        pd.api.types.is_string_dtype(values.dtype)
    if categorical:
        text = values.astype("string").fillna("unknown")
        counts = text.value_counts()
        kept = counts.index[:8].tolist()
        grouped = text.where(text.isin(kept), "other")
        labels = [*kept, *(["other"] if (grouped == "other").any() else [])]
        codes = grouped.map({v: i for i, v in enumerate(labels)}).astype(int)
    else:
        codes, labels = bin_numeric(values)
    frame = pd.DataFrame({"bin": codes.to_numpy(), "y": y})
    stats = frame.groupby("bin")["y"].agg(["size", "mean"]).reindex(range(len(labels)))
    bins = [{"label": labels[i], "rows": int(np.nan_to_num(stats["size"].iloc[i])),
             "escalation_rate": _number(stats["mean"].iloc[i])} for i in range(len(labels))]

    if contributions is None:
        direction = "shown for the repeat-issue view"
    elif categorical:
        by_value = pd.Series(contributions).groupby(codes.to_numpy()).mean()
        up, down = labels[int(by_value.idxmax())], labels[int(by_value.idxmin())]
        direction = f"raises risk most when it is “{up}”; lowers it most when it is “{down}”"
    else:
        rho = pd.Series(pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)).corr(
            pd.Series(contributions), method="spearman")
        if rho != rho or abs(rho) < 0.3:
            direction = "no single direction: its effect depends on the rest of the ticket"
        else:
            direction = "the higher it is, the higher the risk" if rho > 0 else "the higher it is, the lower the risk"

    sentence = f"No value range of “{label}” stands out on its own."
    min_rows = max(30, int(0.01 * len(y)))
    candidates = [i for i, b in enumerate(bins) if b["rows"] >= min_rows and b["escalation_rate"] is not None]
    if candidates and len(bins) > 1:
        best = max(candidates, key=lambda i: bins[i]["escalation_rate"])
        rest = frame.loc[frame["bin"] != best, "y"]
        rate, rest_rate = bins[best]["escalation_rate"], float(rest.mean()) if len(rest) else float("nan")
        if rest_rate > 0 and rate / rest_rate >= 1.2:
            value = bins[best]["label"]
            phrase = f"is “{value}”" if categorical else (f"is {value}" if value != "unknown" else "is unknown")
            sentence = (f"Tickets whose {label} {phrase} escalate {rate / rest_rate:.1f}× as often as the rest "
                        f"({rate:.1%} vs {rest_rate:.1%}).")
    return {"feature": feature, "label": label, "direction": direction, "sentence": sentence, "bins": bins}


def summarize_drivers(inputs: ReportInputs) -> tuple[list[dict], list[dict]]:
    """All features' importance (both views) and the top drivers described in words."""
    importance = inputs.importance.copy()
    table = [
        {"feature": r.feature, "label": label_feature(r.feature), "mean_abs_contribution": float(r.mean_abs_contribution),
         "gain": float(r.gain), "gain_share": float(r.gain_share), "rank": i + 1}
        for i, r in enumerate(importance.itertuples())
    ]
    y = inputs.data["escalates"].to_numpy()
    drivers = []
    for row in table:
        value, contribution = f"value__{row['feature']}", f"contribution__{row['feature']}"
        if contribution not in inputs.data:
            continue
        described = describe_driver(row["feature"], inputs.data[value], inputs.data[contribution].to_numpy(), y)
        drivers.append(row | described)
    return table, drivers


def summarize_segments(data: pd.DataFrame) -> dict[str, list[dict]]:
    """Escalation rate and mean predicted risk per value of each segment column present."""
    total_escalations = max(int(data["escalates"].sum()), 1)
    segments = {}
    for column in SEGMENTS:
        if column == "repeat_issue":
            if f"value__{REPEAT_FEATURE}" not in data:
                continue
            values = pd.Series(np.where(data[f"value__{REPEAT_FEATURE}"].fillna(0).to_numpy() > 0,
                                        "repeat contact", "first contact"))
        elif column == ESCALATION_TYPE:
            if column not in data:
                continue
            values = data[column].astype("string").where(data["escalates"] == 1, NOT_ESCALATED).fillna("unknown")
        elif column in data:
            values = data[column].astype("string").fillna("unknown")
        else:
            continue
        counts = values.value_counts()
        kept = counts.index[:MAX_SEGMENT_ROWS].tolist()
        values = values.where(values.isin(kept), "other")
        frame = pd.DataFrame({"value": values.to_numpy(), "escalates": data["escalates"].to_numpy(),
                              "probability": data["probability"].to_numpy(), "ticket_id": data["ticket_id"].to_numpy()})
        grouped = frame.groupby("value", sort=False)
        table = pd.DataFrame({
            "snapshots": grouped.size(),
            "tickets": grouped["ticket_id"].nunique(),
            "escalations": grouped["escalates"].sum(),
            "escalation_rate": grouped["escalates"].mean(),
            "mean_predicted_risk": grouped["probability"].mean(),
        }).sort_values("snapshots", ascending=False)
        table["share_of_escalations"] = table["escalations"] / total_escalations
        table["few_rows"] = table["snapshots"] < SEGMENT_MIN_ROWS
        segments[column] = [
            {"value": str(value), **{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}}
            for value, row in table.iterrows()
        ]
    return segments


def summarize_earliness(inputs: ReportInputs) -> list[dict]:
    data, params = inputs.data, inputs.metadata["params"]
    max_position = int(params.get("evaluation.max_position", 8))
    y, position = data["escalates"].to_numpy(), data["position"].to_numpy()
    ours = evaluate.score_by_position(y, data["probability"].to_numpy(), position, max_position)
    logistic = evaluate.score_by_position(y, data["logistic_probability"].to_numpy(), position, max_position)
    return [
        {"position": p, "snapshots": int((position == p).sum()), "escalation_rate": _number(y[position == p].mean())
         if (position == p).any() else None,
         "roc_auc": _number(ours[f"roc_auc_position_{p}"]), "roc_auc_logistic": _number(logistic[f"roc_auc_position_{p}"])}
        for p in range(max_position + 1)
    ]


def summarize_calibration(data: pd.DataFrame, n_bins: int = 10) -> dict:
    """Predicted vs observed escalation rate in ten groups of equal size."""
    prob, y = data["probability"].to_numpy(), data["escalates"].to_numpy()
    order = np.argsort(prob, kind="stable")
    groups = np.array_split(order, n_bins)
    return {"bins": [{"rows": int(len(g)), "mean_predicted": float(prob[g].mean()), "observed": float(y[g].mean())}
                     for g in groups if len(g)]}


def summarize_precision_recall(data: pd.DataFrame, points: int = 200) -> dict:
    from sklearn.metrics import precision_recall_curve

    curves = {}
    y = data["escalates"].to_numpy()
    for name, column in (("model", "probability"), ("logistic baseline", "logistic_probability")):
        precision, recall, _ = precision_recall_curve(y, data[column].to_numpy())
        pick = np.unique(np.linspace(0, len(recall) - 1, points).astype(int))
        curves[name] = {"recall": recall[pick].tolist(), "precision": precision[pick].tolist()}
    return curves


def summarize_confusion(inputs: ReportInputs) -> dict:
    classes = inputs.metadata["priority_classes"]
    if not classes:  # no priority model (the export has no priority target)
        return {"classes": [], "matrix": [], "rows": 0, "typed": {}}
    data = inputs.data
    final = data["priority_final"].astype("string")
    known = final.isin(classes).fillna(False).to_numpy()
    y_true = final[known].to_numpy(dtype=object)
    y_pred = data.loc[known, "priority_predicted"].astype(str).to_numpy(dtype=object)
    typed = data.loc[known, "priority_typed"].astype(str).to_numpy(dtype=object)
    matrix = evaluate.tabulate_confusion(y_true, y_pred, classes)
    return {
        "classes": classes,
        "matrix": matrix.to_numpy().tolist(),
        "rows": int(known.sum()),
        **evaluate.score_priority(y_true, y_pred, classes),
        "typed": evaluate.score_priority(y_true, typed, classes),
    }


def summarize_metrics(inputs: ReportInputs) -> dict:
    """Model and logistic baseline recomputed from the saved scores; the rule baseline as training logged it."""
    data, params, logged = inputs.data, inputs.metadata["params"], inputs.metadata["metrics"]
    shares = tuple(params.get("evaluation.top_shares", (0.05, 0.10, 0.20)))
    bins = int(params.get("evaluation.ece_bins", 15))
    y = data["escalates"].to_numpy()
    ours = evaluate.score_binary(y, data["probability"].to_numpy(), shares, bins)
    logistic = evaluate.score_binary(y, data["logistic_probability"].to_numpy(), shares, bins)
    rule = {k.removeprefix("baseline_priority_rule_"): v for k, v in logged.items()
            if k.startswith("baseline_priority_rule_")}
    return {"model": ours, "logistic_baseline": logistic, "priority_rule_baseline": rule,
            "ece_uncalibrated": logged.get("test_ece_uncalibrated")}


def _param(metadata: dict, key: str, default):
    value = (metadata.get("params") or {}).get(key)
    return default if value is None else type(default)(value)


def summarize_case_mix_period(inputs: ReportInputs) -> dict | None:
    """The against-case-mix tables of the test period (bundle.case_mix), None without a case-mix model."""
    if inputs.case_mix is None or inputs.case_mix.empty:
        return None
    metadata = inputs.metadata
    summary = summarize_case_mix(inputs.case_mix, confidence=_param(metadata, "case_mix.confidence", 0.95),
                                 reference=_param(metadata, "case_mix.reference", "window"),
                                 max_rows=_param(metadata, "case_mix.max_rows", 15),
                                 min_tickets=_param(metadata, "case_mix.min_tickets", 20))
    summary["model_roc_auc"] = metadata["metrics"].get("case_mix_test_roc_auc")
    summary["features"] = len((metadata.get("case_mix") or {}).get("features", []))
    return summary


def summarize_repeats_period(inputs: ReportInputs) -> dict | None:
    """Repeat contacts among the test period's tickets (earlier tickets count as the first contact)."""
    tickets = inputs.tickets
    if "customer_id" not in tickets or tickets["customer_id"].notna().sum() == 0:
        return None
    return summarize_repeat_issues(tickets, _param(inputs.metadata, "case_mix.repeat_within_days", 7.0),
                                   window_from=pd.Timestamp(inputs.metadata["data_window"]["test"]["created_from"]),
                                   max_rows=_param(inputs.metadata, "case_mix.max_rows", 15))


def summarize_types(inputs: ReportInputs) -> list[dict]:
    """Per label (the primary first): what it predicts, its test ROC-AUC beside its logistic baseline,
    the review capacity it buys and its top drivers, from its own saved test scores."""
    metadata = inputs.metadata
    entries = metadata.get("labels") or [{"name": metadata.get("label", {}).get("name", "escalation"),
                                          "primary": True, "escalation_type": None,
                                          "definition": metadata.get("label", {}).get("definition", "")}]
    out = []
    for entry in entries:
        if entry.get("primary"):
            data, importance = inputs.data, inputs.importance
        elif entry["name"] in inputs.labels:
            data, importance = inputs.labels[entry["name"]]
        else:
            continue
        y = data["escalates"].to_numpy()
        ours = evaluate.score_ranking(y, data["probability"].to_numpy(), (0.10,))
        logistic = evaluate.score_ranking(y, data["logistic_probability"].to_numpy(), (0.10,))
        capacity = {row["share_reviewed"]: row for row in summarize_capacity(data)}
        out.append({
            "name": entry["name"],
            "primary": bool(entry.get("primary")),
            "escalation_type": entry.get("escalation_type"),
            "definition": entry.get("definition", ""),
            "snapshots": int(len(data)),
            "tickets": int(data["ticket_id"].nunique()),
            "escalating_snapshots": int(y.sum()),
            "base_rate": float(y.mean()) if len(y) else None,
            "roc_auc": _number(ours["roc_auc"]),
            "roc_auc_logistic": _number(logistic["roc_auc"]),
            "capacity": [capacity[share] for share in (0.05, 0.10, 0.20) if share in capacity],
            "drivers": [{"feature": r.feature, "label": label_feature(r.feature),
                         "mean_abs_contribution": float(r.mean_abs_contribution)}
                        for r in importance.head(TYPE_DRIVERS).itertuples()],
        })
    return out


def describe_limits(report: dict) -> list[str]:
    limits = [
        "It learns from past tickets: if products, teams or escalation rules change, its numbers drift "
        "until it is retrained on newer history.",
        "Scores rank tickets; a high score means ‘review this one first’, not ‘this will certainly escalate’.",
        "Segments with few tickets (marked “few”) have rates that can move a lot by chance.",
        "Drivers show association in past data, not cause: changing a driver need not change the outcome.",
    ]
    earliness = [e for e in report["earliness"] if e["roc_auc"] is not None]
    if earliness:
        first, best = earliness[0], max(earliness, key=lambda e: e["roc_auc"])
        if best["roc_auc"] - first["roc_auc"] > 0.02:
            limits.append(f"At creation the model ranks less well (ROC-AUC {first['roc_auc']:.2f}) than after a few "
                          f"updates (up to {best['roc_auc']:.2f} at update {best['position']}): it learns from "
                          "how the conversation goes.")
    ece = report["metrics"]["model"]["ece"]
    limits.append(f"Probabilities are calibrated on the validation period; on the test period they are off by "
                  f"{ece:.1%} points on average (expected calibration error).")
    return limits


def build_report(inputs: ReportInputs) -> dict:
    """Every number the report shows, as plain JSON-ready data."""
    importance, drivers = summarize_drivers(inputs)
    metadata = inputs.metadata
    report = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": {"name": metadata.get("name"), "version": inputs.version, "created_at": metadata.get("created_at"),
                  "data_fingerprint": metadata.get("data_fingerprint")},
        "headline": summarize_headline(inputs),
        "capacity": summarize_capacity(inputs.data),
        "importance": importance,
        "drivers": drivers[:TOP_DRIVERS],
        "segments": summarize_segments(inputs.data),
        "earliness": summarize_earliness(inputs),
        "calibration": summarize_calibration(inputs.data),
        "precision_recall": summarize_precision_recall(inputs.data),
        "priority_confusion": summarize_confusion(inputs),
        "metrics": summarize_metrics(inputs),
        "case_mix": summarize_case_mix_period(inputs),
        "repeat_issues": summarize_repeats_period(inputs),
        "data_window": metadata["data_window"],
        "label": metadata.get("label", {}),
        "bands": {k: metadata["metrics"].get(f"test_band_{k}_share") for k in ("high", "medium", "low")},
        "types": summarize_types(inputs),
        # Labels the params file asked for that have no model here, with why (e.g. the Dask engine
        # trains the primary label only; a type too rare in the data).
        "labels_not_trained": dict(inputs.metadata.get("skipped_labels") or {}),
    }
    report["limits"] = describe_limits(report)
    return report


# --- rendering ----------------------------------------------------------------------------

INK, ACCENT, MUTED, LIGHT = "#1f2933", "#c0392b", "#7b8794", "#e4e7eb"


def figure_to_svg(fig, figure_id: str, title: str) -> str:
    """Inline SVG text; ids salted per figure so several charts can share one page."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": figure_id, "svg.fonttype": "none"}):
        fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg"):]
    return svg.replace("<svg ", f'<svg role="img" aria-labelledby="{figure_id}-title" ', 1).replace(
        ">", f'><title id="{figure_id}-title">{escape(title)}</title>', 1)


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    fig.patch.set_alpha(0)
    return fig, fig.add_subplot()


def _style(ax) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(colors=INK, labelsize=8)
    ax.grid(axis="y", color=LIGHT, linewidth=0.6)
    ax.set_axisbelow(True)


def _percent_axis(ax, axis: str = "y") -> None:
    from matplotlib.ticker import PercentFormatter

    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(PercentFormatter(1.0))


def chart_capacity(report: dict, data: pd.DataFrame) -> str:
    y = data["escalates"].to_numpy()
    order = np.argsort(-data["probability"].to_numpy(), kind="stable")
    # A few hundred points draw the curve; one per ticket would bloat the SVG.
    pick = np.unique(np.linspace(0, len(y) - 1, min(len(y), 400)).astype(int))
    caught = (np.cumsum(y[order]) / max(y.sum(), 1))[pick]
    reviewed = (np.arange(1, len(y) + 1) / len(y))[pick]
    fig, ax = _figure(4.6, 2.8)
    ax.plot(reviewed, caught, color=ACCENT, label="reviewing by model risk")
    ax.plot([0, 1], [0, 1], color=MUTED, linestyle="--", label="reviewing at random")
    for row in report["capacity"]:
        ax.plot(row["share_reviewed"], row["share_of_escalations_caught"], "o", color=INK, markersize=3)
    ax.set_xlim(0, 0.5)
    ax.set_ylim(0, 1)
    ax.set_xlabel("share of open tickets reviewed", fontsize=8)
    ax.set_ylabel("share of escalations caught", fontsize=8)
    _percent_axis(ax, "x")
    _percent_axis(ax, "y")
    ax.legend(fontsize=7, frameon=False, loc="lower right")
    _style(ax)
    return figure_to_svg(fig, "capacity-curve", "Share of escalations caught by share of tickets reviewed")


def chart_importance(report: dict, top: int = 12) -> str:
    rows = report["importance"][:top][::-1]
    fig, ax = _figure(6.2, 0.28 * len(rows) + 0.6)
    ax.barh([r["label"] for r in rows], [r["mean_abs_contribution"] for r in rows], color=ACCENT)
    ax.set_xlabel("average effect on a ticket's risk score (mean |contribution|, log-odds)", fontsize=8)
    _style(ax)
    ax.grid(axis="x", color=LIGHT, linewidth=0.6)
    ax.grid(axis="y", visible=False)
    return figure_to_svg(fig, "driver-importance", "What drives escalations: average effect per feature")


def chart_driver(driver: dict, overall: float, index: int) -> str:
    bins = [b for b in driver["bins"] if b["escalation_rate"] is not None]
    fig, ax = _figure(3.4, 1.9)
    ax.bar(range(len(bins)), [b["escalation_rate"] for b in bins], color=ACCENT, width=0.7)
    ax.axhline(overall, color=MUTED, linestyle="--", linewidth=0.8)
    ax.set_xticks(range(len(bins)), [b["label"] for b in bins], fontsize=7,
                  rotation=30 if len(bins) > 4 else 0, ha="right" if len(bins) > 4 else "center")
    ax.set_ylabel("escalation rate", fontsize=7)
    _percent_axis(ax)
    _style(ax)
    return figure_to_svg(fig, f"driver-{index}", f"Escalation rate by {driver['label']}")


def chart_segment(name: str, rows: list[dict]) -> str:
    rows = rows[::-1]
    fig, ax = _figure(5.2, 0.3 * len(rows) + 0.7)
    positions = np.arange(len(rows))
    ax.barh(positions + 0.2, [r["escalation_rate"] for r in rows], height=0.4, color=ACCENT, label="actual escalation rate")
    ax.barh(positions - 0.2, [r["mean_predicted_risk"] for r in rows], height=0.4, color=MUTED, label="mean predicted risk")
    ax.set_yticks(positions, [r["value"] for r in rows], fontsize=7)
    _percent_axis(ax, "x")
    ax.legend(fontsize=7, frameon=False, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2)
    _style(ax)
    ax.grid(axis="x", color=LIGHT, linewidth=0.6)
    ax.grid(axis="y", visible=False)
    return figure_to_svg(fig, f"segment-{name}", f"Escalation rate and predicted risk by {SEGMENTS[name].lower()}")


def chart_earliness(report: dict) -> str:
    rows = [r for r in report["earliness"] if r["roc_auc"] is not None]
    fig, ax = _figure(4.6, 2.6)
    ax.plot([r["position"] for r in rows], [r["roc_auc"] for r in rows], "o-", color=ACCENT, label="model")
    ax.plot([r["position"] for r in rows], [r["roc_auc_logistic"] for r in rows], "s--", color=MUTED,
            label="logistic baseline", markersize=3)
    ax.axhline(0.5, color=LIGHT, linewidth=1)
    ax.set_xticks([r["position"] for r in rows], ["at creation" if r["position"] == 0 else str(r["position"])
                                                   for r in rows], fontsize=7)
    ax.set_xlabel("number of updates the ticket has had", fontsize=8)
    ax.set_ylabel("ROC-AUC (0.5 = guessing)", fontsize=8)
    ax.set_ylim(0.45, 1.0)
    ax.legend(fontsize=7, frameon=False)
    _style(ax)
    return figure_to_svg(fig, "earliness", "ROC-AUC by number of updates")


def chart_calibration(report: dict) -> str:
    bins = report["calibration"]["bins"]
    fig, ax = _figure(3.4, 3.0)
    top = max(max(b["mean_predicted"] for b in bins), max(b["observed"] for b in bins)) * 1.05
    ax.plot([0, top], [0, top], color=MUTED, linestyle="--", linewidth=0.8, label="perfect")
    ax.plot([b["mean_predicted"] for b in bins], [b["observed"] for b in bins], "o-", color=ACCENT, label="model")
    ax.set_xlabel("predicted risk (group average)", fontsize=8)
    ax.set_ylabel("share that escalated", fontsize=8)
    _percent_axis(ax, "x")
    _percent_axis(ax, "y")
    ax.legend(fontsize=7, frameon=False)
    _style(ax)
    return figure_to_svg(fig, "calibration", "Predicted risk against actual escalation rate")


def chart_precision_recall(report: dict) -> str:
    fig, ax = _figure(3.4, 3.0)
    for (name, curve), color, style in zip(report["precision_recall"].items(), (ACCENT, MUTED), ("-", "--"),
                                           strict=False):
        ax.plot(curve["recall"], curve["precision"], style, color=color, label=name)
    ax.axhline(report["headline"]["test_snapshot_escalation_rate"], color=LIGHT, linewidth=1)
    ax.set_xlabel("share of escalations caught (recall)", fontsize=8)
    ax.set_ylabel("share of flagged that escalate", fontsize=8)
    _percent_axis(ax, "x")
    _percent_axis(ax, "y")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, frameon=False)
    _style(ax)
    return figure_to_svg(fig, "precision-recall", "Precision-recall curve")


def chart_confusion(report: dict) -> str:
    confusion = report["priority_confusion"]
    matrix = np.asarray(confusion["matrix"], dtype=float)
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = _figure(3.4, 3.0)
    ax.imshow(share, cmap="Reds", vmin=0, vmax=1)
    classes = confusion["classes"]
    ax.set_xticks(range(len(classes)), classes, fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("priority the model suggests", fontsize=8)
    ax.set_ylabel("priority the ticket ended with", fontsize=8)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{int(matrix[i, j]):,}", ha="center", va="center", fontsize=7,
                    color="white" if share[i, j] > 0.5 else INK)
    return figure_to_svg(fig, "priority-confusion", "Suggested priority against final priority")


def chart_case_mix(name: str, table: dict, confidence: float) -> str:
    """Observed / expected with its interval per row (a forest plot); 1 = as the case mix predicts."""
    rows = table["rows"][::-1]
    fig, ax = _figure(5.6, 0.26 * len(rows) + 0.9)
    positions = np.arange(len(rows))
    for i, row in enumerate(rows):
        if row["ratio"] is None:
            continue
        color = ACCENT if row["flag"] == "above" else (INK if row["flag"] == "below" else MUTED)
        ax.plot([row["ci_low"], min(row["ci_high"], 6.0)], [i, i], color=color, linewidth=1.4)
        ax.plot(row["ratio"], i, "o", color=color, markersize=4)
    ax.axvline(1.0, color=INK, linestyle="--", linewidth=0.8)
    ax.set_yticks(positions, [str(r["value"]) for r in rows], fontsize=7)
    top = max([r["ci_high"] for r in rows if r["ci_high"] is not None] + [2.0])
    ax.set_xlim(0, min(top * 1.05, 6.0))  # an interval running past 6 is cut at the edge
    ax.set_xlabel(f"observed / expected escalations ({confidence:.0%} interval)", fontsize=8)
    _style(ax)
    ax.grid(axis="x", color=LIGHT, linewidth=0.6)
    ax.grid(axis="y", visible=False)
    return figure_to_svg(fig, f"case-mix-{name.replace('_', '-')}",
                         f"Escalations against case mix by {table['label'].lower()}")


def render_html(report: dict, inputs: ReportInputs) -> str:
    """The whole page, charts inline as SVG: no scripts, no external resources."""
    from jinja2 import Environment, PackageLoader, select_autoescape
    from markupsafe import Markup

    overall = report["headline"]["test_snapshot_escalation_rate"]
    charts = {
        "capacity": chart_capacity(report, inputs.data),
        "importance": chart_importance(report),
        "drivers": [chart_driver(d, overall, i) for i, d in enumerate(report["drivers"])],
        "segments": {name: chart_segment(name, rows) for name, rows in report["segments"].items()},
        "earliness": chart_earliness(report),
        "calibration": chart_calibration(report),
        "precision_recall": chart_precision_recall(report),
        "confusion": chart_confusion(report) if report["priority_confusion"]["classes"] else "",
        "case_mix": {name: chart_case_mix(name, table, report["case_mix"]["confidence"])
                     for name, table in (report["case_mix"] or {"tables": {}})["tables"].items() if table["rows"]},
    }
    safe = {k: ([Markup(s) for s in v] if isinstance(v, list) else {n: Markup(s) for n, s in v.items()}
                if isinstance(v, dict) else Markup(v)) for k, v in charts.items()}
    env = Environment(loader=PackageLoader("bundle", "."), autoescape=select_autoescape(["html", "j2"]))
    env.filters["pct"] = lambda v, d=0: "–" if v is None or v != v else f"{v:.{d}%}"
    env.filters["num"] = lambda v, d=0: "–" if v is None or v != v else f"{v:,.{d}f}"
    env.filters["day"] = lambda v: str(v)[:10]
    return env.get_template("report.html.j2").render(report=report, charts=safe, segment_names=SEGMENTS,
                                                     files=REPORT_FILES, dimensions=DIMENSIONS)


def write_tables(report: dict, output_dir: Path) -> None:
    """CSV copies of the report's tables for spreadsheets and other tools."""
    pd.DataFrame(report["capacity"]).to_csv(output_dir / "capacity.csv", index=False)
    drivers = pd.DataFrame(report["importance"])
    described = {d["feature"]: d for d in report["drivers"]}
    drivers["direction"] = drivers["feature"].map(lambda f: described.get(f, {}).get("direction"))
    drivers["sentence"] = drivers["feature"].map(lambda f: described.get(f, {}).get("sentence"))
    drivers.to_csv(output_dir / "drivers.csv", index=False)
    pd.DataFrame([{"segment": name, **row} for name, rows in report["segments"].items() for row in rows]).to_csv(
        output_dir / "segments.csv", index=False)
    pd.DataFrame(report["earliness"]).to_csv(output_dir / "earliness.csv", index=False)
    pd.DataFrame(report["calibration"]["bins"]).to_csv(output_dir / "calibration.csv", index=False)
    confusion = report["priority_confusion"]
    pd.DataFrame(confusion["matrix"], index=pd.Index(confusion["classes"], name="final"),
                 columns=confusion["classes"]).to_csv(output_dir / "priority_confusion.csv")
    case_mix = report.get("case_mix") or {"tables": {}}
    pd.DataFrame([{"dimension": name, **row} for name, table in case_mix["tables"].items() for row in table["rows"]],
                 columns=["dimension", "value", "tickets", "observed", "expected", "ratio", "ci_low", "ci_high", "flag",
                          "excess"]).to_csv(output_dir / "case_mix.csv", index=False)
    repeats = report.get("repeat_issues") or {"topics": []}
    pd.DataFrame(repeats["topics"], columns=["topic", "tickets", "repeats", "repeat_share", "escalation_rate_repeat",
                                             "escalation_rate_first"]).to_csv(output_dir / "repeat_issues.csv",
                                                                              index=False)
    metrics = report["metrics"]
    pd.DataFrame([
        {"label": t["name"], "primary": t["primary"], "escalation_type": t["escalation_type"],
         "definition": t["definition"], "snapshots": t["snapshots"], "base_rate": t["base_rate"],
         "roc_auc": t["roc_auc"], "roc_auc_logistic": t["roc_auc_logistic"],
         **{f"share_caught_top_{int(round(c['share_reviewed'] * 100))}pct": c["share_of_escalations_caught"]
            for c in t["capacity"]},
         "top_drivers": "; ".join(d["label"] for d in t["drivers"]), "not_trained": None}
        for t in report["types"]
    ] + [{"label": name, "not_trained": why} for name, why in report.get("labels_not_trained", {}).items()]
    ).to_csv(output_dir / "types.csv", index=False)
    pd.DataFrame({"model": metrics["model"], "logistic_baseline": metrics["logistic_baseline"],
                  "priority_rule_baseline": pd.Series(metrics["priority_rule_baseline"], dtype=float)}).rename_axis(
        "metric").to_csv(output_dir / "metrics.csv")


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _clean(value: object) -> object:
    """NaN is not JSON: write null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_report(bundle_dir: Path, output_dir: Path) -> dict:
    """Bundle in, report folder out (written to a temp folder, then renamed into place)."""
    started = time.perf_counter()
    digest = manifest_digest(bundle_dir)
    inputs = load_report_inputs(bundle_dir)
    report = _clean(build_report(inputs))
    html = render_html(report, inputs)
    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = output_dir.parent / f".{output_dir.name}.{time.time_ns()}.tmp"
    tmp_dir.mkdir()
    (tmp_dir / REPORT_HTML).write_text(html, encoding="utf-8")
    (tmp_dir / REPORT_JSON).write_text(json.dumps(report, indent=1, default=_json_default), encoding="utf-8")
    write_tables(report, tmp_dir)
    (tmp_dir / REPORT_SOURCE).write_text(digest or "")
    if output_dir.exists():
        old = output_dir.parent / f".{output_dir.name}.{time.time_ns()}.old"
        output_dir.rename(old)
        tmp_dir.rename(output_dir)
        for path in old.iterdir():
            path.unlink()
        old.rmdir()
    else:
        tmp_dir.rename(output_dir)
    return {"dir": output_dir, "html_bytes": len(html.encode()), "seconds": time.perf_counter() - started,
            "version": inputs.version}


VERSION_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def is_safe_version(version: str) -> bool:
    """A version names one folder: letters, digits, '.', '_', '-', never '..' or a path."""
    return bool(VERSION_PATTERN.fullmatch(version)) and ".." not in version
