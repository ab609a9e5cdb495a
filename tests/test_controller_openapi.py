"""The OpenAPI is complete, and schemathesis finds no server error behind it.

Schemathesis generates requests from /openapi.json (valid and invalid ones)
and sends them to the app in process (on SQLite and on PostgreSQL), signed in
with an admin API token so that every operation is reached past its authentication;
then as each other role (broadcaster, technician, officer), so that what a role
is refused is answered as documented too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS as REGISTRY
from schemathesis.checks import load_all_checks
from schemathesis.config import SchemathesisConfig

from cli.brokers.mosquitto import free_port
from controller.app import create_app
from controller.auth.accounts import create_user
from controller.auth.roles import PERMISSIONS, Principal, Role
from controller.auth.tokens import create_token
from controller.settings import load_settings
from controller.site.keys import init_site

load_all_checks()
_BY_NAME = {check.__name__: check for check in REGISTRY.get_all()}
# Every answer is checked against its documented status, type and schema. Not
# checked: that every schema-valid body is accepted (the schema cannot say
# "not only spaces" or "no control characters"; those get a bilingual 422).
CHECKS = {
    GenerationMode.POSITIVE: [
        _BY_NAME[name]
        for name in (
            "not_a_server_error",
            "status_code_conformance",
            "content_type_conformance",
            "response_schema_conformance",
        )
    ],
    GenerationMode.NEGATIVE: [
        _BY_NAME["not_a_server_error"],
        _BY_NAME["negative_data_rejection"],
    ],
}


CHEAP = "[security]\nargon2_time_cost = 1\nargon2_memory_kib = 1024\nargon2_parallelism = 1\n"


def build(tmp_path: Path, database_url: str, role: str = "admin") -> tuple[FastAPI, str]:
    """The app on a fresh database and a provisioned site; a token of ``role`` for it."""
    init_site(tmp_path / "site")
    config = tmp_path / "controller.toml"
    config.write_text(
        f'{CHEAP}[site]\ndir = "site"\n[database]\nurl = "{database_url}"\n'
        f"[mqtt]\nport = {free_port()}\n",  # no broker: never the machine's own on 1883
        encoding="utf-8",
    )
    app = create_app(load_settings(config))
    state = app.state.xaso
    with state.sessions() as db:
        user = create_user(
            db,
            state.auth.passwords,
            username=role,
            display_name=role.title(),
            role=role,
            password="mat-khau-quan-tri",
            now_ms=state.now_ms(),
        )
        owner = Principal("user", user.id, role, role, Role(role), PERMISSIONS[Role(role)])
        token, _ = create_token(db, owner, "schemathesis", role, state.now_ms())
        db.commit()
    return app, token


@pytest.fixture
def api(tmp_path: Path, database_url: str) -> Iterator[tuple[FastAPI, str]]:
    app, token = build(tmp_path, database_url)
    yield app, token
    app.state.xaso.engine.dispose()


# An invalid body over the guard's cap is refused before it is parsed: 413 is a
# rejection too, and every operation with a body documents it.
# No broker runs for this app (each call starts and stops its lifespan, so its bus never
# connects): an operation that must send answers the documented 503 `station.no_broker`,
# which is a refusal, not a crash. Any other 5xx (500 above all) is still a failure.
REJECTIONS = SchemathesisConfig.from_dict(
    {
        "checks": {
            "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", 503]},
            "negative_data_rejection": {
                "expected-statuses": [
                    400,
                    401,
                    403,
                    404,
                    405,
                    406,
                    409,
                    413,
                    415,
                    422,
                    428,
                    429,
                    "5xx",
                ]
            },
        }
    }
)


@pytest.fixture
def api_schema(api: tuple[FastAPI, str]) -> Any:
    # built once here, with no deadline: schemathesis reads it with a 10 s one, which a
    # loaded machine's first build of the whole app's schema could miss
    api[0].openapi()
    return schemathesis.openapi.from_asgi("/openapi.json", api[0], config=REJECTIONS)


def test_every_json_operation_documents_its_answers(api: tuple[FastAPI, str]) -> None:
    from fastapi.testclient import TestClient

    spec = TestClient(api[0]).get("/openapi.json").json()
    operations = [
        (path, method, op) for path, item in spec["paths"].items() for method, op in item.items()
    ]
    assert len(operations) >= 9
    for path, method, op in operations:
        if path in ("/metrics", "/api/clips/{sha256}"):
            continue  # text and file answers, not JSON
        ok = next(code for code in op["responses"] if code.startswith("2"))
        assert "$ref" in str(op["responses"][ok]["content"]["application/json"]["schema"]), path
        assert op.get("summary") or op.get("description"), (path, method)
        errors = {c for c in op["responses"] if c[0] in "45"}
        assert errors, (path, method)
        if "requestBody" in op:
            assert "413" in errors, (path, method)
        for code in errors:
            schema = op["responses"][code]["content"]["application/json"]["schema"]
            assert schema["$ref"].rsplit("/", 1)[-1] in ("ErrorBody", "HTTPValidationError")
    assert set(spec["components"]["schemas"]["ErrorBody"]["properties"]) == {
        "detail", "code", "vi", "en",
    }  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda m: m.value)
def test_schemathesis_finds_no_server_error(
    api_schema: Any, api: tuple[FastAPI, str], mode: Any
) -> None:
    """Valid and invalid requests to every operation; each answer also matches its schema."""
    fuzzed = fuzz(api_schema, api[1], mode, max_examples=30)
    assert "POST /api/users" in fuzzed and "PATCH /api/users/{username}" in fuzzed
    assert "GET /api/audit" in fuzzed and "DELETE /api/tokens/{token_id}" in fuzzed
    assert "POST /api/commands/volume" in fuzzed


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda m: m.value)
@pytest.mark.parametrize("role", ["broadcaster", "technician", "officer"])
def test_schemathesis_as_each_role_finds_no_server_error(
    tmp_path: Path, role: str, mode: Any
) -> None:
    """The same, signed in as each other role: what it may do, and what it is refused
    (403, documented), never answers 5xx. SQLite: the admin's run covers PostgreSQL."""
    app, token = build(tmp_path, f"sqlite:///{tmp_path / 'controller.db'}", role)
    try:
        schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=REJECTIONS)
        fuzzed = fuzz(schema, token, mode, max_examples=12)
        assert "GET /api/devices" in fuzzed and "POST /api/commands/restart" in fuzzed
    finally:
        app.state.xaso.engine.dispose()


def fuzz(schema: Any, token: str, mode: Any, *, max_examples: int) -> list[str]:
    """Every operation of ``schema`` fuzzed with ``token``; the labels of those fuzzed."""
    headers = {"Authorization": f"Bearer {token}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9

    fuzzed = []
    for operation in operations:

        @given(case=operation.as_strategy(mode))
        @settings(
            max_examples=max_examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            # text to speech runs espeak-ng and ffmpeg: on a loaded 2-core machine it can
            # take longer than the default 10 s read timeout, which is not a server error
            case.call_and_validate(headers=headers, checks=CHECKS[mode], timeout=120)

        try:
            run()
        except Unsatisfiable:
            # Negative mode only: an operation whose inputs admit no invalid value
            # (no parameters, or one free-form string) has nothing to break.
            assert mode is GenerationMode.NEGATIVE, operation.label
            continue
        fuzzed.append(operation.label)
    return fuzzed
