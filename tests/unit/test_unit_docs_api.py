"""docs/api.md says what the served OpenAPI document says: no more, no less.

The page's conventions are written at its top: an operation is a heading
`### METHOD /path`, its query and header parameters are the rows of a table under
it, and a section whose first line is `Schemas: `A`, `B`` documents those component
schemas, one table row per field (per value, for an enum), the name in backticks in
the first column. This test reads the page by those conventions and compares it with
`runnerd.openapi.document()`, after checking that the app serves exactly that
document at /v1/openapi.json.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from runnerd import api, openapi
from runnerd.config import Config

API_MD = Path(__file__).resolve().parents[2] / "docs" / "api.md"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
ENDPOINT = re.compile(r"^(GET|PUT|POST|DELETE|OPTIONS|HEAD|PATCH|TRACE) (/\S*)$")
SCHEMAS_LINE = re.compile(r"^Schemas:\s*(.*)$")
TABLE_ROW = re.compile(r"^\|(.*)\|\s*$")
CODE = re.compile(r"`([^`]+)`")
SEPARATOR_ROW = re.compile(r"^[\s|:-]+$")


@dataclass
class Section:
    heading: str
    line: int
    endpoint: tuple[str, str] | None = None
    schemas: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)  # name in the first column -> line


def sections(text: str) -> list[Section]:
    """The page's level-3 sections, with their `Schemas:` line and table rows.

    Fenced code blocks are skipped: a `# comment` in a shell example is not a heading.
    """
    found: list[Section] = []
    current: Section | None = None
    first_line = False
    in_fence = False
    in_table = False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        heading = HEADING.match(line)
        if heading:
            current = None
            in_table = False
            if len(heading.group(1)) == 3:
                current = Section(heading.group(2), number)
                endpoint = ENDPOINT.match(heading.group(2))
                if endpoint:
                    current.endpoint = (endpoint.group(1).lower(), endpoint.group(2))
                found.append(current)
                first_line = True
            continue
        if current is None or not line.strip():
            in_table = False
            continue
        if first_line:
            first_line = False
            listed = SCHEMAS_LINE.match(line)
            if listed:
                current.schemas = CODE.findall(listed.group(1))
                continue
        row = TABLE_ROW.match(line)
        header = row is not None and not in_table  # a table's first row names its columns
        in_table = row is not None
        if row and not header and not SEPARATOR_ROW.match(line):
            first_cell = row.group(1).split("|")[0]
            for name in CODE.findall(first_cell):
                current.rows.setdefault(name, number)
    return found


def resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        *_, kind, name = node["$ref"].split("/")
        node = document["components"][kind][name]
    return node


def own_fields(schema: dict[str, Any]) -> Iterator[str]:
    """A schema's property names, also those of objects written inline in it (not $refs)."""
    if "$ref" in schema:
        return
    for name, sub in schema.get("properties", {}).items():
        yield name
        yield from own_fields(sub)
    for key in ("allOf", "anyOf", "oneOf"):
        for sub in schema.get(key, []):
            yield from own_fields(sub)
    if isinstance(schema.get("items"), dict):
        yield from own_fields(schema["items"])


def documented_names(schema: dict[str, Any]) -> set[str]:
    """What a schema's section must list: its fields, or for an enum its values."""
    if "enum" in schema:
        return {str(value) for value in schema["enum"] if value is not None}
    return set(own_fields(schema))


