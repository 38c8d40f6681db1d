# ruff: noqa: E501 - the original macro is kept verbatim, long lines included
"""The form field drawn in Python (``oncosurg.web.field_html``) is the Jinja macro it replaced,
character for character, for every widget, read-only values, errors, missing keys and markup."""

from __future__ import annotations

import functools
import itertools
from typing import Any

import jinja2
import pytest

from oncosurg.web.field_html import field

#: The macro of ``_form.html`` before it became a function (session 20), verbatim.
MACRO = """{% macro field(row, readonly=False) -%}
{% set fid = row.id or ('f-' ~ row.name) %}
<div class="field{% if row.errors %} has-error{% endif %}">
  <label for="{{ fid }}">{{ row.label }}{% if row.required %} <abbr title="required">*</abbr>{% endif %}</label>
  {% if readonly %}
    <span class="value" id="{{ fid }}">{{ row.value or '—' }}</span>
  {% elif row.widget == 'select' %}
    <select id="{{ fid }}" name="{{ row.name }}"{% if row.autofocus %} autofocus{% endif %}>
      <option value=""{% if not row.value %} selected{% endif %}>—</option>
      {% for c in row.choices %}<option value="{{ c }}"{% if row.value == c %} selected{% endif %}>{{ c }}</option>{% endfor %}
    </select>
  {% elif row.widget == 'textarea' %}
    <textarea id="{{ fid }}" name="{{ row.name }}" rows="2"{% if row.autofocus %} autofocus{% endif %}>{{ row.value }}</textarea>
  {% elif row.widget == 'date' %}
    <input id="{{ fid }}" type="date" name="{{ row.name }}" value="{{ row.value }}"{% if row.autofocus %} autofocus{% endif %}>
  {% elif row.widget == 'number' %}
    <input id="{{ fid }}" type="text" inputmode="decimal" name="{{ row.name }}" value="{{ row.value }}"{% if row.autofocus %} autofocus{% endif %}>
  {% else %}
    <input id="{{ fid }}" type="text" name="{{ row.name }}" value="{{ row.value }}"{% if row.autofocus %} autofocus{% endif %}>
  {% endif %}
  <small class="help">{{ row.help }}</small>
  {% for e in row.errors %}<p class="error" data-field="{{ row.name }}" data-code="{{ e.code }}">{{ e.message }}{% if e.hint %} — {{ e.hint }}{% endif %}{% if e.code %} <code>{{ e.code }}</code>{% endif %}</p>{% endfor %}
</div>
{%- endmacro %}{{ field(row, readonly=readonly) }}"""

REFERENCE = jinja2.Environment(autoescape=True).from_string(MACRO)

ERRORS: list[list[dict[str, Any]]] = [
    [],
    [{"code": "V301", "message": "must be a date", "hint": "write YYYY-MM-DD", "column": "x"}],
    [{"message": "<b>bad</b> & worse"}, {"code": "", "message": "m", "hint": None}, {"code": "E1", "message": None}],
]
VALUES: list[Any] = ["", "yes", "no", "2024-06-03", "12.5", None, "<script>alert('x')</script> & \"q\"", 0, 7]


def _rows() -> list[dict[str, Any]]:
    rows = []
    for widget, value, errors, extra in itertools.product(
            ("select", "textarea", "date", "number", "text", None), VALUES, ERRORS,
            ({}, {"required": True, "autofocus": True}, {"id": "custom-<id>"})):
        rows.append({"name": "steatosis_pct", "label": "steatosis <pct>", "widget": widget,
                     "choices": ("yes", "no", "a&b", 7), "value": value, "help": "a number (%)",
                     "errors": errors, **extra})
    rows.append({"name": "bare"})  # every other key missing
    rows.append({"label": "no name", "help": None, "value": "v", "widget": "select"})
    return rows


@pytest.mark.parametrize("readonly", [False, True])
def test_the_field_function_draws_what_the_macro_drew(readonly: bool) -> None:
    for row in _rows():
        assert str(field(row, readonly=readonly)) == REFERENCE.render(row=row, readonly=readonly), row


