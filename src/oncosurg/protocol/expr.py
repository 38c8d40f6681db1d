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
             | has "(" column "," literal ("," literal)* ")"            -- a ';'-list holds one of the codes
             | size "(" column ")"                                      -- how many codes a ';'-list holds
             | days "(" operand "," operand ")" | months "(" operand "," operand ")"   -- from the 1st date to the 2nd
             | exists "(" query ")" | count "(" query ")"
             | (first | last | min | max) "(" TABLE "." COLUMN ["where" expr] ")"
    query   := TABLE ["where" expr]

Identifiers name a column of the analysis view or a population of the protocol; inside a query,
the episode table's columns come first (``exists(liver_procedure where procedure_date < index_date)``:
``procedure_date`` is the procedure's, ``index_date`` the patient's).  A query reads the patient's
own episodes only (it is correlated on the patient).  Types are checked (an enum compared with a
code it does not have is an error, which catches typos such as ``surgery_type = 'hepatectomyy'``).
Expressions are never evaluated with Python ``eval`` and never pasted into SQL: they become
SQLAlchemy constructs with bound parameters.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement

from oncosurg.schema import DAYS_PER_MONTH


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
    """Type of a column: ``bool``, ``int``, ``float``, ``text``, ``date`` or ``codes`` (a ``;``-list)."""

    kind: str
    choices: tuple[str, ...] = ()


class days_between(FunctionElement):
    """Whole days from the first date to the second (``second - first``)."""

    type = sa.Integer()
    inherit_cache = True
    name = "days_between"


@compiles(days_between, "sqlite")
def _days_sqlite(element: days_between, compiler: Any, **kw: Any) -> str:
    a, b = list(element.clauses)
    return (f"CAST(ROUND(julianday({compiler.process(b, **kw)}) - julianday({compiler.process(a, **kw)})) "
            "AS INTEGER)")


@compiles(days_between)
def _days_default(element: days_between, compiler: Any, **kw: Any) -> str:
    a, b = list(element.clauses)
    return f"({compiler.process(b, **kw)} - {compiler.process(a, **kw)})"


def has_code(column: sa.ColumnElement[Any], code: str) -> sa.ColumnElement[bool]:
    """Whether a canonical ``;``-list column holds ``code`` (bound parameter; codes contain no ``;``)."""
    return (sa.literal(";") + sa.func.coalesce(column, "") + sa.literal(";")).like(sa.literal(f"%;{code};%"))


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


@dataclass(frozen=True, slots=True)
class Query:
    """``TABLE[.COLUMN] [where expr]``: the patient's episodes of one table."""

    table: str
    column: str | None
    where: Any
    position: int


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    args: tuple[Any, ...]
    position: int


Node = Literal | Name | Param | Compare | IsNull | In | BoolOp | Not | Query | Call

#: Functions over values, and aggregates over a query (their argument is a query).
VALUE_FUNCTIONS = ("has", "size", "days", "months")
AGGREGATES = ("exists", "count", "first", "last", "min", "max")

