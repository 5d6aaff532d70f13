"""Each gunicorn instance keeps its own Prometheus folder inside a shared PROMETHEUS_MULTIPROC_DIR."""

from __future__ import annotations

import fcntl
import importlib.util
import os
from pathlib import Path

CONF = Path(__file__).resolve().parents[2] / "serving" / "gunicorn.conf.py"


def load_conf():
    spec = importlib.util.spec_from_file_location("gunicorn_conf_under_test", CONF)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_second_instance_does_not_wipe_the_first_ones_files(tmp_path):
    conf = load_conf()
    shared = tmp_path / "metrics"
    first = conf.instance_metrics_dir(shared)
    (first / "counter_123.db").write_bytes(b"first instance's values")
    second = conf.instance_metrics_dir(shared)
    assert first != second and first.parent == second.parent == shared
    assert (first / "counter_123.db").read_bytes() == b"first instance's values"
    for fd in conf._held_locks:
        os.close(fd)


def test_folders_of_instances_that_are_gone_are_removed(tmp_path):
    conf = load_conf()
    shared = tmp_path / "metrics"
    dead = shared / "instance-dead"
    dead.mkdir(parents=True)
    (dead / conf.LOCK_NAME).write_text("")  # nobody holds its lock: its instance has exited
    (dead / "counter_9.db").write_bytes(b"stale")
    alive = shared / "instance-alive"
    alive.mkdir()
    fd = os.open(alive / conf.LOCK_NAME, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a live instance (another process in real life)
    try:
        own = conf.instance_metrics_dir(shared)
        assert not dead.exists() and alive.exists() and own.is_dir()
    finally:
        os.close(fd)
        for held in conf._held_locks:
            os.close(held)
