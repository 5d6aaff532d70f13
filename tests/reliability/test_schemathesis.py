"""Schemathesis against /openapi.json of a running gunicorn: every operation, hundreds of generated
cases (valid and invalid), no 5xx, and every status, content type and body as the document says."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.reliability.conftest import ADMIN, AUTH

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
OPERATIONS = [("POST", "/v1/score", 150), ("POST", "/v1/integrations/{system}", 100), ("GET", "/v1/model", 5),
              ("POST", "/v1/admin/reload", 3), ("GET", "/healthz", 5), ("GET", "/readyz", 5), ("GET", "/metrics", 5),
              ("GET", "/reports", 3), ("GET", "/reports/latest", 2), ("GET", "/reports/latest/{name}", 10),
              ("GET", "/reports/{version}", 15), ("GET", "/reports/{version}/{name}", 15)]
WITH_BODY = {"/v1/score", "/v1/integrations/{system}"}
CASES: dict[str, int] = {}


@pytest.fixture(scope="module")
def api_schema(shared_service):
    return schemathesis.openapi.from_url(f"{shared_service.base}/openapi.json")


RUNS = [(*op, GenerationMode.POSITIVE) for op in OPERATIONS] + [
    (*op, GenerationMode.NEGATIVE) for op in OPERATIONS if op[1] in WITH_BODY]  # the others take no input


@pytest.mark.parametrize(("method", "path", "examples", "mode"), RUNS,
                         ids=[f"{m} {p} {'valid' if g is GenerationMode.POSITIVE else 'invalid'}" for m, p, _, g in RUNS])
def test_every_operation_answers_as_documented(api_schema, shared_service, method, path, examples, mode):
    operation = api_schema[path][method]
    headers = ADMIN if path == "/v1/admin/reload" else AUTH
    key = f"{method} {path} {mode.value}"

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case):
        case.call_and_validate(base_url=shared_service.base, headers=headers, checks=CHECKS)
        CASES[key] = CASES.get(key, 0) + 1

    check()
    assert CASES[key] >= 1


def test_fuzzing_reached_every_operation_and_the_service_is_still_up(shared_service):
    """Runs after the fuzzing above (file order)."""
    reached = {" ".join(key.split()[:2]) for key in CASES}
    assert reached == {f"{m} {p}" for m, p, _ in OPERATIONS}
    assert sum(CASES.values()) >= 300
    print(f"\nschemathesis cases per operation and mode: {CASES} (total {sum(CASES.values())})")
    assert shared_service.call("GET", "/readyz")[0] == 200