# --------------------------------------------------------------------------- parser

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>\d+(?:\.\d+)?)
      | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
      | (?P<op><=|>=|==|!=|<>|=|<|>|\(|\)|,|\.)
      | (?P<param>\$[A-Za-z_][A-Za-z0-9_]*)
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "is", "null", "in", "between", "true", "false", "date", "where"}
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

    def peek(self, ahead: int = 0) -> _Tok:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

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

    def finish(self, node: Node) -> Node:
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
        if tok.kind == "kw" and tok.text == "not" and self.peek(1).text == "in":
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

    def query(self, *, column: bool) -> Query:
        tok = self.take()
        if tok.kind != "name":
            raise ExpressionError(f"expected an episode table name, found {tok.text or 'end of expression'!r}",
                                  self.text, tok.pos)
        col = None
        if column:
            self.expect("op", ".", "'.' and a column after the table (table.column)")
            ctok = self.take()
            if ctok.kind != "name":
                raise ExpressionError("expected a column name after '.'", self.text, ctok.pos)
            col = ctok.text
        elif self.peek().text == ".":
            raise ExpressionError("this function takes a table, not a column (e.g. exists(liver_procedure "
                                  "where ...))", self.text, self.peek().pos)
        where = self.expr() if self.accept("kw", "where") else None
        return Query(tok.text, col, where, tok.pos)

    def call(self, tok: _Tok) -> Node:
        name = tok.text.lower()
        self.expect("op", "(", f"'(' after {name}")
        args: list[Any]
        if name in AGGREGATES:
            args = [self.query(column=name not in ("exists", "count"))]
        else:
            args = [self.expr()]
            while self.accept("op", ","):
                args.append(self.expr())
        self.expect("op", ")", f"')' closing {name}(…)")
        return Call(name, tuple(args), tok.pos)

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
            if self.peek().text == "(":
                if tok.text.lower() not in (*VALUE_FUNCTIONS, *AGGREGATES):
                    known = ", ".join((*VALUE_FUNCTIONS, *AGGREGATES))
                    raise ExpressionError(f"unknown function '{tok.text}' (known: {known})", self.text, tok.pos)
                return self.call(tok)
            return Name(tok.text, tok.pos)
        if tok.kind == "op" and tok.text == "(":
            node = self.expr()
            self.expect("op", ")", "')'")
            return node
        raise ExpressionError(f"unexpected {tok.text or 'end of expression'!r}", self.text, tok.pos)


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text[1:-1])


def _check_text(text: str) -> None:
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError("empty expression", str(text))


def parse(text: str) -> Node:
    """Parse an expression into its AST (raises :class:`ExpressionError`)."""
    _check_text(text)
    parser = _Parser(text)
    return parser.finish(parser.expr())


def parse_query(text: str) -> Query:
    """Parse ``TABLE [where expr]`` (an index, an origin, an event) into a :class:`Query`."""
    _check_text(text)
    parser = _Parser(text)
    node = parser.query(column=False)
    parser.finish(node)
    return node


# --------------------------------------------------------------------------- episode scopes

@dataclass(frozen=True)
class EpisodeScope:
    """One fresh alias of an episode table, as a query sees it.

    ``dates`` names the columns that date an episode (the first is its own date; children add their
    parent's); ``order`` sorts episodes in time (undated first, then by date, then by key).
    """

    table: str
    from_: sa.FromClause
    columns: Mapping[str, sa.ColumnElement[Any]]
    types: Mapping[str, ColumnType]
    patient_pk: sa.ColumnElement[Any]
    id: sa.ColumnElement[Any]
    dates: tuple[str, ...]
    order: tuple[sa.ColumnElement[Any], ...]


class EpisodeSource(Protocol):
    """What the compiler needs to compile queries: fresh scopes, and the patient to correlate on."""

    tables: tuple[str, ...]
    patient_pk: sa.ColumnElement[Any]

    def scope(self, table: str) -> EpisodeScope: ...


# --------------------------------------------------------------------------- checking and compiling

@dataclass(frozen=True, slots=True)
class QueryRead:
    """A query an expression makes; ``baseline`` when it only reads episodes dated up to the index."""

    table: str
    baseline: bool
    text: str


@dataclass(frozen=True, slots=True)
class Compiled:
    """A checked expression: its SQL form and what it reads.

    ``inputs`` are the columns whose values the predicate needs; columns only tested with
    ``is null`` / ``is not null`` are not inputs (presence is always known), nor are columns read
    inside a query.  ``columns`` are every view column read, ``queries`` every episode query.
    """

    text: str
    sql: sa.ColumnElement[Any]
    inputs: tuple[str, ...]
    columns: tuple[str, ...]
    queries: tuple[QueryRead, ...] = ()
    type: ColumnType = field(default_factory=lambda: ColumnType("bool"))


@dataclass(slots=True)
class _Reads:
    inputs: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    queries: list[QueryRead] = field(default_factory=list)


