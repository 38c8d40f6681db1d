"""The ``oncosurg`` command: one click group, shared options, one module per command family.

Bad input never produces a traceback: commands raise :class:`UserError` (exit status 2) or
:class:`click.ClickException` with a message that says how to fix the input.

Start-up is kept short: the command modules import only click and light oncosurg modules at the
top; numpy, scipy, numba, SQLAlchemy, matplotlib, FastAPI, openpyxl, ReportLab and fhir.resources
are imported inside the commands that use them (``tests/test_cli_startup.py`` checks it), so
``oncosurg --help`` and ``--version`` answer at once (``benchmarks/bench_startup.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from oncosurg import __version__

if TYPE_CHECKING:
    import sqlalchemy as sa

F = TypeVar("F", bound=Callable[..., Any])


class UserError(click.ClickException):
    """Bad input from the user: printed without a traceback, exit status 2."""

    exit_code = 2


class EmptyCohort(click.ClickException):
    """The protocol's cohort holds no patient (``analyze``/``report`` without ``--allow-empty``): exit status 3."""

    exit_code = 3


def open_registry(db: str | None) -> sa.Engine:
    """The registry at ``--db`` for a command that only reads: a missing one is refused, never created."""
    from oncosurg.store.engine import StoreError, open_store

    try:
        return open_store(db, create=False)
    except StoreError as exc:
        raise UserError(str(exc)) from None


def create_registry(db: str | None) -> sa.Engine:
    """The registry at ``--db``, created (with its folder) when missing: ``import`` and ``user add`` only."""
    from oncosurg.store.engine import StoreError, open_store

    try:
        return open_store(db, create=True)
    except StoreError as exc:
        raise UserError(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="oncosurg")
def cli() -> None:
    """oncosurg: register, validate and analyse the rescue-cetuximab → hepatectomy pathway.

    Data flows one way: a registry CSV is validated and imported into a store (SQLite file by
    default, PostgreSQL by URL); a study protocol (TOML) defines the cohort, populations and
    endpoints; `analyze` computes them from the patient-level records.
    """


def db_option(f: F) -> F:
    """``--db URL`` (default ``$ONCOSURG_DB`` or ``sqlite:///oncosurg.db``)."""
    return click.option(
        "--db", "db", metavar="URL", envvar="ONCOSURG_DB", default=None,
        help="Database URL: sqlite:///path.db (default sqlite:///oncosurg.db) or "
             "postgresql://user@host/db. Also read from $ONCOSURG_DB.")(f)


#: The study protocol used when a command is not told otherwise: the seed study.
SEED_PROTOCOL = "rescue-cetuximab-2007"


def protocol_option(f: F) -> F:
    """``--protocol ID_OR_PATH`` (default: the seed study)."""
    return click.option(
        "--protocol", "protocol", default=SEED_PROTOCOL, show_default=True, metavar="ID_OR_PATH",
        help="Protocol id (looked up in ./studies and the bundled studies) or path to a .toml file.")(f)


def csv_source_option(verb: str) -> Callable[[F], F]:
    """``--csv FILE``: work on a registry CSV through a temporary in-memory store instead of --db."""
    return click.option("--csv", "csv_file", type=click.Path(dir_okay=False), default=None,
                        help=f"{verb} this registry CSV directly (through a temporary in-memory store) "
                             "instead of --db.")


def allow_empty_option(f: F) -> F:
    """``--allow-empty``: accept a cohort of 0 patients (exit status 0) instead of refusing it (status 3)."""
    return click.option("--allow-empty", is_flag=True,
                        help="Accept an empty cohort (every estimate 'not estimable (n = 0)') instead of "
                             "exiting with status 3.")(f)


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of a table.")(f)


def _register() -> None:
    # Each command module attaches its commands to ``cli``; imported here so the group is complete.
    from oncosurg.cli import analyze, federate, interop, registry, report, survival, web  # noqa: F401


_register()


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="oncosurg")
