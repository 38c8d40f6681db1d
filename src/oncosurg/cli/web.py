"""``oncosurg serve``, ``oncosurg user add`` and ``oncosurg audit verify|export``: the registry web app."""

from __future__ import annotations

import json
import os
import sys

import click

from oncosurg.cli import UserError, cli, db_option

#: How long a ``serve --workers N`` worker may take to answer uvicorn's health check (seconds).
WORKER_STARTUP_SECONDS = 120


def _store(db: str | None, *, create: bool = False):  # type: ignore[no-untyped-def]
    """The web app's store; only ``user add`` creates a registry (``create=True``)."""
    from oncosurg.store.engine import StoreError
    from oncosurg.web.db import WebStore

    try:
        return WebStore(db, create=create)
    except StoreError as exc:
        raise UserError(str(exc)) from None


def _os_user() -> str:
    """Who runs the command, for the audit trail (the account created is not the actor)."""
    import getpass

    try:
        return getpass.getuser()[:50]
    except (KeyError, OSError):
        return "operator"


@cli.command("serve")
@db_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on (keep 127.0.0.1 behind a reverse proxy that terminates HTTPS).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="TCP port.")
@click.option("--protocol", default=None, metavar="ID_OR_PATH",
              help="Study protocol of the dashboard (default rescue-cetuximab-2007, or $ONCOSURG_WEB_PROTOCOL).")
@click.option("--secure-cookies", is_flag=True, default=None,
              help="Mark cookies Secure and send HSTS (when served over HTTPS).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Worker processes; reads run in parallel, writes stay one transaction at a time.")
def serve_cmd(db: str | None, host: str, port: int, protocol: str | None, secure_cookies: bool | None,
              workers: int) -> None:
    """Serve the registry web app: pathway data entry, review worklist, live dashboard, audit trail.

    Runs on the embedded SQLite file (WAL journal, one writer) or PostgreSQL. There are no default
    accounts: create the first administrator with `oncosurg user add`. Other settings are read from
    ONCOSURG_WEB_* environment variables (docs/web.md); the secret key from $ONCOSURG_SECRET_KEY or,
    when unset, generated once and kept in the database.
    """
    import uvicorn

    from oncosurg.store.engine import RegistryMissing, StoreError
    from oncosurg.web import Settings, create_app

    try:
        settings = Settings.from_env(db_url=db, protocol=protocol, secure_cookies=secure_cookies)
        app = create_app(settings, create=False)
    except RegistryMissing as exc:
        raise UserError(f"{exc} (or `oncosurg user add NAME --role admin --all-centres --db ...` to start an "
                        "empty registry)") from None
    except (StoreError, ValueError) as exc:
        raise UserError(str(exc)) from None
    with app.state.store.read() as conn:
        from oncosurg.web.services.users import list_users

        if not list_users(conn):
            click.echo("note: no account exists yet; create one with `oncosurg user add NAME --role admin "
                       "--all-centres`", err=True)
    options = {"host": host, "port": port, "log_level": "info", "proxy_headers": False, "server_header": False}
    if workers == 1:
        app.state.dashboard.warm(app.state.store.engine)
        uvicorn.run(app, **options)
        return
    import inspect

    if "timeout_worker_healthcheck" in inspect.signature(uvicorn.run).parameters:
        # uvicorn kills a worker that does not answer its health check within 5 s (the default); a worker
        # importing the app on a busy machine can take longer: it was killed and restarted again and again
        options["timeout_worker_healthcheck"] = WORKER_STARTUP_SECONDS
    # the schema is migrated and the secret key stored (above) before the workers start
    os.environ["ONCOSURG_DB"] = app.state.store.engine.url.render_as_string(hide_password=False)
    os.environ["ONCOSURG_WEB_PROTOCOL"] = settings.protocol
    os.environ["ONCOSURG_WEB_SECURE_COOKIES"] = "true" if settings.secure_cookies else "false"
    app.state.store.dispose()
    uvicorn.run("oncosurg.web.app:create_app_from_env", factory=True, workers=workers, **options)


