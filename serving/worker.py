"""gunicorn's threaded worker, hardened for slow and odd clients (serving/gunicorn.conf.py uses it).

gunicorn's `gthread` worker (pinned version) gives each request a thread once its first bytes
arrive, then reads the rest with blocking reads and no deadline, answers its own protocol
errors in HTML, and leaves requests a client pipelined behind the first one in its read
buffer, where nothing wakes them up. `ServingWorker` is that worker with three changes:

- A request must arrive whole, headers and body, within `request_read_timeout` seconds
  (ESCALATION_RISK_REQUEST_READ_TIMEOUT, default 10) of its thread starting on it: a watchdog
  thread shuts the socket's read side at the deadline, so a trickling client gets a JSON 408
  and the thread is free again. The body is read in full before the app runs
  (`read_body_first`), so the deadline covers all of it.
- A request already in the read buffer behind the one just answered (pipelining) is served
  at once, in order, instead of waiting for the socket to become readable again.
- The errors gunicorn answers itself (bad request line, headers too large, bad chunking...)
  are JSON bodies of the same shape as the app's (`error`, `message`, `details`, `request_id`).
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time

import orjson
from gunicorn.http import errors as http_errors
from gunicorn.workers.gthread import DEFAULT_WORKER_DATA_TIMEOUT, ThreadWorker

from features.settings import Settings

WATCHDOG_INTERVAL = 0.2  # seconds between deadline checks
STATUS_BY_ERROR = {
    http_errors.LimitRequestHeaders: (431, "Request Header Fields Too Large", "request_header_fields_too_large"),
    http_errors.UnsupportedTransferCoding: (501, "Not Implemented", "not_implemented"),
    http_errors.ExpectationFailed: (417, "Expectation Failed", "expectation_failed"),
    http_errors.ForbiddenProxyRequest: (403, "Forbidden", "forbidden"),
    http_errors.ConfigurationProblem: (500, "Internal Server Error", "internal_error"),
}
# Errors in a chunked body subclass OSError in gunicorn, whose worker then logs a socket error and
# answers nothing: the body reader answers them itself.
BODY_ERRORS = tuple(getattr(http_errors, name) for name in (
    "InvalidChunkSize", "ChunkMissingTerminator", "InvalidChunkExtension") if hasattr(http_errors, name))
PROTOCOL_ERRORS = tuple(getattr(http_errors, name) for name in (
    "InvalidRequestLine", "InvalidRequestMethod", "InvalidHTTPVersion", "InvalidHeader", "InvalidHeaderName",
    "LimitRequestLine", "LimitRequestHeaders", "InvalidProxyLine", "ForbiddenProxyRequest",
    "InvalidSchemeHeaders", "UnsupportedTransferCoding", "ConfigurationProblem", "ObsoleteFolding",
    "ExpectationFailed", "InvalidChunkSize", "ChunkMissingTerminator", "InvalidHeader",
) if hasattr(http_errors, name))


def error_bytes(status: int, reason: str, error: str, message: str, extra_headers: str = "") -> bytes:
    """A complete HTTP/1.1 response with a JSON error body; the connection is closed after it."""
    body = orjson.dumps({"error": error, "message": message, "details": [], "request_id": None})
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra_headers}\r\n")
    return head.encode("latin-1") + body


class ReadDeadlines:
    """Sockets being read and their deadlines; a watchdog thread shuts the read side of late ones.

    Shutting the read side makes a blocked `recv` return end-of-file at once; the socket can
    still send the 408.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._deadlines: dict[socket.socket, float] = {}
        self._expired: set[socket.socket] = set()
        self.answered_late: set[socket.socket] = set()  # answered 408 by the app side: close after
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self, sock: socket.socket, extra: float = 0.0) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="read-deadlines", daemon=True)
            self._thread.start()
        self._deadlines[sock] = time.monotonic() + self.seconds + extra

    def finish(self, sock: socket.socket) -> bool:
        """Stop watching; True when the deadline had passed (the read side is shut)."""
        self._deadlines.pop(sock, None)
        with self._lock:
            if sock in self._expired:
                self._expired.discard(sock)
                return True
        return False

    def _watch(self) -> None:
        while True:
            time.sleep(WATCHDOG_INTERVAL)
            now = time.monotonic()
            for sock, deadline in list(self._deadlines.items()):
                if deadline <= now and self._deadlines.pop(sock, None) is not None:
                    with self._lock:
                        self._expired.add(sock)
                    with contextlib.suppress(OSError):  # closed meanwhile
                        sock.shutdown(socket.SHUT_RD)


