"""Forms as HTML: one field (the label, the input for its kind — select, date, number, text, textarea —
or its read-only value, the type's help and the field's errors), a form's general errors and error
summary, the reason field, and a patient page's episode forms (edit and delete, add).

These were Jinja macros (``_form.html``'s, and ``edit_forms``/``add_form`` of ``patient.html``).  A
patient page draws a few hundred fields and a few dozen forms, and each macro call builds a new
template context: the field macro took three quarters of the page's rendering (py-spy, web
benchmark), the form macros most of what remained (cProfile: 9,417 macro calls for 200 pages).  The
functions write the same HTML, character for character (tests render the verbatim macros with stock
Jinja and compare), with every value escaped as Jinja's autoescape does (``None`` as ``None``, a
missing key as nothing).
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


def _column_and_message(e: Mapping[str, Any]) -> list[str]:
    return ["<strong>" + _text(e, "column") + "</strong>: " if e.get("column") else "", _text(e, "message")]


def error_summary(message: Any, items: Iterable[Mapping[str, Any]] | None) -> Markup:
    """The summary at the top of a refused form: ``message``, then each error linked to its field."""
    if not message:
        return Markup("")
    out = ["<div class=\"error general summary\" role=\"alert\" id=\"error-summary\"><p>", escape_text(message),
           "</p>\n"]
    if items:
        out.append("<ul>")
        for e in items:
            href = e.get("href")
            out += ["<li>", "<a href=\"" + _text(e, "href") + "\">" if href else "", *_column_and_message(e),
                    "</a>" if href else "", "</li>"]
        out.append("</ul>")
    out.append("</div>")
    return Markup("".join(out))


def general_errors(errors: Iterable[Mapping[str, Any]] | None) -> Markup:
    """A form's errors that belong to no field of it (their column, message, hint and code)."""
    out: list[str] = []
    for e in errors or ():
        out += ["<p class=\"error general\" data-field=\"", _text(e, "column"), "\" data-code=\"", _text(e, "code"),
                "\">", *_column_and_message(e), " — " + _text(e, "hint") if e.get("hint") else "",
                " <code>" + _text(e, "code") + "</code>" if e.get("code") else "", "</p>"]
    return Markup("".join(out))


def reason_field(locked: Any, errors: Iterable[Mapping[str, Any]] | None) -> Markup:
    """The reason of a change: required (``locked``) once the record is older than the lock period."""
    out = ["<div class=\"field reason", " has-error" if errors else "", "\">\n  <label>reason",
           " <abbr title=\"required: the record is older than the lock period\">*</abbr>" if locked else "",
           "</label>\n  <input type=\"text\" name=\"reason\" maxlength=\"1000\" placeholder=\"",
           "required: why does this change?" if locked else "optional", "\">\n  "]
    for e in errors or ():
        out += ["<p class=\"error\" data-field=\"reason\" data-code=\"", _text(e, "code"), "\">", _text(e, "message"),
                "</p>"]
    out.append("\n</div>")
    return Markup("".join(out))


def _hidden(name: str, value: str) -> str:
    return "<input type=\"hidden\" name=\"" + name + "\" value=\"" + value + "\">"


def edit_forms(item: Mapping[str, Any], table: Any, noun: Any, can_write: Any, *, pk: Any, csrf: Any, version: Any,
               locked: Any) -> Markup:
    """An episode's edit and delete forms on patient ``pk``'s page (``item``: an episode of
    :func:`oncosurg.web.routes.patients.episode_view`, with its ``form``), or its values read-only."""
    form = item.get("form") or {}
    if not can_write:
        return Markup("".join(["\n<div class=\"grid\">", fields(form.get("rows"), readonly=True), "</div>\n"]))
    action = "/patients/" + escape_text(pk) + "/episodes/" + escape_text(table) + "/" + _text(item, "id")
    top = "\n  " + _hidden("csrf_token", escape_text(csrf)) + "\n  " + _hidden("version", _text(item, "version")) + \
        "\n  " + _hidden("patient_version", escape_text(version)) + "\n  "
    shown = escape_text(noun)
    return Markup("".join([
        "\n<form method=\"post\" action=\"", action, "\" class=\"episode edit\">", top,
        general_errors(form.get("general")), "\n  <div class=\"grid\">", fields(form.get("rows")), "</div>\n  ",
        reason_field(locked, form.get("reason_errors")), "\n  <button type=\"submit\">Save ", shown,
        "</button>\n</form>\n<form method=\"post\" action=\"", action, "/delete\" class=\"episode delete\">", top,
        "<input type=\"text\" name=\"reason\" maxlength=\"1000\" placeholder=\"reason\" required aria-label=\"reason\">"
        if locked else "", "\n  <button type=\"submit\" class=\"small\" data-confirm=\"Delete this ", shown,
        " with its complications and pathology" if table == "liver_procedure" else "", "?\">Delete ", shown,
        "</button>\n</form>\n"]))


def add_form(form: Mapping[str, Any], table: Any, noun: Any, hidden: Mapping[str, Any] | None = None, *, pk: Any,
             csrf: Any, locked: Any) -> Markup:
    """The folded form adding a ``table`` episode to patient ``pk`` (``hidden``: more fields it posts,
    e.g. the procedure of a complication)."""
    hidden = hidden or {}
    shown = escape_text(noun)
    html = form.get("html")
    return Markup("".join([
        "<details class=\"add-episode\"", " open" if form.get("open") else "", "><summary>Add ", shown,
        "</summary>\n<form method=\"post\" action=\"/patients/", escape_text(pk), "/episodes/", escape_text(table),
        "\" class=\"add episode\" id=\"add-", escape_text(table), *["-" + escape_text(v) for v in hidden.values()],
        "\">\n  ", _hidden("csrf_token", escape_text(csrf)), "\n  ",
        *[_hidden(escape_text(k), escape_text(v)) for k, v in hidden.items()], "\n  ",
        general_errors(form.get("general")), "\n  <div class=\"grid\">",
        escape_text(html) if html else fields(form.get("rows")), "</div>\n  ",
        reason_field(locked, form.get("reason_errors")) if table in ("complication", "pathology") else "",
        "\n  <button type=\"submit\">Add ", shown, "</button>\n</form>\n</details>"]))
