"""The bundle as an MLflow pyfunc, so `mlflow models serve -m models:/escalation-risk@champion` scores tickets."""

from __future__ import annotations

import json

import mlflow.pyfunc
import pandas as pd

from bundle.model import load_bundle


class EscalationRiskModel(mlflow.pyfunc.PythonModel):
    """Canonical ticket rows in; probability, band, priority and reasons (as JSON) out."""

    def load_context(self, context) -> None:
        self.bundle = load_bundle(context.artifacts["bundle"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        scored = self.bundle.score(pd.DataFrame(model_input))
        scored["reasons"] = scored["reasons"].map(json.dumps)
        scored["model_version"] = self.bundle.version
        return scored
