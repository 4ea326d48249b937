"""Property test: requests generated from the OpenAPI document never get a 5xx.

Bounded on purpose (about 100 generated requests in all): schemathesis builds a hypothesis
strategy per operation and every example goes to a real server.
"""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from server.app import create_app
from server.settings import Settings
from tests.server.conftest import KEY, running

# The document only: building the app starts nothing (the engine starts with the lifespan).
DOCUMENT = create_app(Settings(keys_file="/nonexistent/keys.json")).openapi()
SCHEMA = schemathesis.openapi.from_dict(DOCUMENT)
OPERATIONS = [(path, method.upper()) for path, methods in DOCUMENT["paths"].items() for method in methods]


@pytest.fixture(scope="module")
def fuzz_api(tmp_path_factory, origin):
    # Generated URLs name arbitrary public hosts, unreachable here: fail their fetches fast.
    with running(tmp_path_factory.mktemp("fuzz"), fetch_connect_timeout_s=0.05, fetch_read_timeout_s=0.2) as server:
        yield server


@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_no_server_errors(fuzz_api, path, method):
    @given(case=SCHEMA[path][method].as_strategy())
    @settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case):
        response = case.call(base_url=fuzz_api.url, headers={"x-api-key": KEY}, timeout=30)
        assert response.status_code < 500, (method, path, response.status_code, response.text[:300])

    check()