def test_templates_read_dict_keys_first_and_resolve_every_name_as_jinja_does() -> None:
    """The templates' environment reads ``d.name`` from a dict's keys without trying an attribute
    first (an exception per lookup), and resolves every name as stock Jinja does: a dict's methods
    (``d.items()``, ``d.values`` even with a key ``values``), missing keys (undefined, so ``default``
    applies), objects' attributes, and objects that are both."""
    import jinja2

    from oncosurg.web.deps import TEMPLATES

    class Both(dict):  # a dict subclass with an attribute: still attribute first
        label = "attribute"

    class Row:
        name = "object"

        def __getitem__(self, key: str) -> str:
            return f"item {key}"

    source = ("{{ d.a }}|{{ d.values is callable }}|{{ d.missing | default('none') }}|{{ d.items() | list }}|"
              "{{ d['values'] }}|{{ o.name }}|{{ o.other }}|{{ b.label }}|{{ b.get('label') }}|{{ d.keys() | list }}|"
              "{{ d.nested.x }}|{{ d.__class__.__name__ }}|{{ (d.missing is defined) }}")
    values = {"d": {"a": 1, "values": "a key named values", "nested": {"x": "<b>"}}, "o": Row(),
              "b": Both(label="key")}
    ours = TEMPLATES.env.from_string(source).render(values)
    stock = jinja2.Environment(autoescape=True).from_string(source).render(values)
    assert ours == stock
    assert ours.startswith("1|True|none|") and "item other" in ours and "attribute|key" in ours and "&lt;b&gt;" in ours
    assert type(TEMPLATES.env).getattr is not jinja2.Environment.getattr


def test_templates_escape_every_kind_of_value_as_stock_jinja() -> None:
    """``{{ … }}`` in the app's templates is escaped to text without a Markup object per value: the
    output equals stock Jinja's, for text with every special character, Markup, numbers, ``None``,
    objects with ``__html__``, undefined names, macros, blocks set and called, filters, ``safe`` and
    ``autoescape`` switched off and on again; every template of the app compiles to it."""
    import jinja2
    from markupsafe import Markup

    from oncosurg.web.deps import TEMPLATES

    class Html:
        def __html__(self) -> str:
            return "<i>html</i>"

    class Plain:
        def __str__(self) -> str:
            return "a<b & 'c' \"d\""

    source = """{% macro m(x) %}<b>{{ x }}</b>{{ caller() if caller else '' }}{% endmacro -%}
{{ s }}|{{ mk }}|{{ n }}|{{ f }}|{{ none }}|{{ h }}|{{ p }}|{{ missing }}|{{ s ~ mk }}|{{ [s, mk] | join(', ') }}
{{ m(s) }}|{% call m(mk) %}{{ s }}{% endcall %}|{% set block %}{{ s }}<u>{% endset %}{{ block }}|{{ block | length }}
{{ s | safe }}|{{ s | e }}|{{ s | upper }}|{{ '%s=%d' | format(s, n) }}|{{ d.key }}|{{ d['k2'] }}|{{ s if n else mk }}
{% autoescape false %}{{ s }}|{{ mk }}{% autoescape true %}{{ s }}{% endautoescape %}{% endautoescape %}
{% for c in s %}{{ c }}{% endfor %}|{{ s | replace('&', mk) }}|{{ s | truncate(5) }}|{{ (s ~ '') | striptags }}"""
    values = {"s": "<script>'x' & \"y\"</script>", "mk": Markup("<em>safe</em>"), "n": 3, "f": 0.1 + 0.2,
              "none": None, "h": Html(), "p": Plain(), "d": {"key": "<k>", "k2": Markup("&amp;")}}
    ours = TEMPLATES.env.from_string(source).render(values)
    stock = jinja2.Environment(autoescape=True).from_string(source).render(values)
    assert ours == stock
    assert "&lt;script&gt;&#39;x&#39; &amp; &#34;y&#34;&lt;/script&gt;" in ours and "<em>safe</em>" in ours
    assert "<i>html</i>" in ours and "a&lt;b &amp; &#39;c&#39; &#34;d&#34;" in ours
    for name in TEMPLATES.env.list_templates(extensions=["html"]):
        compiled = TEMPLATES.env.compile(TEMPLATES.env.loader.get_source(TEMPLATES.env, name)[0], raw=True)
        assert " escape(" not in compiled and "(escape(" not in compiled, name
    assert "environment.escape_output(" in TEMPLATES.env.compile(source, raw=True)


