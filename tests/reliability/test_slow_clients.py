"""Under gunicorn (serving/worker.py): slow and pipelining clients, gunicorn's own errors as JSON,
health under heavy batch load with load shed as JSON 503s, and a reload by content."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from bundle.model import write_manifest
from tests.reliability.conftest import ADMIN, AUTH, V1, make_models_dir, service_env
from tests.reliability.harness import request, start_service

pytestmark = pytest.mark.reliability
READ_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def service(serving_models_dir, small_result, tmp_path_factory):
    models = make_models_dir(tmp_path_factory.mktemp("slow") / "models", serving_models_dir, small_result)
    env = service_env(models, ESCALATION_RISK_REQUEST_READ_TIMEOUT=str(READ_TIMEOUT),
                      ESCALATION_RISK_MAX_BATCH="1000", ESCALATION_RISK_MAX_BODY_BYTES=str(4 << 20))
    service = start_service(env, models.parent / "gunicorn.log")
    service.models_dir = models
    yield service
    service.stop()


def read_response(sock: socket.socket, fp=None) -> tuple[int, dict, bytes]:
    """One response read off the socket (through `fp`, one buffered reader for every response of a
    connection: a reader per response would lose what it read ahead of the next one)."""
    fp = fp or sock.makefile("rb")
    status = int(fp.readline().split()[1])
    headers = {}
    while (line := fp.readline()) not in (b"\r\n", b"\n", b""):
        name, value = line.decode("latin-1").split(":", 1)
        headers[name.strip().title()] = value.strip()
    return status, headers, fp.read(int(headers.get("Content-Length", 0)))


def open_socket(port: int, timeout: float) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return sock


def trickle(port: int, head: bytes, drip: bytes, results: list, index: int) -> None:
    """Send the head at once, then one byte of `drip` every 0.5 s until the server answers or closes."""
    sock = open_socket(port, timeout=READ_TIMEOUT + 15)
    try:
        sock.sendall(head)
        for byte in drip:
            sock.settimeout(0.5)
            try:
                sock.recv(1, socket.MSG_PEEK)  # an answer (or the end): stop sending
                break
            except TimeoutError:
                pass
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
        sock.settimeout(READ_TIMEOUT + 15)
        results[index] = read_response(sock)
    except Exception as exc:  # noqa: BLE001 - recorded and asserted on
        results[index] = exc
    finally:
        sock.close()


def test_trickled_bodies_and_headers_are_cut_off_with_a_json_408(service, wire_tickets):
    """More trickling clients than the service has threads: each gets a 408, and the service still scores."""
    body = json.dumps(wire_tickets[0]).encode()
    body_head = (f"POST /v1/score HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH['Authorization']}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body[:5]
    header_head = b"POST /v1/score HTTP/1.1\r\nHost: x\r\n"
    n = 12  # 2 workers x 4 threads = 8 threads
    results: list = [None] * n
    threads = [threading.Thread(target=trickle, args=(service.port, body_head if i % 2 else header_head,
                                                      body[5:] if i % 2 else b"X-Slow: " + b"a" * 200, results, i))
               for i in range(n)]
    [t.start() for t in threads]
    [t.join(READ_TIMEOUT + 30) for t in threads]
    for result in results:
        assert not isinstance(result, Exception), result
        status, headers, raw = result
        assert status == 408 and headers["Content-Type"] == "application/json"
        assert json.loads(raw)["error"] == "request_timeout"
    status, _, _ = request(service.port, "POST", "/v1/score", body, {**AUTH, "Content-Type": "application/json"})
    assert status == 200


def test_pipelined_requests_are_all_answered_in_order(service, wire_tickets):
    body = json.dumps(wire_tickets[1]).encode()
    score = (f"POST /v1/score HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH['Authorization']}\r\n"
             f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    pipeline = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + score + score + b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"
    sock = open_socket(service.port, timeout=30)
    try:
        sock.sendall(pipeline)
        fp = sock.makefile("rb")
        answers = [read_response(sock, fp) for _ in range(4)]
    finally:
        sock.close()
    assert [a[0] for a in answers] == [200, 200, 200, 200]
    assert json.loads(answers[0][2]) == {"status": "ok"}
    assert json.loads(answers[1][2])["ticket_id"] == str(wire_tickets[1]["ticket_id"])
    assert json.loads(answers[3][2])["status"] == "ready"


@pytest.mark.parametrize(("raw", "status"), [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431),
    (b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n", 400),
    (b"POST /v1/score HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\n", 400),
], ids=["request line", "long request line", "huge header", "http version", "bad chunk"])
def test_gunicorns_own_errors_are_json(service, raw, status):
    sock = open_socket(service.port, timeout=30)
    try:
        sock.sendall(raw)
        got, headers, body = read_response(sock)
    finally:
        sock.close()
    assert got == status
    assert headers["Content-Type"] == "application/json"
    assert set(json.loads(body)) == {"error", "message", "details", "request_id"}


def test_health_answers_while_fifty_big_batches_run(service, wire_tickets):
    """50 concurrent clients send 1,000-ticket batches with new texts; /healthz and /readyz keep answering
    (a client timeout of 5 s: before admission control they went unanswered for ~11 s; a tighter bound
    would time the machine, not the service), and what the service cannot take is a JSON 503 with Retry-After."""
    batches = []
    for j in range(20):
        tickets = [{**t, "description": f"{t.get('description') or ''} ref {j}-{k}"}
                   for k, t in enumerate((wire_tickets * 4)[:1000])]
        batches.append(json.dumps({"tickets": tickets}).encode())
    headers = {**AUTH, "Content-Type": "application/json"}
    stop = threading.Event()
    statuses: list[tuple[int, bytes, dict]] = []
    probes: list[object] = []

    def client(k: int) -> None:
        i = k
        while not stop.is_set():
            try:
                statuses.append(request(service.port, "POST", "/v1/score", batches[i % len(batches)], headers,
                                        timeout=120))
            except OSError as exc:
                statuses.append((0, str(exc).encode(), {}))
            i += 50

    def probe() -> None:
        while not stop.is_set():
            for path in ("/healthz", "/readyz"):
                try:
                    probes.append(request(service.port, "GET", path, timeout=5.0)[0])
                except OSError as exc:
                    probes.append(exc)
            time.sleep(0.2)

    clients = [threading.Thread(target=client, args=(k,)) for k in range(50)]
    [t.start() for t in clients]
    time.sleep(1.0)  # let the batches pile up first
    prober = threading.Thread(target=probe)
    prober.start()
    time.sleep(10.0)
    stop.set()
    prober.join()
    [t.join(180) for t in clients]
    assert len(probes) >= 20
    missed = [p for p in probes if p != 200]
    assert not missed, f"{len(missed)} of {len(probes)} health probes failed or took over 5 s: {missed[:3]}"
    codes = {s[0] for s in statuses}
    assert codes <= {200, 503}, codes
    shed = [s for s in statuses if s[0] == 503]
    assert 200 in codes and shed
    # Shed by admission control (Retry-After 1) or, with SQLite, by the ticket store's writer lock
    # when the admitted batches record their tickets at once (Retry-After 2): both a JSON 503 to retry.
    errors = {json.loads(b)["error"] for _, b, _ in shed}
    assert errors <= {"overloaded", "store_unavailable"} and "overloaded" in errors, errors
    assert all(h.get("Retry-After") == {"overloaded": "1", "store_unavailable": "2"}[json.loads(b)["error"]]
               for _, b, h in shed)


def test_a_bundle_changed_in_place_is_served_by_every_worker_before_the_reload_answers(service, wire_tickets):
    """Same version name, new content (another calibration): after the 200, only the new content answers."""
    body = json.dumps(wire_tickets[2]).encode()
    headers = {**AUTH, "Content-Type": "application/json"}

    def probability() -> float:
        status, raw, _ = request(service.port, "POST", "/v1/score", body, headers)
        assert status == 200
        return json.loads(raw)["escalation"]["probability"]

    before = {probability() for _ in range(10)}
    assert len(before) == 1
    bundle = service.models_dir / V1
    metadata = json.loads((bundle / "metadata.json").read_text())
    recalibrated = {"method": "sigmoid", "a": 0.5, "b": -1.0}
    metadata["calibration"] = recalibrated
    for label in metadata.get("labels") or []:  # the primary label's own entry is what the loader reads
        if label.get("primary"):
            label["calibration"] = recalibrated
    (bundle / "metadata.json").write_text(json.dumps(metadata))
    write_manifest(bundle)
    status, raw, _ = request(service.port, "POST", "/v1/admin/reload", b"", ADMIN)
    assert status == 200, raw
    after = [probability() for _ in range(60)]
    assert len(set(after)) == 1 and set(after) != before