def operations(document: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    """(method, path) -> the names of its query and header parameters."""
    found: dict[tuple[str, str], set[str]] = {}
    for path, item in document["paths"].items():
        shared = item.get("parameters", [])
        for method, op in item.items():
            if method not in METHODS:
                continue
            params = [resolve(document, p) for p in [*shared, *op.get("parameters", [])]]
            found[(method, path)] = {p["name"] for p in params if p["in"] in ("query", "header")}
    return found


def page() -> list[Section]:
    return sections(API_MD.read_text(encoding="utf-8"))


def where(section: Section) -> str:
    return f"docs/api.md:{section.line} (### {section.heading})"


async def test_app_serves_exactly_the_module_document_at_v1_openapi_json(
    aiohttp_client: Any,
) -> None:
    # make_app only builds routes and keeps the parts for the handlers; serving the
    # document, which needs no key, uses none of them.
    params = list(inspect.signature(api.make_app).parameters)
    app = api.make_app(Config(), *[None] * (len(params) - 1))
    client: TestClient[Any, Any] = await aiohttp_client(app)
    response = await client.get("/v1/openapi.json")
    assert response.status == 200
    assert await response.json() == openapi.document()


def test_every_served_operation_has_a_heading_and_every_heading_is_served() -> None:
    served = operations(openapi.document())
    documented: dict[tuple[str, str], Section] = {}
    problems = []
    for section in page():
        if section.endpoint is None:
            continue
        if section.endpoint in documented:
            problems.append(f"{where(section)}: documented twice")
        documented[section.endpoint] = section
    for method, path in sorted(served.keys() - documented.keys()):
        problems.append(
            f"served {method.upper()} {path} has no heading `### {method.upper()} {path}`"
        )
    for key in sorted(documented.keys() - served.keys()):
        problems.append(f"{where(documented[key])}: the served document has no such operation")
    assert not problems, "docs/api.md and the served operations disagree:\n" + "\n".join(problems)


def test_every_served_parameter_is_documented_under_its_operation_and_no_other() -> None:
    served = operations(openapi.document())
    problems = []
    for section in page():
        if section.endpoint is None or section.endpoint not in served:
            continue  # a heading that is not served fails the test above
        params = served[section.endpoint]
        for name in sorted(params - section.rows.keys()):
            problems.append(f"{where(section)}: parameter `{name}` is served but not documented")
        for name in sorted(section.rows.keys() - params):
            problems.append(
                f"docs/api.md:{section.rows[name]} (### {section.heading}): parameter `{name}`"
                " is documented but not served"
            )
    assert not problems, "docs/api.md and the served parameters disagree:\n" + "\n".join(problems)


def test_every_field_of_every_component_schema_is_documented_and_nothing_else() -> None:
    document = openapi.document()
    components: dict[str, Any] = document["components"]["schemas"]
    problems = []
    covered: dict[str, Section] = {}
    for section in page():
        if not section.schemas:
            continue
        expected: set[str] = set()
        for name in section.schemas:
            if name not in components:
                problems.append(f"{where(section)}: schema `{name}` is not in the served document")
                continue
            if name in covered:
                problems.append(
                    f"{where(section)}: schema `{name}` is also documented at "
                    f"{where(covered[name])}"
                )
            covered[name] = section
            missing = documented_names(components[name]) - section.rows.keys()
            for field_name in sorted(missing):
                problems.append(
                    f"{where(section)}: field `{field_name}` of schema `{name}` is not documented"
                )
            expected |= documented_names(components[name])
        if all(name in components for name in section.schemas):
            for row in sorted(section.rows.keys() - expected):
                problems.append(
                    f"docs/api.md:{section.rows[row]} (### {section.heading}): `{row}` is"
                    f" documented but no schema of {section.schemas} has it"
                )
    for name, schema in components.items():
        if name not in covered and documented_names(schema):
            fields = ", ".join(sorted(documented_names(schema)))
            problems.append(f"served schema `{name}` ({fields}) is in no section's `Schemas:` line")
    assert not problems, "docs/api.md and the served schemas disagree:\n" + "\n".join(problems)


def test_sections_reads_the_conventions_and_skips_code_blocks() -> None:
    # The reader itself must be able to fail: a page with one of each kind of mistake.
    text = "\n".join(
        [
            "### GET /v1/things/{thing_id}",
            "",
            "| Parameter | In |",
            "|---|---|",
            "| `limit` | query |",
            "```sh",
            "### POST /v1/not-a-heading",
            "```",
            "### Things",
            "",
            "Schemas: `Thing`, `ThingList`",
            "",
            "| Field | Meaning |",
            "|---|---|",
            "| `id`, `name` | … |",
            "",
            "| `header` | … |",
            "|---|---|",
            "| `value` | … |",
        ]
    )
    first, second = sections(text)
    assert first.endpoint == ("get", "/v1/things/{thing_id}")
    assert set(first.rows) == {"limit"}
    assert second.endpoint is None
    assert second.schemas == ["Thing", "ThingList"]
    assert set(second.rows) == {"id", "name", "value"}