@cli.group("user")
def user_group() -> None:
    """Manage web-app accounts (roles admin, data_manager, investigator, auditor; centre grants)."""


@user_group.command("add")
@click.argument("username")
@db_option
@click.option("--role", type=click.Choice(["admin", "data_manager", "investigator", "auditor"]), prompt=True,
              help="admin (everything), data_manager (edits), investigator (read-only), auditor (audit trail).")
@click.option("--centre", "centres", multiple=True, metavar="NAME",
              help="Grant a centre (repeatable; created when new).")
@click.option("--all-centres", is_flag=True, help="Grant every centre, present and future.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (for scripts).")
def user_add_cmd(username: str, db: str | None, role: str, centres: tuple[str, ...], all_centres: bool,
                 password_stdin: bool) -> None:
    """Create an account, e.g. the first administrator. The password is asked twice (12+ characters)."""
    from oncosurg.store.audit import Actor
    from oncosurg.web.errors import Invalid
    from oncosurg.web.services.users import create_user

    if not centres and not all_centres:
        raise UserError("grant --centre NAME (repeatable) or --all-centres")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    store = _store(db, create=True)
    try:
        with store.write() as conn:
            user_id = create_user(conn, username=username, password=password, role=role, centres=centres,
                                  all_centres=all_centres, actor=Actor(None, f"cli:{_os_user()}"))
    except Invalid as exc:
        raise UserError("; ".join(f"{e['column']}: {e['message']}" for e in exc.errors)) from None
    finally:
        store.dispose()
    where = "all centres" if all_centres else ", ".join(centres)
    click.echo(f"created user {username} (id {user_id}, {role}; {where})")


@cli.group("audit")
def audit_group() -> None:
    """Check and export the web app's tamper-evident audit trail (a sha256 hash chain)."""


@audit_group.command("verify")
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def audit_verify_cmd(db: str | None, as_json: bool) -> None:
    """Recompute the audit trail's hash chain. Exit status 0 when intact, 1 when broken.

    Prints the head hash: write it down elsewhere (a ticket, a lab book) to anchor the chain.
    """
    from oncosurg.store.audit import verify

    store = _store(db)
    try:
        with store.read() as conn:
            result = verify(conn)
    finally:
        store.dispose()
    if as_json:
        click.echo(json.dumps(result.to_dict()))
    elif result.ok:
        click.echo(f"audit trail intact: {result.rows} row(s); head {result.head_hash}")
    else:
        click.echo(f"audit trail BROKEN at row {result.bad_id}: {result.problem}", err=True)
    if not result.ok:
        sys.exit(1)


@audit_group.command("export")
@db_option
@click.option("--out", type=click.Path(dir_okay=False), default="-", show_default=True,
              help="Output CSV file ('-' = standard output).")
@click.option("--patient", "patient_id", default=None, metavar="ID", help="Only this patient (with --centre).")
@click.option("--centre", default=None, metavar="NAME", help="Only this centre's rows.")
def audit_export_cmd(db: str | None, out: str, patient_id: str | None, centre: str | None) -> None:
    """Write the audit trail (oldest first, with the hashes) as CSV."""
    import sqlalchemy as sa

    from oncosurg.store import tables as t
    from oncosurg.store.audit import export_csv

    if patient_id and not centre:
        raise UserError("--patient needs --centre (patient ids are unique per centre)")
    store = _store(db)
    try:
        with store.read() as conn:
            pk = None
            if patient_id:
                pk = conn.execute(sa.select(sa.func.max(t.audit_log.c.patient_pk)).where(
                    t.audit_log.c.centre == centre, t.audit_log.c.patient_id == patient_id)).scalar()
                if pk is None:
                    raise UserError(f"no audit rows for patient {patient_id!r} of centre {centre!r}")
            handle = sys.stdout if out == "-" else open(out, "w", encoding="utf-8", newline="")  # noqa: SIM115
            try:
                for chunk in export_csv(conn, patient_pk=pk, centres=[centre] if centre else None):
                    handle.write(chunk)
            finally:
                if handle is not sys.stdout:
                    handle.close()
    finally:
        store.dispose()
