"""Fuzzing of the REST API from its own OpenAPI schema: no request may cause a 500.

Hypothesis draws an operation of the schema, then path and query parameters and a
JSON body. Each follows the schema or breaks it (wrong types, random text,
arbitrary JSON, bytes that are not JSON). The request carries one of the four
roles' tokens, no token or a forged one. Every response must have a status below
500, and every error must have the service's error shape.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from healthscore.service import create_app
from healthscore.store import StateStore
from service_project import TestClient, bearer, service_project, tokens

#: Examples per fuzz test, so both together run in well under 30 s.
EXAMPLES = 150

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=8,
)

NASTY_TEXT = st.sampled_from(
    ["", " ", "\x00", "a1\x00", "../../etc/passwd", "' OR 1=1 --", "%", "🙂", "9" * 40]
)


@contextmanager
def serving(root: Path, state_url: str) -> Iterator[dict[str, Any]]:
    """Serve a scored project stored at `state_url` through a TestClient."""
    project = service_project(root, state_url)
    state = StateStore.open(project.config.store.state, project.root)
    app = create_app(project, state=state)
    with TestClient(app, raise_server_exceptions=False) as client:
        schema = client.get("/openapi.json").json()
        yield {"client": client, "schema": schema, "tokens": tokens(state)}
    state.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("fuzz") / "project"
    with serving(root, "sqlite:///.healthscore/state.db") as served:
        yield served


def resolve(schema: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    """Follow a local `$ref` of the OpenAPI document."""
    while "$ref" in schema:
        node: Any = document
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def values_of(
    schema: dict[str, Any], document: dict[str, Any]
) -> st.SearchStrategy[Any]:
    """Values that follow `schema`, a JSON schema of the OpenAPI document."""
    schema = resolve(schema, document)
    if "anyOf" in schema:
        return st.one_of([values_of(item, document) for item in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "const" in schema:
        return st.just(schema["const"])
    kind = schema.get("type")
    if kind == "string" and schema.get("format") == "date":
        return st.dates(min_value=date(1, 1, 1)).map(date.isoformat)
    if kind == "string":
        return st.text(max_size=30) | NASTY_TEXT
    if kind == "integer":
        return st.integers(
            min_value=schema.get("minimum", -(2**63)),
            max_value=schema.get("maximum", 2**63),
        )
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(values_of(schema.get("items", {}), document), max_size=3)
    if kind == "object":
        properties = schema.get("properties", {})
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {name: values_of(properties[name], document) for name in required},
            optional={
                name: values_of(item, document)
                for name, item in properties.items()
                if name not in required
            },
        )
    return JSON_VALUES


def parameter_value(
    schema: dict[str, Any], document: dict[str, Any]
) -> st.SearchStrategy[Any]:
    """A parameter value: one that follows the schema, or malformed text."""
    return values_of(schema, document) | st.text(max_size=30) | NASTY_TEXT


@st.composite
def requests(draw: st.DrawFn, document: dict[str, Any]) -> dict[str, Any]:
    """One request: method, URL, query, body and token choice."""
    operations = [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]
    path, method, operation = draw(st.sampled_from(operations))
    query: dict[str, str] = {}
    url = path
    for parameter in operation.get("parameters", []):
        schema = parameter.get("schema", {})
        if parameter["in"] == "path":
            if parameter["name"] == "account_id":
                value = draw(st.sampled_from(["a1", "a2", "a4", "zz"]) | st.text())
            else:
                value = draw(parameter_value(schema, document))
            text = value if isinstance(value, str) else json.dumps(value)
            url = url.replace(
                "{" + parameter["name"] + "}", quote(text, safe="") or "x"
            )
        elif parameter["in"] == "query" and draw(st.booleans()):
            value = draw(parameter_value(schema, document))
            query[parameter["name"]] = (
                value if isinstance(value, str) else json.dumps(value)
            )
    body: Any = None
    content = operation.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        body_schema = content["application/json"]["schema"]
        body = draw(
            st.one_of(
                values_of(body_schema, document).map(json.dumps),
                JSON_VALUES.map(json.dumps),
                st.binary(max_size=40),
            )
        )
    role = draw(st.sampled_from(["admin", "analyst", "csm", "viewer", None, "forged"]))
    return {"method": method, "url": url, "query": query, "body": body, "role": role}


def send(served: dict[str, Any], request: dict[str, Any]) -> Any:
    token = {**served["tokens"], "forged": "hs_1_" + "A" * 43}.get(request["role"])
    headers = bearer(token) if token else {}
    if request["body"] is not None:
        headers["Content-Type"] = "application/json"
    return served["client"].request(
        request["method"].upper(),
        request["url"],
        params=request["query"],
        content=request["body"],
        headers=headers,
    )


def check_answer(response: Any) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["status"] == response.status_code
        assert isinstance(error["message"], str)
        assert error["message"]


def fuzz_requests(served: dict[str, Any], examples: int) -> None:
    """Send `examples` drawn requests and check every response."""

    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        database=None,
    )
    @given(request=requests(served["schema"]))
    def run(request: dict[str, Any]) -> None:
        check_answer(send(served, request))

    run()


def test_fuzz_schema_no_server_error(served):
    fuzz_requests(served, EXAMPLES)


def test_fuzz_on_postgresql(postgres_url, tmp_path):
    """PostgreSQL rejects some text that SQLite stores, such as NUL characters."""
    with serving(tmp_path / "project", postgres_url) as served:
        fuzz_requests(served, EXAMPLES // 2)


def test_fuzz_covers_every_operation(served):
    """The schema lists every route, so the fuzzer can draw each of them."""
    paths = served["schema"]["paths"]
    operations = {(method, path) for path, item in paths.items() for method in item}
    assert ("post", "/api/v1/accounts/{account_id}/notes") in operations
    assert ("post", "/api/v1/tasks/{task_id}/complete") in operations
    assert ("get", "/api/v1/exports/accounts.csv") in operations
    assert len(operations) >= 25


def test_fuzz_valid_bodies_with_admin(served, tmp_path: Path):
    """Bodies that follow the schema, sent with an admin token to every write route."""
    document = served["schema"]
    writes = [
        (path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method == "post" and "requestBody" in operation
    ]

    @settings(max_examples=EXAMPLES // 2, deadline=None, database=None)
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        path, operation = data.draw(st.sampled_from(writes))
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        body = data.draw(values_of(schema, document))
        url = path.replace("{account_id}", data.draw(st.sampled_from(["a2", "a3"])))
        url = url.replace("{task_id}", str(data.draw(st.integers(1, 5))))
        response = served["client"].post(
            url, json=body, headers=bearer(served["tokens"]["admin"])
        )
        check_answer(response)

    run()
