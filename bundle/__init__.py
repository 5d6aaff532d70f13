"""The model bundle, below both training and serving.

A bundle is a folder written by training and loaded by the service, the batch scorer and the
MLflow pyfunc: LightGBM text models, the feature builder's learned state, calibration, bands,
the as-of history table and metadata, with a sha256 manifest verified before anything is read.

- `bundle.model`: format, manifest, verify and load, and the scoring of a feature matrix
  (calibration, bands, reasons) — `ModelBundle`, `load_bundle`;
- `bundle.online_score`: the same scoring for plain dict tickets (the service's fast path);
- `bundle.contributions`, `bundle.fast_predict`: per-leaf path reasons and the one-row predictor;
- `bundle.pyfunc` / `bundle.mlflow_model`: the MLflow pyfunc wrapper ("models from code");
- `bundle.evaluate`: the metrics both training and the report compute;
- `bundle.report`: the ops leads' report rendered from a bundle (CLI and service).

Nothing here imports `training` or `serving`.
"""
