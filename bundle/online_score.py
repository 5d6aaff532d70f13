"""Scoring without pandas: features.online rows, then each booster once on the whole matrix.

Gives exactly what ModelBundle.score gives for the same tickets (tests/serving/test_parity.py):
the same features, models, calibration, bands and reasons, without the DataFrame round trip
that costs a single ticket more than the models do.
"""

from __future__ import annotations

import threading
from contextlib import nullcontext

import numpy as np

from bundle.model import LabelModel, LabelScores, ModelBundle
from features.build import MISSING, UNSEEN
from features.labels import pick_likely_type
from features.online import OnlineFeatures
from features.schema import CATEGORICAL_COLUMNS


def score_many(bundle: ModelBundle, online: OnlineFeatures, tickets: list[dict], n_reasons: int = 3,
               lock: threading.Lock | None = None, reasons: str = "path",
               features_out: list[dict] | None = None) -> list[dict]:
    """One dict per ticket with the fields of ModelBundle.score's rows, in input order, its
    `warnings` [{field, value, message}] and `types`.

    `warnings`: text fields longer than the features read, and each canonical categorical value
    (channel, category, status, ...) the model was not trained on, which it scores as "other".
    Identities and an importer's extra columns (a new agent, a new location) are expected to be
    new: no warning. `types`: per label (features.labels), its escalation_type, probability,
    band, escalate_now and reasons (the primary's are the top-level ones); `likely_type`: the
    escalation type of the most probable typed label (None when no label has a type).

    `lock` serialises the booster calls of one worker's threads: LightGBM has had data races
    when threads share a Booster (lightgbm-org/LightGBM#5482, #6142), and with one OpenMP
    thread per worker the lock costs no parallelism the GIL would not already take.
    `features_out`, when given, receives each ticket's feature values ({name: value}; categories by name,
    NaN for a missing number).
    """
    features, shown = online.transform_many(tickets)
    with lock or nullcontext():
        scored = bundle.score_features(features, n_reasons, reasons)
    classes = bundle.metadata["priority_classes"]
    names = online.names
    predicted = scored.priority_predicted.tolist()
    priority_prob = scored.priority_probabilities.tolist()
    watched = [(j, column) for j, column, _ in online.category_slots if column in CATEGORICAL_COLUMNS]
    per_label = [(label, describe_label_scores(label, scored.types[label.name], online, features, shown))
                 for label in bundle.labels]
    out = []
    if features_out is not None:
        for i, row in enumerate(features.tolist()):
            values = dict(zip(names, row, strict=True))  # NaN (missing) is written as JSON null
            for j in online.category_names:
                values[names[j]] = online.show(features, shown, i, j)
            features_out.append(values)
    for i, ticket in enumerate(tickets):
        warnings = [{"field": column, "value": shown[i][j],
                     "message": f"{column} {shown[i][j]!r} is not among the values the model was trained on; "
                                f"scored as {UNSEEN!r}"}
                    for j, column in watched if shown[i][j] is not None and np.isnan(features[i, j])]
        types = {label.name: entries[i] for label, entries in per_label}
        primary = types[bundle.primary.name]
        out.append({
            "ticket_id": str(ticket["ticket_id"]),
            "escalation_probability": primary["probability"],
            "band": primary["band"],
            "escalate_now": primary["escalate_now"],
            "priority_predicted": predicted[i],
            "priority_probabilities": dict(zip(classes, priority_prob[i], strict=True)),
            "reasons": primary["reasons"],
            "warnings": online.text_warnings(ticket) + warnings,
            "types": types,
            "likely_type": pick_likely_type(types),
        })
    return out


def describe_label_scores(label: LabelModel, scores: LabelScores, online: OnlineFeatures, features: np.ndarray,
                          shown: list[dict[int, object]]) -> list[dict]:
    """Per ticket, one label's entry of the response's `escalation.types`."""
    top = scores.top
    probability, bands, escalate_now = scores.probability.tolist(), scores.band.tolist(), scores.escalate_now.tolist()
    kind = label.escalation_type
    if not top.shape[1]:  # scored without reasons
        return [{"escalation_type": kind, "probability": p, "band": b, "escalate_now": e, "reasons": []}
                for p, b, e in zip(probability, bands, escalate_now, strict=True)]
    columns = label.column_list(len(online.names))
    names, titles = label.features, label.feature_titles
    picked = top.tolist()
    rows = np.arange(len(top))[:, None]
    effects = np.take_along_axis(scores.contributions, top, axis=1).tolist()
    values = features[rows, np.asarray(columns, dtype=np.intp)[top]].tolist() if top.size else [[] for _ in picked]
    categories = online.category_names
    out = []
    for i, (ticket_top, ticket_effects, ticket_values) in enumerate(zip(picked, effects, values, strict=True)):
        reasons_out = []
        for j, effect, value in zip(ticket_top, ticket_effects, ticket_values, strict=True):
            column = columns[j]
            if value != value:  # NaN: missing, or a category the model was not trained on
                shown_value = UNSEEN if column in categories and shown[i][column] is not None else MISSING
            else:
                shown_value = categories[column][int(value)] if column in categories else value
            reasons_out.append({"feature": names[j], "label": titles[j], "value": shown_value,
                                "effect": round(effect, 4), "direction": "raises risk" if effect > 0 else "lowers risk"})
        out.append({"escalation_type": kind, "probability": probability[i], "band": bands[i],
                    "escalate_now": escalate_now[i], "reasons": reasons_out})
    return out
