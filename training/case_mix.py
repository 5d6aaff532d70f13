"""The case-mix model: each ticket's expected escalation risk from what arrived, not who handled it.

Fitted on the creation snapshots (position 0) of the training period: one row per ticket, the
ticket as it arrived and its customer's as-of history, without the agent's or team's own features
(params `case_mix.exclude_prefixes` / `exclude`: agent_* and group_* history, the team, the agent's
replies). Label: the creation snapshot's label (the ticket escalates within the label horizon).
Early stopping and calibration on the validation period's creation snapshots; the test period's
tickets get their expected risk for the report's against-case-mix tables (bundle/case_mix.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import lightgbm as lgb
import numpy as np
import pandas as pd

from bundle import evaluate
from bundle.case_mix import EXPECTED, OBSERVED, select_case_mix_features
from bundle.model import apply_calibration, fit_calibration
from features.snapshots import LABEL, POSITION
from training.config import Params

# Per test ticket, what the report's tables group by (the ticket's first agent and team).
ENTITY_COLUMNS = ("agent_id", "group", "category", "subcategory", "customer_id", "channel", "customer_tier")


@dataclass
class CaseMixResult:
    """The fitted case-mix model, its feature list and calibration, and the test period's tickets."""

    model: lgb.LGBMClassifier
    features: list[str]
    calibration: dict
    tickets: pd.DataFrame  # test period: ticket_id, created_at, ENTITY_COLUMNS, OBSERVED, EXPECTED
    metrics: dict[str, float] = field(default_factory=dict)


def creation_rows(snapshots: pd.DataFrame) -> np.ndarray:
    """Mask of the creation snapshots (one per ticket whose label is known)."""
    return (snapshots[POSITION] == 0).to_numpy()


def fit_case_mix(params: Params, snapshots: dict[str, pd.DataFrame], features: dict[str, pd.DataFrame],
                 feature_names: list[str] | None = None) -> CaseMixResult:
    """Fit on the train part's creation rows, calibrate on valid's, score test's.

    `snapshots[part]` / `features[part]`: the part's snapshot rows and their feature matrix, row
    for row (parts "train", "valid", "test"); `feature_names`: the columns it may choose from
    (default all; training passes the primary label's, features.labels). Raises ValueError when a part has no creation rows
    of both classes to learn from."""
    settings = params.case_mix
    names = select_case_mix_features(list(feature_names or features["train"].columns), settings.exclude_prefixes,
                                     settings.exclude)
    # The primary label's creation rows (-1: a row only other labels ask about).
    rows = {p: creation_rows(snapshots[p]) & (snapshots[p][LABEL] >= 0).to_numpy() for p in ("train", "valid", "test")}
    x = {p: features[p].loc[rows[p], names] for p in rows}
    y = {p: snapshots[p].loc[rows[p], LABEL].to_numpy() for p in rows}
    for part in ("train", "valid"):
        if len(np.unique(y[part])) < 2:
            raise ValueError(f"the {part} period's creation snapshots have no escalations (or only escalations): "
                             "the case-mix model cannot be fitted")
    model_params = settings.model
    model = lgb.LGBMClassifier(**model_params.lightgbm_params(params.seed, params.num_threads))
    callbacks = [] if model_params.early_stopping_rounds is None else \
        [lgb.early_stopping(model_params.early_stopping_rounds, verbose=False)]
    model.fit(x["train"], y["train"], eval_X=x["valid"], eval_y=y["valid"], callbacks=callbacks)
    calibration = fit_calibration(model.predict_proba(x["valid"])[:, 1], y["valid"], settings.calibration)
    expected = apply_calibration(calibration, model.predict_proba(x["test"])[:, 1])
    test = snapshots["test"].loc[rows["test"]]
    tickets = pd.DataFrame({
        "ticket_id": test["ticket_id"].astype("string").to_numpy(),
        "created_at": test["created_at"].to_numpy(),
        **{c: test[c].astype("string").to_numpy() for c in ENTITY_COLUMNS if c in test},
        OBSERVED: y["test"].astype("int8"),
        EXPECTED: expected,
    })
    metrics = {
        "case_mix_test_roc_auc": evaluate.score_ranking(y["test"], expected, ())["roc_auc"],
        "case_mix_test_ece": evaluate.expected_calibration_error(y["test"], expected),
        "case_mix_test_tickets": float(len(tickets)),
        "case_mix_best_iteration": float(model.best_iteration_ or model.n_estimators),
    }
    return CaseMixResult(model=model, features=names, calibration=calibration, tickets=tickets, metrics=metrics)
