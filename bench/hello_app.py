"""The HTTP floor for bench/serve_bench.py: a Flask hello-world under the same gunicorn settings."""

from flask import Flask, Response, request


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/v1/score")
    def score() -> Response:
        request.get_data()
        return Response(b'{"ok": true}', mimetype="application/json")

    @app.get("/readyz")
    def ready() -> Response:
        return Response(b'{"status": "ready"}', mimetype="application/json")

    return app
