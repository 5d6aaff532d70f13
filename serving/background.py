"""The daemon threads a process runs beside its requests (model polling, text retention, the live
view's refresh), stopped together and joined before the interpreter shuts down.

Why join them: at interpreter shutdown CPython ends a daemon thread that wants the GIL back with
pthread_exit, whose forced unwinding through a C++ extension's frames (LightGBM, Arrow) calls
std::terminate ("terminate called without an active exception") and aborts a process whose work
had finished. Every `BackgroundThreads` still open is therefore closed by an atexit handler,
which runs after the non-daemon threads are joined and before that shutdown.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable

JOIN_SECONDS = 30.0


class BackgroundThreads:
    """Daemon threads sharing one stop event.

    `start(name, run)` runs `run(stop)` in a daemon thread; `run` must return soon after `stop`
    is set (wait on it between passes: `while not stop.wait(interval): ...`). `close()` sets the
    event and joins every thread.
    """

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self, name: str, run: Callable[[threading.Event], None]) -> threading.Thread:
        """Start `run(self.stop)` in a daemon thread named `name`. Raises RuntimeError once closed."""
        with self._lock:
            if self.stop.is_set():
                raise RuntimeError(f"cannot start {name!r}: its background threads are closed")
            thread = threading.Thread(target=run, args=(self.stop,), name=name, daemon=True)
            self.threads.append(thread)
            _register(self)
            thread.start()
        return thread

    def close(self, timeout: float = JOIN_SECONDS) -> list[str]:
        """Stop every thread and join each for up to `timeout` s; returns the names still running."""
        with self._lock:
            self.stop.set()
            threads = list(self.threads)
        with _registry_lock:
            _open.discard(self)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout)
        return [thread.name for thread in threads if thread.is_alive()]


_open: set[BackgroundThreads] = set()  # started and not yet closed (held: their threads run on)
_registered = False
_registry_lock = threading.Lock()


def _register(background: BackgroundThreads) -> None:
    global _registered
    with _registry_lock:
        _open.add(background)
        if not _registered:
            atexit.register(close_all)
            _registered = True


def close_all(timeout: float = JOIN_SECONDS) -> list[str]:
    """Close every `BackgroundThreads` of this process (run at exit); returns the names still running."""
    with _registry_lock:
        opened = list(_open)
    return [name for background in opened for name in background.close(timeout)]
