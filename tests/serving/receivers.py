"""Real HTTP receivers on loopback that record what they got: stand-ins for a webhook consumer,
Slack, Zendesk, ServiceNow and Freshdesk in delivery tests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return orjson.loads(self.body)


@dataclass
class Receiver:
    """`respond(request) -> (status, body dict, headers)` decides each answer; every request is kept.

    `accepted` counts requests answered 2xx per Idempotency-Key (what a deduping receiver would
    act on: the first one)."""

    respond: Callable[[Received], tuple[int, dict, dict]] = field(
        default=lambda request: (200, {"ok": True}, {}))
    requests: list[Received] = field(default_factory=list)
    accepted: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def handle_any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = Received(self.command, self.path, dict(self.headers.items()), self.rfile.read(length))
                status, body, headers = receiver.respond(request)
                with receiver.lock:
                    receiver.requests.append(request)
                    key = request.headers.get("Idempotency-Key")
                    if 200 <= status < 300 and key:
                        receiver.accepted[key] = receiver.accepted.get(key, 0) + 1
                payload = orjson.dumps(body)
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = handle_any

            def log_message(self, *args) -> None:  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, name="receiver", daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
