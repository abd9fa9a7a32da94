"""Property-based API testing of the auth service against its own OpenAPI document (schemathesis).

Every generated request (valid and invalid bodies, forms, headers) must get a documented status code,
a response matching the documented schema (on the token and revocation endpoints: RFC 6749 error
bodies), and never a 5xx. Bounded to a few dozen examples per
operation so the whole file stays around a minute on two cores.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.config import SchemathesisConfig

from tests.fixtures.auth import serve_auth

pytestmark = pytest.mark.integration

REJECTIONS = (400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
]


@pytest.fixture(scope="module")
def auth_api_service(database_url: str) -> Iterator[Any]:
    with serve_auth(database_url) as service:
        yield service


@pytest.fixture(scope="module")
def auth_api(auth_api_service: Any) -> Any:
    # an over-long string may also be refused by the body size limit (413): that is a rejection too
    config = SchemathesisConfig.from_dict({"checks": {"negative_data_rejection": {"expected-statuses": [*REJECTIONS]}}})
    return schemathesis.openapi.from_url(auth_api_service.base_url + "/openapi.json", config=config)


@pytest.fixture(scope="module")
def admin_headers(auth_api_service: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {auth_api_service.issue_token('admin')}"}


def _operations(auth_api: Any) -> list[Any]:
    return [result.ok() for result in auth_api.get_all_operations()]


def _fuzz(operation: Any, mode: GenerationMode, headers: dict[str, str] | None, examples: int) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def run(case: Any) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    run()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"])
def test_auth_api_conforms_to_its_openapi(auth_api: Any, admin_headers: dict[str, str], mode: GenerationMode) -> None:
    operations = _operations(auth_api)
    assert {op.label for op in operations} >= {
        "POST /auth/register",
        "POST /auth/token",
        "POST /auth/revoke",
        "POST /auth/refresh",
        "POST /auth/logout",
        "GET /auth/me",
        "GET /.well-known/jwks.json",
        "GET /.well-known/oauth-authorization-server",
    }
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and not len(operation.body):
            continue  # nothing to break in a request without a body or parameters
        _fuzz(operation, mode, admin_headers, 40)


def test_auth_api_conforms_without_credentials(auth_api: Any) -> None:
    for operation in _operations(auth_api):
        _fuzz(operation, GenerationMode.POSITIVE, None, 8)