def read_body_first(app, deadlines: ReadDeadlines, max_body_bytes: int, timeout: float):
    """WSGI middleware: read the whole body (up to one byte past the limit) before the app runs, and
    answer a JSON 408 when it did not arrive within the deadline. Bodies declared larger than the
    limit are left to the app (413)."""

    def timed_out(start_response):
        body = orjson.dumps({"error": "request_timeout", "details": [], "request_id": None,
                             "message": f"the request was not received within {timeout:g} s; send it whole"})
        start_response("408 Request Timeout", [("Content-Type", "application/json"), ("Connection", "close"),
                                               ("Content-Length", str(len(body)))])
        return [body]

    def bad_body(start_response, exc: Exception):
        body = orjson.dumps({"error": "bad_request", "details": [], "request_id": None,
                             "message": f"Bad Request: {exc}"[:300]})
        start_response("400 Bad Request", [("Content-Type", "application/json"), ("Connection", "close"),
                                           ("Content-Length", str(len(body)))])
        return [body]

    def wrapped(environ, start_response):
        sock = environ.get("gunicorn.socket")
        length = environ.get("CONTENT_LENGTH") or ""
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        try:
            declared = int(length) if length else 0
        except ValueError:
            declared = 0
        if (0 < declared <= max_body_bytes) or (chunked and not length):
            try:
                data = environ["wsgi.input"].read(declared if declared else max_body_bytes + 1)
            except BODY_ERRORS as exc:
                return bad_body(start_response, exc)  # "Connection: close": the stream cannot be resynchronised
            except Exception:
                if sock is not None and deadlines.finish(sock):  # the deadline cut the body off
                    deadlines.answered_late.add(sock)
                    return timed_out(start_response)
                raise  # the client went away
            environ["wsgi.input"] = io.BytesIO(data)
        if sock is not None and deadlines.finish(sock):
            deadlines.answered_late.add(sock)
            return timed_out(start_response)
        return app(environ, start_response)

    return wrapped


class ServingWorker(ThreadWorker):
    """gthread with a read deadline per request, pipelined requests served, and JSON protocol errors."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        settings = Settings()
        self.read_timeout = settings.request_read_timeout
        self.deadlines = ReadDeadlines(self.read_timeout)
        self.max_body_bytes = settings.max_body_bytes

    def load_wsgi(self):
        super().load_wsgi()
        self.wsgi = read_body_first(self.wsgi, self.deadlines, self.max_body_bytes, self.read_timeout)

    def handle(self, conn):
        sock = conn.sock
        waiting = 0.0 if (conn.initialized or conn.data_ready) else DEFAULT_WORKER_DATA_TIMEOUT
        self.deadlines.start(sock, extra=waiting)
        try:
            result = super().handle(conn)
        finally:
            expired = self.deadlines.finish(sock)
        if sock in self.deadlines.answered_late:  # the 408 is out; the rest of the body never came
            self.deadlines.answered_late.discard(sock)
            return False
        if expired:  # late before the app saw the request (headers): nothing was answered yet
            self.send_error_bytes(sock, error_bytes(
                408, "Request Timeout", "request_timeout",
                f"the request was not received within {self.read_timeout:g} s; send it whole"))
            return False
        return result

    def finish_request(self, conn, fs):
        """As gthread's, but a connection whose next request is already buffered is served now."""
        try:
            result = fs.result() if not fs.cancelled() else False
        except Exception:
            result = False
        if result is True and self.alive and _buffered(conn):
            conn.set_timeout()
            self.enqueue_req(conn)
            return
        super().finish_request(conn, fs)

    def handle_error(self, req, client, addr, exc):
        """Protocol errors answered by gunicorn itself, as JSON (anything else: the base class's 500, as JSON)."""
        if isinstance(exc, PROTOCOL_ERRORS):
            status, reason, error = STATUS_BY_ERROR.get(type(exc), (400, "Bad Request", "bad_request"))
            self.log.warning("Invalid request from ip=%s: %s", (addr or ("",))[0], exc)
            message = f"{reason}: {exc}"[:300]
        else:
            self.log.exception("Error handling request")
            status, reason, error, message = 500, "Internal Server Error", "internal_error", "unexpected server error"
        self.send_error_bytes(client, error_bytes(status, reason, error, message))

    def send_error_bytes(self, sock, payload: bytes) -> None:
        try:
            sock.settimeout(2.0)
            sock.sendall(payload)
        except OSError:
            self.log.debug("Failed to send error message.")


def _buffered(conn) -> bool:
    """Whether bytes of a next request already sit in the connection's read buffer."""
    parser = getattr(conn, "parser", None)
    buffer = getattr(getattr(parser, "unreader", None), "buf", None)
    if buffer is None:
        return False
    with buffer.getbuffer() as view:
        return view.nbytes > 0
