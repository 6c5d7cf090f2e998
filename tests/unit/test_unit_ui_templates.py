"""The dashboard's templates against its CSP (script-src 'self', style-src 'self'):
no inline script, no event-handler attribute, no style attribute or element; every
POST form carries the session's CSRF token; and the package ships every template
and asset (pico.css's licence too)."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UI = ROOT / "runnerd" / "ui"
TEMPLATES = sorted((UI / "templates").glob("*.html"))
CSRF_INPUT = '<input type="hidden" name="csrf_token" value="{{ csrf_token }}">'


def _without_jinja(text: str) -> str:
    """The HTML a template makes, near enough to parse: tags `{% … %}` dropped,
    expressions `{{ … }}` standing as a word, comments gone."""
    text = re.sub(r"{#.*?#}", "", text, flags=re.S)
    text = re.sub(r"{%.*?%}", " ", text, flags=re.S)
    return re.sub(r"{{.*?}}", "X", text, flags=re.S)


class _Scan(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        where = f"line {self.getpos()[0]}: <{tag}>"
        names = {name.lower() for name, _ in attrs}
        for name in names:
            if re.fullmatch(r"on[a-z]+", name):
                self.problems.append(f"{where} has an event handler attribute {name}=")
        if "style" in names:
            self.problems.append(f"{where} has a style= attribute")
        if tag == "style":
            self.problems.append(f"{where} is an inline <style> element")
        if tag == "script":
            if "src" not in names:
                self.problems.append(f"{where} is an inline <script> (no src)")
            self._in_script = True
        for name, value in attrs:
            if name in ("href", "src", "action") and (value or "").strip().lower().startswith(
                "javascript:"
            ):
                self.problems.append(f"{where} has a javascript: URL")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.problems.append(f"line {self.getpos()[0]}: a <script> with a body")


def test_there_are_templates_to_scan() -> None:
    assert {"base.html", "login.html", "error.html"} <= {t.name for t in TEMPLATES}


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_a_template_has_no_inline_script_handler_or_style(template: Path) -> None:
    scan = _Scan()
    scan.feed(_without_jinja(template.read_text()))
    scan.close()
    assert scan.problems == [], f"{template.name}: {scan.problems}"


def test_the_scan_finds_what_the_csp_would_block() -> None:
    # So the test above can fail: each of these is reported.
    for bad in (
        "<script>alert(1)</script>",
        "<script>{{ x }}</script>",
        '<button onclick="go()">',
        '<a href="#" ONMOUSEOVER="go()">',
        '<p style="color: red">',
        "<style>p { color: red }</style>",
        '<a href="javascript:go()">',
    ):
        scan = _Scan()
        scan.feed(_without_jinja(bad))
        scan.close()
        assert scan.problems, bad
    scan = _Scan()
    scan.feed(_without_jinja("<script src=\"{{ static('app.js') }}\" defer></script>"))
    assert scan.problems == []


def _post_forms(text: str) -> list[str]:
    return re.findall(r"<form\b[^>]*\bmethod=\"post\"[^>]*>.*?</form>", text, re.S | re.I)


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_every_post_form_carries_the_csrf_token(template: Path) -> None:
    text = template.read_text()
    opened = len(re.findall(r"<form\b[^>]*\bmethod=\"?post", text, re.I))
    forms = _post_forms(text)
    assert len(forms) == opened, f"{template.name}: a POST form not written as the others"
    for form in forms:
        if 'action="/ui/login"' in form:
            continue  # no session yet: Origin alone guards it
        assert CSRF_INPUT in form, f"{template.name}: a POST form without the CSRF token"


def test_the_package_ships_every_template_and_asset() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = data["tool"]["setuptools"]["package-data"]["runnerd.ui"]
    files = [p.relative_to(UI).as_posix() for p in UI.rglob("*") if p.is_file()]
    shipped = [
        f for f in files if f.startswith(("templates/", "static/")) and "__pycache__" not in f
    ]
    assert "static/pico.LICENSE.md" in shipped and "static/pico.min.css" in shipped
    for f in shipped:
        assert any(fnmatch.fnmatch(f, g) for g in globs), f"{f}: not in package-data {globs}"
    assert not any("/" in f.split("/", 1)[1] for f in shipped), "a subfolder the globs miss"
