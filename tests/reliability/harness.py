"""A real gunicorn service on a free loopback port and a threaded keep-alive load client.

Used by the reliability tests and by bench/load_bench.py (`make loadtest`).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request(base_port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            timeout: float = 30) -> tuple[int, bytes, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", base_port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        conn.close()


@dataclass
class Service:
    """A gunicorn master started with serving/gunicorn.conf.py; the log is kept for assertions."""

    process: subprocess.Popen
    port: int
    log_path: Path
    workers: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def call(self, method: str, path: str, body: object | None = None, headers: dict | None = None,
             data: bytes | None = None, content_type: str = "application/json") -> tuple[int, object, dict]:
        payload = data if data is not None else (json.dumps(body).encode() if body is not None else None)
        status, raw, response_headers = request(self.port, method, path, payload,
                                                {"Content-Type": content_type, **(headers or {})})
        try:
            parsed: object = json.loads(raw)
        except ValueError:
            parsed = raw
        return status, parsed, response_headers

    def worker_pids(self) -> list[int]:
        return [child.pid for child in psutil.Process(self.process.pid).children()]

    def workers_rss(self) -> int:
        """Resident memory of all workers together, in bytes."""
        total = 0
        for pid in self.worker_pids():
            with contextlib.suppress(psutil.Error):
                total += psutil.Process(pid).memory_info().rss
        return total

    def fleet_versions(self, headers: dict) -> list[str | None]:
        status, body, _ = self.call("GET", "/v1/model", headers=headers)
        return [w["version"] for w in body["workers"]] if status == 200 else []

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def start_service(env: dict[str, str], log_path: Path, workers: int = 2, wait_ready: bool = True,
                  timeout: float = 120) -> Service:
    """gunicorn on a free port; waits until every worker has logged its model load (or refusal)."""
    port = free_port()
    full_env = {**os.environ, "ESCALATION_RISK_PORT": str(port), "ESCALATION_RISK_HOST": "127.0.0.1",
                "ESCALATION_RISK_WORKERS": str(workers), **env}
    if "MLFLOW_TRACKING_URI" not in env:
        full_env.pop("MLFLOW_TRACKING_URI", None)
    log_handle = open(log_path, "w")  # noqa: SIM115 - handed to the child for its lifetime
    process = subprocess.Popen(
        [str(BIN / "gunicorn"), "-c", "serving/gunicorn.conf.py", "serving.app:create_served_app()"],
        cwd=ROOT, env=full_env, stdout=log_handle, stderr=subprocess.STDOUT, start_new_session=True,
    )
    log_handle.close()
    service = Service(process, port, log_path, workers)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{service.log()}")
        text = service.log()
        started = text.count('"model loaded') + text.count('"model reload failed')
        try:
            up = request(port, "GET", "/healthz", timeout=2)[0] == 200
        except OSError:
            up = False
        if up and (not wait_ready or started >= workers):
            return service
        if time.monotonic() > deadline:
            service.stop(signal.SIGKILL)
            raise TimeoutError(f"gunicorn did not start within {timeout} s:\n{text}")
        time.sleep(0.2)


def version_of(raw: bytes) -> str | None:
    """The model version a score answer is labelled with (one ticket or the first of a batch)."""
    body = json.loads(raw)
    return (body["scores"][0] if "scores" in body else body)["model"]["version"]


@dataclass
class Outcome:
    sent: float
    received: float
    status: int
    version: str | None
    error: str | None = None


@dataclass
class LoadRun:
    """Concurrent single-ticket POST /v1/score over keep-alive connections; every response recorded."""

    port: int
    tickets: list[dict]
    headers: dict
    concurrency: int = 16
    total: int = 30_000
    path: str = "/v1/score"
    outcomes: list[Outcome] = field(default_factory=list)
    on_progress: Callable[[int], None] | None = None
    _next: Iterator[int] = field(init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self._next = iter(range(self.total))
        self.bodies = [json.dumps(t).encode() for t in self.tickets]
        self.stop_event = threading.Event()

    def _take(self) -> int | None:
        with self._lock:
            return next(self._next, None)

    def _worker(self) -> None:
        conn: http.client.HTTPConnection | None = None
        headers = {"Content-Type": "application/json", **self.headers}
        while not self.stop_event.is_set():
            i = self._take()
            if i is None:
                break
            sent = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                conn.request("POST", self.path, body=self.bodies[i % len(self.bodies)], headers=headers)
                response = conn.getresponse()
                raw = response.read()
                version = version_of(raw) if response.status == 200 else None
                outcome = Outcome(sent, time.monotonic(), response.status, version,
                                  None if response.status == 200 else raw[:300].decode(errors="replace"))
                if response.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
                outcome = Outcome(sent, time.monotonic(), 0, None, f"{type(exc).__name__}: {exc}")
                if conn is not None:
                    conn.close()
                conn = None
            with self._lock:
                self.outcomes.append(outcome)
                done = len(self.outcomes)
            if self.on_progress is not None:
                self.on_progress(done)
        if conn is not None:
            conn.close()

    def start(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._worker, daemon=True) for _ in range(self.concurrency)]
        for thread in threads:
            thread.start()
        self.threads = threads
        return threads

    def join(self, timeout: float | None = None) -> None:
        for thread in self.threads:
            thread.join(timeout)

    def run(self) -> LoadRun:
        self.start()
        self.join()
        return self

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status != 200]


def percentile_ms(outcomes: list[Outcome], q: float) -> float:
    durations = sorted(o.received - o.sent for o in outcomes)
    if not durations:
        return float("nan")
    return 1000 * durations[min(len(durations) - 1, int(q / 100 * len(durations)))]
