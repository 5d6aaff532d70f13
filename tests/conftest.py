"""Shared fixtures. Data and model tests can be pointed at real inputs:

    pytest tests/data --data-path PATH      # an event log (default: demo data generated here)
    pytest tests/model --model-path DIR     # a model bundle (default: one trained here on demo data)
    pytest tests/data --servicenow-path P   # the real ServiceNow export (skipped when absent)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from features.synthetic import generate_event_log
from training.config import load_params
from training.train import train_models

DEMO_TICKETS = 20_000  # the size `make train` uses, so quality thresholds test the shipped claim
SMALL_TICKETS = 3_000


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--data-path", default=None, help="event log for tests/data (default: generated demo data)")
    parser.addoption("--model-path", default=None, help="model bundle for tests/model (default: trained here)")
    parser.addoption("--servicenow-path", default=None,
                     help="ServiceNow incident audit log for tests/data/test_servicenow.py "
                          "(default: ESCALATION_RISK_SERVICENOW_PATH or ../shared/data/servicenow/)")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Join the background threads of every app the tests made before the interpreter shuts down
    (serving.background explains the abort otherwise); name any that would not stop."""
    from serving.background import close_all

    still = close_all()
    if still:
        session.config.get_terminal_writer().line(f"background threads still running at the end: {still}", red=True)


@pytest.fixture(scope="session")
def params_path() -> Path:
    return Path(__file__).resolve().parent.parent / "training" / "params.yaml"


@pytest.fixture(scope="session")
def params(params_path):
    return load_params(params_path)


@pytest.fixture(scope="session")
def small_events_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("small") / "events.parquet"
    generate_event_log(path, n_tickets=SMALL_TICKETS, seed=11)
    return path


@pytest.fixture(scope="session")
def demo_events_path(request, tmp_path_factory) -> Path:
    given = request.config.getoption("--data-path")
    if given:
        return Path(given)
    path = tmp_path_factory.mktemp("demo") / "events.parquet"
    generate_event_log(path, n_tickets=DEMO_TICKETS, seed=42)
    return path


@pytest.fixture(scope="session")
def small_result(small_events_path, params):
    """A quick model on small data, for pipeline mechanics (not quality)."""
    return train_models(small_events_path, params)


@pytest.fixture(scope="session")
def demo_result(tmp_path_factory, params):
    path = tmp_path_factory.mktemp("demo_train") / "events.parquet"
    generate_event_log(path, n_tickets=DEMO_TICKETS, seed=42)
    return train_models(path, params)


@pytest.fixture(scope="session")
def demo_bundle_dir(request, demo_result, tmp_path_factory) -> Path:
    given = request.config.getoption("--model-path")
    if given:
        return Path(given)
    from training.packaging import make_version, write_bundle

    return write_bundle(demo_result, tmp_path_factory.mktemp("models"), make_version(demo_result))


@pytest.fixture(scope="session")
def postgres_tracking_uri():
    """A real `mlflow server` on a PostgreSQL backend (a temp cluster on free loopback ports), for the session."""
    import shutil
    import tempfile

    from training.tracking_server import (
        PostgresUnavailable,
        find_free_port,
        find_postgres_bin,
        run_tracking_server,
    )

    try:
        find_postgres_bin()
    except PostgresUnavailable as exc:
        pytest.skip(f"{exc} (`make test` installs it when run as root)")
    # Not under pytest's tmp dir: that is private to this user and the postgres user must reach its folder.
    root = Path(tempfile.mkdtemp(prefix="escalation-risk-pg-"))
    root.chmod(0o755)
    try:
        with run_tracking_server(root / "server", find_free_port(), find_free_port(),
                                 log_path=root / "mlflow-server.log") as uri:
            yield uri
    finally:
        shutil.rmtree(root, ignore_errors=True)