#: ``_form.html``'s macros and ``patient.html``'s episode-form macros before they became functions
#: (session 26), verbatim; ``fields`` is the function proven equal to the field macro above.
FORM_MACROS = """{% macro summary(message, items) -%}
{% if message %}<div class="error general summary" role="alert" id="error-summary"><p>{{ message }}</p>
{% if items %}<ul>{% for e in items %}<li>{% if e.href %}<a href="{{ e.href }}">{% endif %}{% if e.column %}<strong>{{ e.column }}</strong>: {% endif %}{{ e.message }}{% if e.href %}</a>{% endif %}</li>{% endfor %}</ul>{% endif %}</div>{% endif %}
{%- endmacro %}

{% macro general(errors) -%}
{% for e in errors %}<p class="error general" data-field="{{ e.column }}" data-code="{{ e.code }}">{% if e.column %}<strong>{{ e.column }}</strong>: {% endif %}{{ e.message }}{% if e.hint %} — {{ e.hint }}{% endif %}{% if e.code %} <code>{{ e.code }}</code>{% endif %}</p>{% endfor %}
{%- endmacro %}

{% macro reason(locked, errors) -%}
<div class="field reason{% if errors %} has-error{% endif %}">
  <label>reason{% if locked %} <abbr title="required: the record is older than the lock period">*</abbr>{% endif %}</label>
  <input type="text" name="reason" maxlength="1000" placeholder="{% if locked %}required: why does this change?{% else %}optional{% endif %}">
  {% for e in errors %}<p class="error" data-field="reason" data-code="{{ e.code }}">{{ e.message }}</p>{% endfor %}
</div>
{%- endmacro %}
{% set general_errors = general %}
{% macro edit_forms(item, table, noun, can_write) -%}
{% if can_write %}
<form method="post" action="/patients/{{ pk }}/episodes/{{ table }}/{{ item.id }}" class="episode edit">
  <input type="hidden" name="csrf_token" value="{{ csrf }}">
  <input type="hidden" name="version" value="{{ item.version }}">
  <input type="hidden" name="patient_version" value="{{ version }}">
  {{ general_errors(item.form.general) }}
  <div class="grid">{{ fields(item.form.rows) }}</div>
  {{ reason(locked, item.form.reason_errors) }}
  <button type="submit">Save {{ noun }}</button>
</form>
<form method="post" action="/patients/{{ pk }}/episodes/{{ table }}/{{ item.id }}/delete" class="episode delete">
  <input type="hidden" name="csrf_token" value="{{ csrf }}">
  <input type="hidden" name="version" value="{{ item.version }}">
  <input type="hidden" name="patient_version" value="{{ version }}">
  {% if locked %}<input type="text" name="reason" maxlength="1000" placeholder="reason" required aria-label="reason">{% endif %}
  <button type="submit" class="small" data-confirm="Delete this {{ noun }}{% if table == 'liver_procedure' %} with its complications and pathology{% endif %}?">Delete {{ noun }}</button>
</form>
{% else %}
<div class="grid">{{ fields(item.form.rows, readonly=True) }}</div>
{% endif %}
{%- endmacro %}

{% macro add_form(form, table, noun, hidden={}) -%}
<details class="add-episode"{% if form.open %} open{% endif %}><summary>Add {{ noun }}</summary>
<form method="post" action="/patients/{{ pk }}/episodes/{{ table }}" class="add episode" id="add-{{ table }}{% for k, v in hidden.items() %}-{{ v }}{% endfor %}">
  <input type="hidden" name="csrf_token" value="{{ csrf }}">
  {% for k, v in hidden.items() %}<input type="hidden" name="{{ k }}" value="{{ v }}">{% endfor %}
  {{ general_errors(form.general) }}
  <div class="grid">{{ form.html or fields(form.rows) }}</div>
  {% if table in ('complication', 'pathology') %}{{ reason(locked, form.reason_errors) }}{% endif %}
  <button type="submit">Add {{ noun }}</button>
</form>
</details>
{%- endmacro %}"""

