"""MLflow "models from code" entry: MLflow copies this file into the logged model and runs it
on load, so the model is rebuilt from source rather than unpickled. Not imported by the package."""

import mlflow

from bundle.pyfunc import EscalationRiskModel

mlflow.models.set_model(EscalationRiskModel())
