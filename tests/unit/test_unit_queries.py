"""Query parameters and headers, declared once: the server's checks and the OpenAPI
document's parameters both follow from `contract.queries`' declarations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from runnerd import contract, openapi
from runnerd.contract import Invalid
from runnerd.contract.queries import (
    JSON,
    SSE,
    TEXT,
    Count,
    parse_json_logs_query,
    parse_run_list_query,
    parse_sse_logs_query,
    parse_text_logs_query,
)

LOGS_PATH = "/v1/runners/{runner_id}/runs/{run_id}/logs"
RUNS_PATH = "/v1/runners/{runner_id}/runs"

Parse = Callable[[dict[str, str]], object]
PARSERS: dict[str, Parse] = {
    TEXT: parse_text_logs_query,
    JSON: parse_json_logs_query,
    SSE: lambda query: parse_sse_logs_query(query, None),
}


def errors_of(parse: Parse, query: dict[str, str]) -> list[str]:
    with pytest.raises(Invalid) as info:
        parse(query)
    return info.value.errors


def known_of(parse: Parse) -> list[str]:
    """The known list the server names when it rejects an unknown parameter."""
    (error,) = errors_of(parse, {"nope": "1"})
    prefix = "nope: is not a known query parameter (known: "
    assert error.startswith(prefix) and error.endswith(")"), error
    return error[len(prefix) : -1].split(", ")


def served_parameters(path: str, method: str) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = openapi.document()["paths"][path][method]["parameters"]
    return params


@pytest.mark.parametrize("form", [TEXT, JSON, SSE])
def test_the_document_says_each_logs_form_takes_exactly_what_the_server_accepts(
    form: str,
) -> None:
    """A generated client reads the form a parameter applies to from its description;
    the server rejects the others, so both must name the same parameters."""
    documented = [
        p["name"]
        for p in served_parameters(LOGS_PATH, "get")
        if p["in"] == "query" and form in p["description"].split(": ", 1)[0].split(", ")
    ]
    assert documented == known_of(PARSERS[form])


def test_the_run_list_documents_exactly_the_parameters_it_accepts() -> None:
    documented = [p["name"] for p in served_parameters(RUNS_PATH, "get")]
    assert documented == known_of(parse_run_list_query) == ["limit", "status", "trigger", "before"]


def test_no_parameter_has_a_schema_default_and_each_default_is_said_and_applied() -> None:
    """Generated clients send a schema default on every call (see Param.openapi)."""
    assert parse_run_list_query({}).limit == contract.RUNS_LIMIT_DEFAULT
    assert parse_json_logs_query({}).limit == contract.LOGS_LIMIT_DEFAULT
    assert parse_text_logs_query({}) == (None, False)
    for params in (contract.RUN_LIST_QUERY, contract.LOGS_QUERY, (contract.IDEMPOTENCY_KEY,)):
        for param in params:
            served = param.openapi()
            assert "default" not in served["schema"], param.name
            if param.default is not None:
                shown = str(param.default).lower()
                assert served["description"].endswith(f" Default: `{shown}`."), param.name


COUNTS = [
    (parse, p)
    for parse, params in (
        (parse_run_list_query, contract.RUN_LIST_QUERY),
        (parse_text_logs_query, contract.LOGS_QUERY),
        (parse_json_logs_query, contract.LOGS_QUERY),
    )
    for p in params
    if isinstance(p, Count) and p.name in known_of(parse)
]


@pytest.mark.parametrize(
    ("parse", "param"), COUNTS, ids=[f"{p.name}-{parse.__name__}" for parse, p in COUNTS]
)
def test_a_counts_declared_limits_are_both_checked_and_documented(
    parse: Parse, param: Count
) -> None:
    assert param.openapi()["schema"] == {
        "type": "integer",
        "minimum": param.low,
        "maximum": param.high,
    }
    for ok in (param.low, param.high):
        parse({param.name: str(ok)})
    for bad in (param.low - 1, param.high + 1):
        assert errors_of(parse, {param.name: str(bad)}) == [
            f"{param.name}: must be a whole number from {param.low} to {param.high}, "
            f"got {str(bad)!r}"
        ]


def test_the_stream_filter_accepts_exactly_its_documented_enum() -> None:
    (stream,) = [p for p in served_parameters(LOGS_PATH, "get") if p["name"] == "stream"]
    assert stream["schema"]["enum"] == ["stdout", "stderr"]
    for name, number in contract.LOG_STREAMS.items():
        assert parse_json_logs_query({"stream": name}).stream == number
        assert parse_sse_logs_query({"stream": name}, None) == (None, number)
    assert errors_of(parse_json_logs_query, {"stream": "both"}) == [
        "stream: must be stdout or stderr, got 'both'"
    ]


def test_json_logs_report_every_problem_in_the_declared_order() -> None:
    errors = errors_of(
        parse_json_logs_query, {"x": "1", "limit": "0", "after": "1", "before": "2", "stream": "y"}
    )
    assert errors == [
        "x: is not a known query parameter (known: limit, after, before, stream)",
        "limit: must be a whole number from 1 to 2500, got '0'",
        "before: cannot be used together with after",
        "stream: must be stdout or stderr, got 'y'",
    ]


def test_sse_reports_a_bad_last_event_id_before_a_bad_stream() -> None:
    with pytest.raises(Invalid) as info:
        parse_sse_logs_query({"stream": "y"}, "abc")
    assert info.value.errors == [
        "Last-Event-ID: must be a log entry id (header), got 'abc'",
        "stream: must be stdout or stderr, got 'y'",
    ]
    assert parse_sse_logs_query({}, " 7 ") == (7, None)
    assert parse_sse_logs_query({}, "  ") == (None, None)


def test_the_headers_are_documented_from_their_declarations() -> None:
    trigger = served_parameters(RUNS_PATH, "post")
    assert trigger == [contract.IDEMPOTENCY_KEY.openapi()]
    assert trigger[0]["in"] == "header"
    assert trigger[0]["schema"]["maxLength"] == contract.IDEMPOTENCY_KEY_MAX
    (last_event_id,) = [p for p in served_parameters(LOGS_PATH, "get") if p["in"] == "header"]
    assert last_event_id["name"] == "Last-Event-ID"
    assert last_event_id["description"].startswith(f"{SSE}: ")


def test_the_log_event_component_refers_to_components_that_exist() -> None:
    schemas = contract.component_schemas()
    refs = [
        event["properties"]["data"]["contentSchema"]["$ref"]
        for event in schemas["LogEvent"]["oneOf"]
    ]
    assert refs == ["#/components/schemas/LogLine", "#/components/schemas/Run"]
    assert all(ref.rsplit("/", 1)[1] in schemas for ref in refs)