FORM_ERRORS: list[list[dict[str, Any]]] = [
    *ERRORS,
    [{"column": "start_date", "code": "V101", "message": "after <today>", "hint": "check & fix", "href": "#f-x"},
     {"column": None, "message": "no column", "href": None}, {"href": "#a\"b", "message": "linked"}],
]


def _stock(macro: str, *args: Any, **page: Any) -> str:
    """``macro`` of :data:`FORM_MACROS` called with ``args``, the page's variables being ``page``."""
    return str(getattr(_form_macros().make_module(vars=page), macro)(*args))


@functools.cache
def _form_macros() -> jinja2.Template:
    from oncosurg.web.field_html import fields

    env = jinja2.Environment(autoescape=True)
    env.globals["fields"] = fields
    return env.from_string(FORM_MACROS)


def test_the_form_functions_draw_what_the_macros_drew() -> None:
    """Error summary, general errors, the reason field and the episode forms (edit and delete,
    read-only, add with and without hidden fields, a pre-drawn blank form) as the verbatim macros
    drew them: errors with and without column, hint, code and link, locked or not, escaped values."""
    from markupsafe import Markup

    from oncosurg.web.field_html import add_form, edit_forms, error_summary, fields, general_errors, reason_field

    rows = [r for r in _rows() if r.get("name")][:40:7]
    for errors in FORM_ERRORS:
        for message in ("", None, "Not saved: <2> problems", 0):
            assert str(error_summary(message, errors)) == _stock("summary", message, errors)
        assert str(general_errors(errors)) == _stock("general", errors)
        for locked in (True, False, None):
            assert str(reason_field(locked, errors)) == _stock("reason", locked, errors)
    page = {"pk": 12, "csrf": "tok<&>", "version": 7}
    for errors, locked, can_write in itertools.product(FORM_ERRORS, (True, False), (True, False)):
        form = {"rows": rows, "general": errors, "reason_errors": errors[:1], "open": bool(errors)}
        for table, noun in (("liver_procedure", "procedure"), ("complication", "complication"),
                            ("mdt_review", "MDT <review>"), ("pathology", "pathology report")):
            item = {"id": 31, "version": 2, "form": form, "anchor": "x"}
            ours = edit_forms(item, table, noun, can_write, locked=locked, **page)
            assert str(ours) == _stock("edit_forms", item, table, noun, can_write, locked=locked,
                                       **page), (table, locked, can_write)
            for hidden in ({}, {"procedure_no": 2}, {"a<b": "c&d", "procedure_no": 3}):
                for blank in (None, Markup("<div>drawn once</div>")):
                    add = form | ({"html": blank} if blank is not None else {})
                    ours = add_form(add, table, noun, hidden, locked=locked, pk=page["pk"], csrf=page["csrf"])
                    assert str(ours) == _stock("add_form", add, table, noun, hidden, locked=locked,
                                               **page), (table, hidden, blank)
    assert "has-error" in str(reason_field(True, FORM_ERRORS[1])) and "&lt;today&gt;" in str(error_summary("m", FORM_ERRORS[3]))
    assert 'placeholder="reason" required' in str(edit_forms({"id": 1, "form": {}}, "contact", "contact", True,
                                                           pk=1, csrf="c", version=1, locked=True))
    assert fields(None) == ""
