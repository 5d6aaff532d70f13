"""Metrics on the test period: ranking, calibration, capacity (top-k %), earliness, priority."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    roc_auc_score,
)


def expected_calibration_error(y_true: np.ndarray, prob: np.ndarray, n_bins: int = 15) -> float:
    """Weighted mean |observed rate - mean predicted| over equal-width probability bins."""
    y_true = np.asarray(y_true, dtype=float)
    prob = np.asarray(prob, dtype=float)
    bins = np.minimum((prob * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        in_bin = bins == b
        total += in_bin.sum() * abs(y_true[in_bin].mean() - prob[in_bin].mean())
    return float(total / max(len(prob), 1))


def precision_recall_at_top(y_true: np.ndarray, score: np.ndarray, share: float) -> tuple[float, float]:
    """What a team reviewing the top `share` of open tickets by score would catch."""
    y_true = np.asarray(y_true)
    k = max(1, int(round(len(score) * share)))
    top = np.argsort(-np.asarray(score), kind="stable")[:k]
    caught = y_true[top].sum()
    return float(caught / k), float(caught / max(y_true.sum(), 1))


def _safe_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    return float(roc_auc_score(y_true, score)) if len(np.unique(y_true)) == 2 else float("nan")


def score_binary(y_true: np.ndarray, prob: np.ndarray, top_shares=(0.05, 0.10, 0.20), ece_bins: int = 15,
                 prefix: str = "") -> dict[str, float]:
    metrics = {
        f"{prefix}roc_auc": _safe_auc(y_true, prob),
        f"{prefix}pr_auc": float(average_precision_score(y_true, prob)) if np.any(y_true) else float("nan"),
        f"{prefix}brier": float(brier_score_loss(y_true, np.clip(prob, 0, 1))),
        f"{prefix}ece": expected_calibration_error(y_true, np.clip(prob, 0, 1), ece_bins),
        f"{prefix}base_rate": float(np.mean(y_true)),
    }
    for share in top_shares:
        precision, recall = precision_recall_at_top(y_true, prob, share)
        metrics[f"{prefix}precision_at_{int(round(share * 100))}pct"] = precision
        metrics[f"{prefix}recall_at_{int(round(share * 100))}pct"] = recall
    return metrics


def score_ranking(y_true: np.ndarray, score: np.ndarray, top_shares=(0.05, 0.10, 0.20), prefix: str = "") -> dict[str, float]:
    """Rank-only metrics, for baselines whose scores are not probabilities."""
    metrics = {
        f"{prefix}roc_auc": _safe_auc(y_true, score),
        f"{prefix}pr_auc": float(average_precision_score(y_true, score)) if np.any(y_true) else float("nan"),
    }
    for share in top_shares:
        precision, recall = precision_recall_at_top(y_true, score, share)
        metrics[f"{prefix}precision_at_{int(round(share * 100))}pct"] = precision
        metrics[f"{prefix}recall_at_{int(round(share * 100))}pct"] = recall
    return metrics


def score_by_position(y_true: np.ndarray, score: np.ndarray, position: np.ndarray, max_position: int = 8,
                      prefix: str = "") -> dict[str, float]:
    """ROC-AUC at creation (0) and after update 1, 2, ... : how early the model can tell."""
    metrics = {}
    for p in range(max_position + 1):
        at = np.asarray(position) == p
        metrics[f"{prefix}roc_auc_position_{p}"] = _safe_auc(np.asarray(y_true)[at], np.asarray(score)[at])
    return metrics


def score_priority(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str], prefix: str = "") -> dict[str, float]:
    return {
        f"{prefix}macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        f"{prefix}accuracy": float(accuracy_score(y_true, y_pred)),
    }


def tabulate_confusion(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> pd.DataFrame:
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    return pd.DataFrame(matrix, index=pd.Index(labels, name="final"), columns=pd.Index(labels, name="predicted"))
