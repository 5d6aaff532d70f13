"""serving.gc_pause: the collector is off inside, restored after, nested and across threads."""

from __future__ import annotations

import gc
import threading

import pytest

from serving.gc_pause import paused_collection


@pytest.fixture
def collector_enabled():
    was = gc.isenabled()
    gc.enable()
    yield
    (gc.enable if was else gc.disable)()


def test_the_collector_is_off_inside_and_back_on_after(collector_enabled):
    with paused_collection():
        assert not gc.isenabled()
        with paused_collection():
            assert not gc.isenabled()
        assert not gc.isenabled(), "leaving the inner block must not re-enable it under the outer one"
    assert gc.isenabled()


def test_it_is_back_on_after_an_exception(collector_enabled):
    with pytest.raises(RuntimeError), paused_collection():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_a_collector_disabled_before_stays_disabled(collector_enabled):
    gc.disable()
    with paused_collection():
        pass
    assert not gc.isenabled()


def test_overlapping_threads_re_enable_it_only_when_the_last_leaves(collector_enabled):
    inside, release = threading.Event(), threading.Event()

    def other() -> None:
        with paused_collection():
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=other)
    with paused_collection():
        thread.start()
        assert inside.wait(10)
    assert not gc.isenabled(), "the other thread is still inside"
    release.set()
    thread.join(10)
    assert gc.isenabled()
