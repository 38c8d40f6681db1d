"""Filter expressions of study protocols: a small, checked language compiled to SQLAlchemy.

Grammar (case-insensitive keywords)::

    expr    := term ("or" term)*
    term    := factor ("and" factor)*
    factor  := "not" factor | compare
    compare := operand [ ("=" | "==" | "!=" | "<>" | "<" | "<=" | ">" | ">=") operand
                       | "is" ["not"] "null"
                       | ["not"] "in" "(" literal ("," literal)* ")"
                       | "between" operand "and" operand ]
    operand := NUMBER | 'string' | "string" | true | false | date "YYYY-MM-DD"
             | $parameter | column | population | "(" expr ")"

Identifiers must name a column of the analysis view or a population of the protocol; types are
checked (an enum compared with a code it does not have is an error, which catches typos such as
``surgery_type = 'hepatectomyy'``).  Expressions are never evaluated with Python ``eval`` and never
pasted into SQL: they become SQLAlchemy constructs with bound parameters.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa


class ExpressionError(ValueError):
    """An expression is malformed or does not type-check. ``position`` is a 0-based offset."""

    def __init__(self, message: str, text: str, position: int | None = None):
        self.text, self.position, self.reason = text, position, message
        where = ""
        if position is not None:
            where = f"\n    {text}\n    {' ' * position}^"
        super().__init__(f"{message} in expression {text!r}{where}")


@dataclass(frozen=True, slots=True)
class ColumnType:
    """Type of an analysis-view column: ``bool``, ``int``, ``float``, ``text`` or ``date``."""

    kind: str
    choices: tuple[str, ...] = ()


# --------------------------------------------------------------------------- AST

@dataclass(frozen=True, slots=True)
class Literal:
    value: Any
    kind: str  # bool int float text date null


@dataclass(frozen=True, slots=True)
class Name:
    name: str
    position: int


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    position: int


@dataclass(frozen=True, slots=True)
class Compare:
    op: str
    left: Any
    right: Any
    position: int


@dataclass(frozen=True, slots=True)
class IsNull:
    operand: Any
    negated: bool


@dataclass(frozen=True, slots=True)
class In:
    operand: Any
    values: tuple[Literal, ...]
    negated: bool
    position: int


@dataclass(frozen=True, slots=True)
class BoolOp:
    op: str  # and | or
    items: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Not:
    operand: Any


Node = Literal | Name | Param | Compare | IsNull | In | BoolOp | Not

# --------------------------------------------------------------------------- parser

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>\d+(?:\.\d+)?)
      | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
      | (?P<op><=|>=|==|!=|<>|=|<|>|\(|\)|,)
      | (?P<param>\$[A-Za-z_][A-Za-z0-9_]*)
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "is", "null", "in", "between", "true", "false", "date"}
MAX_LENGTH = 2000


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str
    text: str
    pos: int


def _tokenize(text: str) -> list[_Tok]:
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"expression longer than {MAX_LENGTH} characters", text[:60] + "…")
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            start = len(text) - len(text[pos:].lstrip())
            raise ExpressionError(f"unexpected character {text[start]!r}", text, start)
        kind = m.lastgroup or ""
        value = m.group(kind)
        start = m.start(kind)
        if kind == "name" and value.lower() in _KEYWORDS:
            kind, value = "kw", value.lower()
        tokens.append(_Tok(kind, value, start))
        pos = m.end()
    tokens.append(_Tok("end", "", len(text)))
    return tokens


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> _Tok:
        return self.tokens[self.i]

    def take(self) -> _Tok:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def accept(self, kind: str, text: str | None = None) -> _Tok | None:
        tok = self.peek()
        if tok.kind == kind and (text is None or tok.text == text):
            return self.take()
        return None

    def expect(self, kind: str, text: str, what: str) -> _Tok:
        tok = self.accept(kind, text)
        if tok is None:
            got = self.peek()
            raise ExpressionError(f"expected {what}, found {got.text or 'end of expression'!r}", self.text, got.pos)
        return tok

    def parse(self) -> Node:
        node = self.expr()
        tok = self.peek()
        if tok.kind != "end":
            raise ExpressionError(f"unexpected {tok.text!r}", self.text, tok.pos)
        return node

    def expr(self) -> Node:
        self.depth += 1
        if self.depth > 50:
            raise ExpressionError("expression nested too deeply", self.text, self.peek().pos)
        items = [self.term()]
        while self.accept("kw", "or"):
            items.append(self.term())
        self.depth -= 1
        return items[0] if len(items) == 1 else BoolOp("or", tuple(items))

    def term(self) -> Node:
        items = [self.factor()]
        while self.accept("kw", "and"):
            items.append(self.factor())
        return items[0] if len(items) == 1 else BoolOp("and", tuple(items))

    def factor(self) -> Node:
        if self.accept("kw", "not"):
            return Not(self.factor())
        return self.compare()

    def compare(self) -> Node:
        left = self.operand()
        tok = self.peek()
        if tok.kind == "op" and tok.text in ("=", "==", "!=", "<>", "<", "<=", ">", ">="):
            self.take()
            op = {"==": "=", "<>": "!="}.get(tok.text, tok.text)
            return Compare(op, left, self.operand(), tok.pos)
        if self.accept("kw", "is"):
            negated = self.accept("kw", "not") is not None
            self.expect("kw", "null", "'null' after 'is'")
            return IsNull(left, negated)
        negated = False
        if tok.kind == "kw" and tok.text == "not" and self.tokens[self.i + 1].text == "in":
            self.take()
            negated = True
        if self.accept("kw", "in"):
            self.expect("op", "(", "'(' after 'in'")
            values = [self.literal()]
            while self.accept("op", ","):
                values.append(self.literal())
            self.expect("op", ")", "')' closing the list")
            return In(left, tuple(values), negated, tok.pos)
        if self.accept("kw", "between"):
            low = self.operand()
            self.expect("kw", "and", "'and' in 'between … and …'")
            high = self.operand()
            return BoolOp("and", (Compare(">=", left, low, tok.pos), Compare("<=", left, high, tok.pos)))
        return left

    def literal(self) -> Literal:
        tok = self.peek()
        node = self.operand()
        if not isinstance(node, Literal):
            raise ExpressionError("expected a literal value in the list", self.text, tok.pos)
        return node

    def operand(self) -> Node:
        tok = self.take()
        if tok.kind == "number":
            return Literal(float(tok.text), "float") if "." in tok.text else Literal(int(tok.text), "int")
        if tok.kind == "string":
            return Literal(_unquote(tok.text), "text")
        if tok.kind == "kw" and tok.text in ("true", "false"):
            return Literal(tok.text == "true", "bool")
        if tok.kind == "kw" and tok.text == "date":
            s = self.take()
            try:
                if s.kind != "string":
                    raise ValueError
                return Literal(dt.date.fromisoformat(_unquote(s.text)), "date")
            except ValueError:
                raise ExpressionError("date needs a quoted ISO date, e.g. date '2004-02-01'", self.text,
                                      s.pos) from None
        if tok.kind == "param":
            return Param(tok.text[1:], tok.pos)
        if tok.kind == "name":
            return Name(tok.text, tok.pos)
        if tok.kind == "op" and tok.text == "(":
            node = self.expr()
            self.expect("op", ")", "')'")
            return node
        raise ExpressionError(f"unexpected {tok.text or 'end of expression'!r}", self.text, tok.pos)


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text[1:-1])


def parse(text: str) -> Node:
    """Parse an expression into its AST (raises :class:`ExpressionError`)."""
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError("empty expression", str(text))
    return _Parser(text).parse()


# --------------------------------------------------------------------------- checking and compiling

@dataclass(frozen=True, slots=True)
class Compiled:
    """A checked expression: its SQL form and the view columns it reads.

    ``inputs`` are the columns whose values the predicate needs; columns only tested with
    ``is null`` / ``is not null`` are not inputs (presence is always known).
    """

    text: str
    sql: sa.ColumnElement[bool]
    inputs: tuple[str, ...]
    columns: tuple[str, ...]


class Compiler:
    """Checks expressions against the view's column types and compiles them to SQL.

    ``columns`` maps column names to SQL expressions of the analysis view, ``types`` to their
    :class:`ColumnType`; ``populations`` resolves population names (themselves expressions);
    ``params`` holds protocol parameters for ``$name``.
    """

    def __init__(self, columns: Mapping[str, sa.ColumnElement[Any]], types: Mapping[str, ColumnType],
                 params: Mapping[str, Any] | None = None,
                 populations: Callable[[str], Compiled | None] | None = None):
        self.columns, self.types = columns, types
        self.params = dict(params or {})
        self.populations = populations or (lambda _name: None)

    def compile(self, text: str) -> Compiled:
        node = parse(text)
        inputs: list[str] = []
        columns: list[str] = []
        sql = self._bool(node, text, inputs, columns)
        return Compiled(text, sql, tuple(dict.fromkeys(inputs)), tuple(dict.fromkeys(columns)))

    # -- boolean positions
    def _bool(self, node: Node, text: str, inputs: list[str], columns: list[str]) -> sa.ColumnElement[bool]:
        if isinstance(node, BoolOp):
            parts = [self._bool(n, text, inputs, columns) for n in node.items]
            return sa.and_(*parts) if node.op == "and" else sa.or_(*parts)
        if isinstance(node, Not):
            return sa.not_(self._bool(node.operand, text, inputs, columns))
        if isinstance(node, IsNull):
            sql, _kind = self._value(node.operand, text, [], columns)
            return sql.is_not(None) if node.negated else sql.is_(None)
        if isinstance(node, In):
            sql, ctype = self._value(node.operand, text, inputs, columns)
            for lit in node.values:
                self._check_pair(ctype, lit, text, node.position)
            values = [lit.value for lit in node.values]
            return sql.not_in(values) if node.negated else sql.in_(values)
        if isinstance(node, Compare):
            left, ltype = self._value(node.left, text, inputs, columns)
            right, rtype = self._value(node.right, text, inputs, columns)
            self._check_types(ltype, rtype, node, text)
            return {"=": left.__eq__, "!=": left.__ne__, "<": left.__lt__, "<=": left.__le__,
                    ">": left.__gt__, ">=": left.__ge__}[node.op](right)
        if isinstance(node, Name):
            # A view column wins over a population of the same name (population ``operated = "operated"``).
            population = None if node.name in self.columns else self.populations(node.name)
            if population is not None:
                inputs.extend(population.inputs)
                columns.extend(population.columns)
                return population.sql
            sql, ctype = self._value(node, text, inputs, columns)
            if ctype.kind != "bool":
                raise ExpressionError(f"column '{node.name}' is {ctype.kind}, not yes/no: compare it with a value",
                                      text, node.position)
            return sql.is_(True)
        if isinstance(node, Literal) and node.kind == "bool":
            return sa.true() if node.value else sa.false()
        raise ExpressionError("this is a value, not a condition", text, getattr(node, "position", None))

    # -- value positions
    def _value(self, node: Node, text: str, inputs: list[str], columns: list[str]
               ) -> tuple[sa.ColumnElement[Any], ColumnType]:
        if isinstance(node, Name):
            if node.name not in self.columns:
                if self.populations(node.name) is not None:
                    raise ExpressionError(f"population '{node.name}' is a condition, not a value", text,
                                          node.position)
                from difflib import get_close_matches

                guess = get_close_matches(node.name, list(self.columns), n=1)
                hint = f"; did you mean '{guess[0]}'?" if guess else ""
                raise ExpressionError(f"unknown column '{node.name}'{hint}", text, node.position)
            inputs.append(node.name)
            columns.append(node.name)
            return self.columns[node.name], self.types[node.name]
        if isinstance(node, Param):
            if node.name not in self.params:
                raise ExpressionError(f"unknown parameter '${node.name}' (define it under [parameters])", text,
                                      node.position)
            value = self.params[node.name]
            kind = _literal_kind(value)
            return sa.literal(value), ColumnType(kind)
        if isinstance(node, Literal):
            return sa.literal(node.value), ColumnType(node.kind)
        raise ExpressionError("a condition cannot be used as a value here", text, None)

    def _check_pair(self, ctype: ColumnType, lit: Literal, text: str, position: int) -> None:
        self._check_types(ctype, ColumnType(lit.kind), Compare("=", None, lit, position), text)

    def _check_types(self, a: ColumnType, b: ColumnType, node: Compare, text: str) -> None:
        numeric = {"int", "float"}
        if a.kind in numeric and b.kind in numeric:
            return
        if a.kind != b.kind:
            raise ExpressionError(f"cannot compare {a.kind} with {b.kind}", text, node.position)
        if node.op not in ("=", "!=") and a.kind in ("bool", "text"):
            raise ExpressionError(f"'{node.op}' is not defined for {a.kind} values", text, node.position)
        for ctype, other in ((a, node.right), (b, node.left)):
            if ctype.choices and isinstance(other, Literal) and other.value not in ctype.choices:
                allowed = ", ".join(repr(c) for c in ctype.choices)
                raise ExpressionError(f"{other.value!r} is not a possible value (allowed: {allowed})", text,
                                      node.position)


def _literal_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, dt.date):
        return "date"
    return "text"