class Compiler:
    """Checks expressions against column types and compiles them to SQL.

    ``columns`` maps column names to SQL expressions of the analysis view, ``types`` to their
    :class:`ColumnType`; ``populations`` resolves population names (themselves expressions);
    ``params`` holds protocol parameters for ``$name``; ``episodes`` compiles queries over the
    patient's episode tables (none: queries are refused).
    """

    def __init__(self, columns: Mapping[str, sa.ColumnElement[Any]], types: Mapping[str, ColumnType],
                 params: Mapping[str, Any] | None = None,
                 populations: Callable[[str], Compiled | None] | None = None,
                 episodes: EpisodeSource | None = None):
        self.columns, self.types = columns, types
        self.params = dict(params or {})
        self.populations = populations or (lambda _name: None)
        self.episodes = episodes

    def compile(self, text: str) -> Compiled:
        """A condition (yes/no)."""
        node = parse(text)
        reads = _Reads()
        sql = self._bool(node, text, reads)
        return self._compiled(text, sql, reads, ColumnType("bool"))

    def compile_value(self, text: str) -> Compiled:
        """A value of any type (a derived column, an origin date); conditions are yes/no values."""
        node = parse(text)
        reads = _Reads()
        if self._is_condition(node):
            sql, ctype = self._bool(node, text, reads), ColumnType("bool")
        else:
            sql, ctype = self._value(node, text, reads)
        return self._compiled(text, sql, reads, ctype)

    def compile_query(self, text: str, *, scope: EpisodeScope | None = None,
                      extra: Mapping[str, tuple[Any, ColumnType]] | None = None) -> tuple[EpisodeScope, Compiled]:
        """``TABLE [where expr]``: a fresh scope of the table (or ``scope``) and its condition.  ``extra``
        adds names visible inside the condition (e.g. ``index_date`` as the candidate's own date)."""
        node = parse_query(text)
        if scope is None:
            scope = self._scope(node, text)
        elif scope.table != node.table:  # pragma: no cover - callers pass the query's own table
            raise ExpressionError(f"expected table {scope.table}", text, node.position)
        reads = _Reads()
        inner = self._inner(scope, extra)
        cond = sa.true() if node.where is None else inner._bool(node.where, text, reads)
        return scope, self._compiled(text, cond, reads, ColumnType("bool"))

    @staticmethod
    def _compiled(text: str, sql: Any, reads: _Reads, ctype: ColumnType) -> Compiled:
        return Compiled(text, sql, tuple(dict.fromkeys(reads.inputs)), tuple(dict.fromkeys(reads.columns)),
                        tuple(dict.fromkeys(reads.queries)), ctype)

    def _is_condition(self, node: Node) -> bool:
        if isinstance(node, BoolOp | Not | IsNull | In | Compare):
            return True
        if isinstance(node, Call):
            return node.name in ("has", "exists")
        if isinstance(node, Name):
            return node.name not in self.columns and self.populations(node.name) is not None
        return False

    # -- boolean positions
    def _bool(self, node: Node, text: str, reads: _Reads) -> sa.ColumnElement[bool]:
        if isinstance(node, BoolOp):
            parts = [self._bool(n, text, reads) for n in node.items]
            return sa.and_(*parts) if node.op == "and" else sa.or_(*parts)
        if isinstance(node, Not):
            return sa.not_(self._bool(node.operand, text, reads))
        if isinstance(node, IsNull):
            presence = _Reads(columns=reads.columns, queries=reads.queries)  # not an input
            sql, _kind = self._value(node.operand, text, presence)
            return sql.is_not(None) if node.negated else sql.is_(None)
        if isinstance(node, In):
            sql, ctype = self._value(node.operand, text, reads)
            for lit in node.values:
                self._check_pair(ctype, lit, text, node.position)
            values = [lit.value for lit in node.values]
            return sql.not_in(values) if node.negated else sql.in_(values)
        if isinstance(node, Compare):
            left, ltype = self._value(node.left, text, reads)
            right, rtype = self._value(node.right, text, reads)
            self._check_types(ltype, rtype, node, text)
            return {"=": left.__eq__, "!=": left.__ne__, "<": left.__lt__, "<=": left.__le__,
                    ">": left.__gt__, ">=": left.__ge__}[node.op](right)
        if isinstance(node, Name):
            # A view column wins over a population of the same name (population ``operated = "operated"``).
            population = None if node.name in self.columns else self.populations(node.name)
            if population is not None:
                reads.inputs.extend(population.inputs)
                reads.columns.extend(population.columns)
                reads.queries.extend(population.queries)
                return population.sql
            sql, ctype = self._value(node, text, reads)
            if ctype.kind != "bool":
                raise ExpressionError(f"column '{node.name}' is {ctype.kind}, not yes/no: compare it with a value",
                                      text, node.position)
            return sql.is_(True)
        if isinstance(node, Call) and node.name in ("has", "exists"):
            sql, _ = self._call(node, text, reads)
            return sql
        if isinstance(node, Call) and node.name in ("first", "last"):
            sql, ctype = self._call(node, text, reads)
            if ctype.kind != "bool":
                raise ExpressionError(f"{node.name}(…) is {ctype.kind}, not yes/no: compare it with a value", text,
                                      node.position)
            return sql.is_(True)
        if isinstance(node, Literal) and node.kind == "bool":
            return sa.true() if node.value else sa.false()
        raise ExpressionError("this is a value, not a condition", text, getattr(node, "position", None))

    # -- value positions
    def _value(self, node: Node, text: str, reads: _Reads) -> tuple[sa.ColumnElement[Any], ColumnType]:
        if isinstance(node, Name):
            if node.name not in self.columns:
                if self.populations(node.name) is not None:
                    raise ExpressionError(f"population '{node.name}' is a condition, not a value", text,
                                          node.position)
                from difflib import get_close_matches

                guess = get_close_matches(node.name, list(self.columns), n=1)
                hint = f"; did you mean '{guess[0]}'?" if guess else ""
                if self.episodes is not None and node.name in self.episodes.tables:
                    hint = f"; '{node.name}' is an episode table: use exists({node.name} where …) or " \
                           f"first({node.name}.column where …)"
                raise ExpressionError(f"unknown column '{node.name}'{hint}", text, node.position)
            reads.inputs.append(node.name)
            reads.columns.append(node.name)
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
        if isinstance(node, Call):
            return self._call(node, text, reads)
        raise ExpressionError("a condition cannot be used as a value here", text, getattr(node, "position", None))

    # -- functions and queries
    def _call(self, node: Call, text: str, reads: _Reads) -> tuple[sa.ColumnElement[Any], ColumnType]:
        if node.name in AGGREGATES:
            return self._aggregate(node, text, reads)
        if node.name == "has":
            if len(node.args) < 2:
                raise ExpressionError("has(column, 'code', …) needs a column and at least one code", text,
                                      node.position)
            sql, ctype = self._value(node.args[0], text, reads)
            if ctype.kind != "codes":
                raise ExpressionError(f"has(…) needs a list column (such as agents or sites), not {ctype.kind}",
                                      text, node.position)
            codes = []
            for arg in node.args[1:]:
                if not isinstance(arg, Literal) or arg.kind != "text":
                    raise ExpressionError("has(…) takes quoted codes after the column", text, node.position)
                if ctype.choices and arg.value not in ctype.choices:
                    allowed = ", ".join(repr(c) for c in ctype.choices)
                    raise ExpressionError(f"{arg.value!r} is not a possible code (allowed: {allowed})", text,
                                          node.position)
                codes.append(arg.value)
            return sa.or_(*[has_code(sql, c) for c in codes]), ColumnType("bool")
        if node.name == "size":
            if len(node.args) != 1:
                raise ExpressionError("size(column) takes one list column", text, node.position)
            sql, ctype = self._value(node.args[0], text, reads)
            if ctype.kind != "codes":
                raise ExpressionError(f"size(…) needs a list column (such as resected_segments), not {ctype.kind}",
                                      text, node.position)
            count = sa.func.length(sql) - sa.func.length(sa.func.replace(sql, ";", "")) + 1
            return sa.case((sql.is_(None), sa.null()), (sql == "", 0), else_=count), ColumnType("int")
        # days / months
        if len(node.args) != 2:
            raise ExpressionError(f"{node.name}(from_date, to_date) takes two dates", text, node.position)
        (a, atype), (b, btype) = (self._value(arg, text, reads) for arg in node.args)
        if atype.kind != "date" or btype.kind != "date":
            raise ExpressionError(f"{node.name}(from_date, to_date) takes two dates, not {atype.kind} and "
                                  f"{btype.kind}", text, node.position)
        days = days_between(a, b)
        if node.name == "days":
            return days, ColumnType("int")
        return sa.cast(days, sa.Float()) / sa.literal(DAYS_PER_MONTH, sa.Float()), ColumnType("float")

    def _scope(self, query: Query, text: str) -> EpisodeScope:
        if self.episodes is None:
            raise ExpressionError("episode queries are not available here", text, query.position)
        if query.table not in self.episodes.tables:
            from difflib import get_close_matches

            guess = get_close_matches(query.table, list(self.episodes.tables), n=1)
            hint = f"; did you mean '{guess[0]}'?" if guess else f" (tables: {', '.join(self.episodes.tables)})"
            raise ExpressionError(f"unknown episode table '{query.table}'{hint}", text, query.position)
        return self.episodes.scope(query.table)

    def _inner(self, scope: EpisodeScope, extra: Mapping[str, tuple[Any, ColumnType]] | None = None) -> Compiler:
        columns = {**self.columns, **{k: v for k, (v, _t) in (extra or {}).items()}, **scope.columns}
        types = {**self.types, **{k: t for k, (_v, t) in (extra or {}).items()}, **scope.types}
        return Compiler(columns, types, self.params, self.populations, self.episodes)

    def _aggregate(self, node: Call, text: str, reads: _Reads) -> tuple[sa.ColumnElement[Any], ColumnType]:
        query: Query = node.args[0]
        scope = self._scope(query, text)
        inner = self._inner(scope)
        inner_reads = _Reads()
        cond = sa.true() if query.where is None else inner._bool(query.where, text, inner_reads)
        # outer columns read inside the query are read, but are not inputs of the outer predicate
        reads.columns.extend(c for c in inner_reads.columns if c not in scope.columns)
        reads.queries.extend(inner_reads.queries)
        reads.queries.append(QueryRead(query.table, _bounded_by_index(query.where, scope.dates), text))
        if self.episodes is None:  # pragma: no cover - _scope refused already
            raise AssertionError
        where = sa.and_(scope.patient_pk == self.episodes.patient_pk, cond)
        if node.name == "exists":
            return sa.exists().select_from(scope.from_).where(where), ColumnType("bool")
        if node.name == "count":
            return (sa.select(sa.func.count()).select_from(scope.from_).where(where).scalar_subquery(),
                    ColumnType("int"))
        column = query.column or ""
        if column not in scope.columns:
            from difflib import get_close_matches

            guess = get_close_matches(column, list(scope.columns), n=1)
            hint = f"; did you mean '{guess[0]}'?" if guess else ""
            raise ExpressionError(f"unknown column '{column}' of {query.table}{hint}", text, query.position)
        col, ctype = scope.columns[column], scope.types[column]
        if node.name in ("min", "max"):
            if ctype.kind not in ("int", "float", "date"):
                raise ExpressionError(f"{node.name}(…) needs a number or date column, not {ctype.kind}", text,
                                      node.position)
            agg = sa.func.min(col) if node.name == "min" else sa.func.max(col)
            return sa.select(agg).select_from(scope.from_).where(where).scalar_subquery(), ctype
        order = scope.order if node.name == "first" else tuple(o.desc() for o in scope.order)
        return (sa.select(col).select_from(scope.from_).where(where).order_by(*order).limit(1).scalar_subquery(),
                ctype)

    def _check_pair(self, ctype: ColumnType, lit: Literal, text: str, position: int) -> None:
        self._check_types(ctype, ColumnType(lit.kind), Compare("=", None, lit, position), text)

    def _check_types(self, a: ColumnType, b: ColumnType, node: Compare, text: str) -> None:
        numeric = {"int", "float"}
        if a.kind in numeric and b.kind in numeric:
            return
        kinds = {a.kind, b.kind}
        if kinds == {"codes", "text"}:  # a list compared with its text form: each code must exist
            listed = a if a.kind == "codes" else b
            other = node.right if a.kind == "codes" else node.left
            if node.op not in ("=", "!="):
                raise ExpressionError(f"'{node.op}' is not defined for lists of codes", text, node.position)
            if listed.choices and isinstance(other, Literal):
                for code in str(other.value).split(";"):
                    if code not in listed.choices:
                        allowed = ", ".join(repr(c) for c in listed.choices)
                        raise ExpressionError(f"{code!r} is not a possible code (allowed: {allowed}); to test "
                                              "one code of the list use has(column, 'code')", text, node.position)
            return
        if a.kind != b.kind:
            raise ExpressionError(f"cannot compare {a.kind} with {b.kind}", text, node.position)
        if node.op not in ("=", "!=") and a.kind in ("bool", "text", "codes"):
            raise ExpressionError(f"'{node.op}' is not defined for {a.kind} values", text, node.position)
        for ctype, other in ((a, node.right), (b, node.left)):
            if ctype.choices and isinstance(other, Literal) and other.value not in ctype.choices:
                allowed = ", ".join(repr(c) for c in ctype.choices)
                raise ExpressionError(f"{other.value!r} is not a possible value (allowed: {allowed})", text,
                                      node.position)


