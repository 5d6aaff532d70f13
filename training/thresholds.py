"""Risk bands and the escalate-now threshold from the capacity policy in the params file.

Thresholds are read off the validation period, never the test period, so the test metrics
of the bands are honest. They are cut on the model's raw score, which ranks tickets the same
way as the calibrated probability but without isotonic calibration's ties (a tie at the cut
would put far more than 5 % of tickets in the high band).
"""

from __future__ import annotations

import numpy as np


def choose_thresholds(prob: np.ndarray, y_true: np.ndarray, high_share: float, medium_share: float,
                      min_precision: float | None = None) -> dict[str, float]:
    """Probability cut-offs: `high` holds the top `high_share` of tickets, `medium` up to `medium_share`.

    escalate_now is the high band; with `min_precision` it is narrowed to the part of it
    whose precision on the validation period reaches the floor.
    """
    prob = np.asarray(prob, dtype=float)
    y_true = np.asarray(y_true)
    high = float(np.quantile(prob, 1 - high_share))
    medium = float(np.quantile(prob, 1 - medium_share))
    escalate_now = high
    if min_precision is not None:
        order = np.argsort(-prob, kind="stable")
        precision = np.cumsum(y_true[order]) / np.arange(1, len(order) + 1)
        ok = np.nonzero(precision >= min_precision)[0]
        if len(ok):
            escalate_now = max(float(prob[order][ok[-1]]), high)
    return {"high": high, "medium": min(medium, high), "escalate_now": escalate_now}
