"""The scoring service: app factory (`serving.app.create_app`), routes, adapters, policy,
the live model holder (`serving.live_model`) and the service's commands (`serving.cli`).

`create_app` is imported lazily so that importing a submodule does not import Flask's app.
"""


def __getattr__(name: str):
    if name == "create_app":
        from serving.app import create_app

        return create_app
    raise AttributeError(name)