def _conjuncts(node: Any) -> list[Any]:
    if isinstance(node, BoolOp) and node.op == "and":
        return [c for item in node.items for c in _conjuncts(item)]
    return [] if node is None else [node]


def _is_name(node: Any, names: tuple[str, ...] | str) -> bool:
    wanted = (names,) if isinstance(names, str) else names
    return isinstance(node, Name) and node.name in wanted


def _days_call(node: Any, first: Any, second: Any) -> bool:
    return (isinstance(node, Call) and node.name == "days" and len(node.args) == 2
            and first(node.args[0]) and second(node.args[1]))


def _bounded_by_index(where: Any, dates: tuple[str, ...]) -> bool:
    """Whether a query's condition keeps only episodes dated on or before ``index_date``.

    Recognised at the top level of the condition (joined by ``and``): ``date < index_date``,
    ``date <= index_date`` (either way round, ``between … and index_date`` included),
    ``days(date, index_date) >= k`` or ``> k`` with k >= 0 (a look-back window).
    """
    def is_date(n: Any) -> bool:
        return _is_name(n, dates)

    def is_index(n: Any) -> bool:
        return _is_name(n, "index_date")

    def non_negative(n: Any) -> bool:
        return isinstance(n, Literal) and n.kind in ("int", "float") and n.value >= 0

    def non_positive(n: Any) -> bool:
        return isinstance(n, Literal) and n.kind in ("int", "float") and n.value <= 0

    for c in _conjuncts(where):
        if not isinstance(c, Compare):
            continue
        op, left, right = c.op, c.left, c.right
        if op in ("<", "<=") and is_date(left) and is_index(right):
            return True
        if op in (">", ">=") and is_index(left) and is_date(right):
            return True
        if op in (">", ">=") and _days_call(left, is_date, is_index) and non_negative(right):
            return True
        if op in ("<", "<=") and non_negative(left) and _days_call(right, is_date, is_index):
            return True
        if op in ("<", "<=") and _days_call(left, is_index, is_date) and non_positive(right):
            return True
    return False


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
