"""The service's commands of `escalation-risk` (assembled by cli.main): serve."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cli.common import UserError
from features.settings import Settings

commands = click.Group("serving", help="Serving's commands (cli.main adds each to escalation-risk).")


@commands.command()
@click.option("--host", default=None, help="Address to bind (default: ESCALATION_RISK_HOST or 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port (default: 8080).")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="gunicorn worker processes (default: 2).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Threads per worker (default: 4).")
def serve(host: str | None, port: int | None, workers: int | None, threads: int | None) -> None:
    """Start the scoring service under gunicorn (serving/gunicorn.conf.py) and keep it in the foreground."""
    import os

    import serving

    overrides = {k: v for k, v in {"host": host, "port": port, "workers": workers, "threads": threads}.items()
                 if v is not None}
    settings = Settings(**overrides)
    if not settings.mlflow_tracking_uri and not settings.resolved_model_path.exists():
        raise UserError(f"no model at {settings.resolved_model_path}; run `escalation-risk train` "
                        "(or `make train`) first, or set MLFLOW_TRACKING_URI to serve the registered champion")
    if not settings.api_keys and settings.host not in ("127.0.0.1", "localhost", "::1"):
        raise UserError(f"refusing to serve on {settings.host} without API keys; "
                        "set ESCALATION_RISK_API_KEYS or bind to 127.0.0.1")
    config_path = Path(serving.__file__).resolve().parent / "gunicorn.conf.py"
    gunicorn = [sys.executable, "-m", "gunicorn", "-c", str(config_path), "serving.app:create_served_app()"]
    click.echo(f"serving on http://{settings.host}:{settings.port} (docs at /docs)")
    sys.stdout.flush()
    # gunicorn's workers read the options through Settings, like every other option.
    os.environ.update({f"ESCALATION_RISK_{k.upper()}": str(v) for k, v in overrides.items()})
    os.execv(sys.executable, gunicorn)  # gunicorn replaces this process: signals reach its master directly
