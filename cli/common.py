"""What every command shares: the user-error exception and quiet library logging."""

from __future__ import annotations

import logging
import warnings

import click


class UserError(click.ClickException):
    """A problem with the user's input: printed as one line, exit code 2, no traceback."""

    exit_code = 2


def quiet_libraries() -> None:
    """Plain INFO lines for our loggers; MLflow, Alembic, urllib3 and git only from WARNING."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("mlflow", "alembic", "urllib3", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="mlflow")
