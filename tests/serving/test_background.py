"""serving.background: the app's daemon threads stop together, are joined, and are closed at exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from serving.app import close_app
from serving.background import BackgroundThreads
from tests.serving.conftest import make_settings

ROOT = Path(__file__).resolve().parents[2]


def test_close_stops_every_thread_and_waits_for_its_pass_to_end():
    background = BackgroundThreads()
    started = [threading.Event(), threading.Event()]
    finished: list[int] = []

    def run(index: int):
        def loop(stop: threading.Event) -> None:
            started[index].set()
            stop.wait()
            finished.append(index)  # the end of the pass close() must wait for
        return loop

    threads = [background.start(f"worker-{i}", run(i)) for i in range(2)]
    assert all(event.wait(10) for event in started)
    assert all(thread.daemon for thread in threads)
    assert background.close() == []
    assert sorted(finished) == [0, 1], "close() returned before the threads' passes ended"
    assert not any(thread.is_alive() for thread in threads)


def test_close_names_a_thread_that_ignores_the_stop():
    background = BackgroundThreads()
    release = threading.Event()
    background.start("stubborn", lambda stop: release.wait(30))
    try:
        assert background.close(timeout=0.05) == ["stubborn"]
    finally:
        release.set()
    assert background.close() == []


def test_nothing_starts_once_closed():
    background = BackgroundThreads()
    background.close()
    with pytest.raises(RuntimeError, match="'late'.*closed"):
        background.start("late", lambda stop: None)


def test_the_threads_are_closed_at_interpreter_exit(tmp_path):
    marker = tmp_path / "stopped"
    script = textwrap.dedent(f"""
        import sys, threading
        sys.path.insert(0, {str(ROOT)!r})
        from serving.background import BackgroundThreads

        running = threading.Event()
        def run(stop):
            running.set()
            while not stop.wait(0.01):
                pass
            open({str(marker)!r}, "w").write("joined")

        BackgroundThreads().start("refresh", run)  # no reference kept, never closed by the script
        running.wait(10)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert marker.read_text() == "joined", "the atexit handler did not stop and join the daemon thread"


def test_close_app_stops_polling_retention_and_the_live_view_refresh(serving_models_dir):
    from serving import create_app

    app = create_app(make_settings(serving_models_dir, reload_poll_seconds=3600, monitoring_interval_seconds=3600))
    names = {"model-poll", "text-retention", "monitoring-refresh"}
    threads = [t for t in app.extensions["model"].background.threads + app.extensions["background"].threads]
    assert {t.name for t in threads} == names
    assert all(t.is_alive() for t in threads)
    assert close_app(app) == []
    assert not any(t.is_alive() for t in threads), [t.name for t in threads if t.is_alive()]
