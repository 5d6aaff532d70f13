"""Time-ordered training, evaluation, MLflow registration and model bundles."""
