"""One form field as HTML: the label, the input for its kind (select, date, number, text, textarea)
or its read-only value, the type's help and the field's errors.

This was the Jinja macro ``field`` of ``_form.html``.  A patient page draws a few hundred fields (every
episode's form), and each macro call builds a new template context: the calls took three quarters of
the page's rendering (py-spy, web benchmark).  The function writes the same HTML, character for
character (a test renders bench patients' pages with both and compares them), with every value
escaped as Jinja's autoescape does (``None`` as ``None``, a missing key as nothing).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

import markupsafe
from markupsafe import Markup

try:
    from markupsafe import _escape_inner  # markupsafe ≥ 3: text in, escaped text out
except ImportError:  # pragma: no cover - older markupsafe
    def _escape_inner(s: str, /) -> str:
        return str(markupsafe.escape(s))

_MISSING = object()


def escape_text(value: Any) -> str:
    """``str(markupsafe.escape(value))`` without making a :class:`~markupsafe.Markup` first (its
    ``__new__`` is Python: 6 % of the server's CPU under load, py-spy).  The templates write
    ``{{ value }}`` through it too (:class:`oncosurg.web.deps._CodeGenerator`): a template's output
    is only ever joined, then made Markup whole."""
    if type(value) is str:
        return _escape_inner(value)
    if hasattr(value, "__html__"):
        return str(value.__html__())
    return _escape_inner(str(value))


def _text(row: Mapping[str, Any], key: str) -> str:
    """``{{ row.key }}``: escaped; a missing key renders empty, ``None`` as ``None`` (as in Jinja)."""
    value = row.get(key, _MISSING)
    return "" if value is _MISSING else escape_text(value)


def _options(choices: Iterable[Any], value: Any) -> str:
    out = []
    for choice in choices:
        shown = escape_text(choice)
        selected = " selected" if value is not _MISSING and value == choice else ""
        out += ["<option value=\"", shown, "\"", selected, ">", shown, "</option>"]
    return "".join(out)


_cached_options = functools.lru_cache(maxsize=4096)(_options)


def _choices(choices: Iterable[Any], value: Any) -> str:
    """A select's options, the chosen one marked; the same few enums are drawn on every page."""
    if isinstance(choices, tuple):
        try:
            return _cached_options(choices, value)
        except TypeError:  # an unhashable value
            pass
    return _options(choices, value)


def field(row: Mapping[str, Any], readonly: bool = False) -> Markup:
    """The HTML of one form field (``row``: :func:`oncosurg.web.services.forms.form_rows`' rows)."""
    name = _text(row, "name")
    fid = escape_text(row.get("id") or ("f-" + ("" if row.get("name", _MISSING) is _MISSING else str(row["name"]))))
    errors = row.get("errors") or ()
    value = row.get("value", _MISSING)
    autofocus = " autofocus" if row.get("autofocus") else ""
    out = ["\n<div class=\"field", " has-error" if errors else "", "\">\n  <label for=\"", fid, "\">",
           _text(row, "label"), " <abbr title=\"required\">*</abbr>" if row.get("required") else "", "</label>\n  "]
    if readonly:
        shown = value if value is not _MISSING and value else "—"
        out += ["\n    <span class=\"value\" id=\"", fid, "\">", escape_text(shown), "</span>\n  "]
    else:
        widget = row.get("widget")
        text = _text(row, "value")
        if widget == "select":
            out += ["\n    <select id=\"", fid, "\" name=\"", name, "\"", autofocus, ">\n      <option value=\"\"",
                    "" if value is not _MISSING and value else " selected", ">—</option>\n      "]
            out += [_choices(row.get("choices") or (), value), "\n    </select>\n  "]
        elif widget == "textarea":
            out += ["\n    <textarea id=\"", fid, "\" name=\"", name, "\" rows=\"2\"", autofocus, ">", text,
                    "</textarea>\n  "]
        elif widget == "date":
            out += ["\n    <input id=\"", fid, "\" type=\"date\" name=\"", name, "\" value=\"", text, "\"", autofocus,
                    ">\n  "]
        elif widget == "number":
            out += ["\n    <input id=\"", fid, "\" type=\"text\" inputmode=\"decimal\" name=\"", name, "\" value=\"",
                    text, "\"", autofocus, ">\n  "]
        else:
            out += ["\n    <input id=\"", fid, "\" type=\"text\" name=\"", name, "\" value=\"", text, "\"", autofocus,
                    ">\n  "]
    out += ["\n  <small class=\"help\">", _text(row, "help"), "</small>\n  "]
    for e in errors:
        out += ["<p class=\"error\" data-field=\"", name, "\" data-code=\"", _text(e, "code"), "\">",
                _text(e, "message"), " — " + _text(e, "hint") if e.get("hint") else "",
                " <code>" + _text(e, "code") + "</code>" if e.get("code") else "", "</p>"]
    out.append("\n</div>")
    return Markup("".join(out))


def fields(rows: Iterable[Mapping[str, Any]] | None, readonly: bool = False) -> Markup:
    """``{% for row in rows %}{{ field(row) }}{% endfor %}`` in one call (a template loop costs a
    context per row): the fields of one form."""
    return Markup("".join([field(row, readonly) for row in rows or ()]))
