"""Schemathesis against /openapi.json of a running gunicorn: every operation, hundreds of generated
cases (valid and invalid), no 5xx, and every status, content type and body as the document says."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.reliability.conftest import ADMIN, AUTH

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
CALLS: dict[str, int] = {}


@pytest.fixture(scope="module")
def api_schema(shared_service):
    return schemathesis.openapi.from_url(f"{shared_service.base}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_documented(case, shared_service):
    headers = ADMIN if case.path == "/v1/admin/reload" else AUTH
    case.call_and_validate(base_url=shared_service.base, headers=headers, checks=CHECKS)
    key = f"{case.method.upper()} {case.path}"
    CALLS[key] = CALLS.get(key, 0) + 1


def test_fuzzing_reached_every_operation_and_the_service_is_still_up(shared_service):
    """Runs after the fuzzing above (file order): the generated cases covered each operation."""
    assert {"POST /v1/score", "POST /v1/integrations/{system}", "GET /v1/model", "POST /v1/admin/reload",
            "GET /healthz", "GET /readyz", "GET /metrics"} <= set(CALLS)
    assert CALLS["POST /v1/score"] >= 50 and CALLS["POST /v1/integrations/{system}"] >= 50
    print(f"\nschemathesis cases per operation: {CALLS} (total {sum(CALLS.values())})")
    assert shared_service.call("GET", "/readyz")[0] == 200
