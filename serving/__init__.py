"""The scoring service (`create_app`), the model store and the MLflow pyfunc.

`create_app` is imported lazily so that training, which loads bundles through
serving.model_store, does not import Flask.
"""


def __getattr__(name: str):
    if name == "create_app":
        from serving.app import create_app

        return create_app
    raise AttributeError(name)
