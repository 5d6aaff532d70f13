"""Scoring without pandas: features.online rows, then each booster once on the whole matrix.

Gives exactly what ModelBundle.score gives for the same tickets (tests/serving/test_parity.py):
the same features, models, calibration, bands and reasons, without the DataFrame round trip
that costs a single ticket more than the models do.
"""

from __future__ import annotations

import threading
from contextlib import nullcontext

import numpy as np

from features.online import OnlineFeatures
from serving.model_store import ModelBundle, apply_calibration, assign_bands, label_feature


def score_many(bundle: ModelBundle, online: OnlineFeatures, tickets: list[dict], n_reasons: int = 3,
               lock: threading.Lock | None = None) -> list[dict]:
    """One dict per ticket with the fields of ModelBundle.score's rows, in input order.

    `lock` serialises the booster calls of one worker's threads: LightGBM has had data races
    when threads share a Booster (lightgbm-org/LightGBM#5482, #6142), and with one OpenMP
    thread per worker the lock costs no parallelism the GIL would not already take.
    """
    built = [online.transform_one(ticket) for ticket in tickets]
    features = np.vstack([row for row, _ in built])
    with lock or nullcontext():
        raw = bundle.escalation_model.predict(features)
        contributions = bundle.escalation_model.predict(features, pred_contrib=True)[:, :-1]
        priority_prob = bundle.priority_model.predict(features)
    prob = apply_calibration(bundle.metadata["calibration"], raw)
    thresholds = bundle.metadata["thresholds"]
    bands = assign_bands(raw, thresholds)
    top = np.argsort(-np.abs(contributions), axis=1)[:, :n_reasons]
    classes = bundle.metadata["priority_classes"]
    predicted = np.asarray(classes)[np.argmax(priority_prob, axis=1)]
    names = online.names
    labels = [label_feature(name) for name in names]
    out = []
    for i, ticket in enumerate(tickets):
        shown = built[i][1]
        out.append({
            "ticket_id": str(ticket["ticket_id"]),
            "escalation_probability": float(prob[i]),
            "band": str(bands[i]),
            "escalate_now": bool(raw[i] >= thresholds["escalate_now"]),
            "priority_predicted": str(predicted[i]),
            "priority_probabilities": dict(zip(classes, priority_prob[i].tolist(), strict=True)),
            "reasons": [
                {
                    "feature": names[j],
                    "label": labels[j],
                    "value": shown.get(names[j]),
                    "effect": round(float(contributions[i, j]), 4),
                    "direction": "raises risk" if contributions[i, j] > 0 else "lowers risk",
                }
                for j in top[i]
            ],
        })
    return out
