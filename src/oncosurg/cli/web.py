"""``oncosurg serve``, ``oncosurg user add|reset-link|totp-reset`` and ``oncosurg audit
verify|export|checkpoint|keygen|access``: the registry web app."""

from __future__ import annotations

import json
import os
import sys

import click

from oncosurg.cli import UserError, cli, db_option

#: How long a ``serve --workers N`` worker may take to answer uvicorn's health check (seconds).
WORKER_STARTUP_SECONDS = 120
#: How long an idle keep-alive connection stays open (seconds).  uvicorn's default, 5 s, is shorter
#: than the idle timeouts of browsers and reverse proxies (nginx keeps upstream connections 60 s): a
#: client sending its next request just as the server closed the connection got no answer at all
#: ("server disconnected"; seen by the web benchmark's clients after the 5 s it takes 30 of them to
#: sign in).  A connection should be closed by the client or proxy, not under its feet.
KEEP_ALIVE_SECONDS = 75


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
    import copy

    # our access log names the user; uvicorn's would not (and would trust no proxy header: neither do we,
    # except those of ONCOSURG_WEB_TRUSTED_PROXIES)
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config["loggers"]["oncosurg.web.access"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    options = {"host": host, "port": port, "log_level": "info", "proxy_headers": False, "server_header": False,
               "access_log": False, "log_config": log_config, "timeout_keep_alive": KEEP_ALIVE_SECONDS}
    if workers == 1:
        from oncosurg.web.app import warm

        warm(app)
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
    """Create an account, e.g. the first administrator. The password is asked twice (12+ characters, not
    in the shipped breached-password list, zxcvbn strength ONCOSURG_WEB_PASSWORD_MIN_SCORE or more)."""
    from oncosurg.store.audit import Actor
    from oncosurg.web.errors import Invalid
    from oncosurg.web.services.users import create_user
    from oncosurg.web.settings import Settings

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
                                  all_centres=all_centres, actor=Actor(None, f"cli:{_os_user()}"),
                                  min_score=Settings.from_env().password_min_score)
    except Invalid as exc:
        raise UserError("; ".join(f"{e['column']}: {e['message']}" for e in exc.errors)) from None
    finally:
        store.dispose()
    where = "all centres" if all_centres else ", ".join(centres)
    click.echo(f"created user {username} (id {user_id}, {role}; {where})")


@user_group.command("reset-link")
@click.argument("username")
@db_option
@click.option("--base-url", default="", metavar="URL",
              help="The registry's address, e.g. https://registry.example.org (else the path alone is printed).")
def user_reset_link_cmd(username: str, db: str | None, base_url: str) -> None:
    """Issue a one-time password-reset link (valid ONCOSURG_WEB_RESET_LINK_HOURS, default 24 hours).

    Give it to the user through a trusted channel; only its SHA-256 is kept, and it works once.
    """
    from oncosurg.store.audit import Actor
    from oncosurg.web.errors import WebError
    from oncosurg.web.services.accounts import issue_reset
    from oncosurg.web.settings import Settings

    store = _store(db)
    try:
        settings = Settings.from_env()
        with store.write() as conn:
            issued = issue_reset(conn, by=None, actor=Actor(None, f"cli:{_os_user()}"),
                                 user_id=_user_id(conn, username),
                                 settings=settings, now=settings.now())
    except WebError as exc:
        raise UserError(exc.message) from None
    finally:
        store.dispose()
    click.echo(f"{base_url.rstrip('/')}{issued['path']}")
    click.echo(f"valid once, until {issued['expires_at']}", err=True)


@user_group.command("totp-reset")
@click.argument("username")
@db_option
def user_totp_reset_cmd(username: str, db: str | None) -> None:
    """Remove an account's TOTP second factor (a lost phone) and end its sessions; it is asked to set up
    a new one at its next sign-in when ONCOSURG_WEB_ADMIN_TOTP_REQUIRED applies to it."""
    from oncosurg.store.audit import Actor
    from oncosurg.web.errors import WebError
    from oncosurg.web.services.accounts import reset_totp

    store = _store(db)
    try:
        with store.write() as conn:
            reset_totp(conn, by=None, actor=Actor(None, f"cli:{_os_user()}"), user_id=_user_id(conn, username))
    except WebError as exc:
        raise UserError(exc.message) from None
    finally:
        store.dispose()
    click.echo(f"second factor of {username} removed; its sessions ended")


def _user_id(conn, username: str) -> int:  # type: ignore[no-untyped-def]
    import sqlalchemy as sa

    from oncosurg.store import tables as t

    found = conn.execute(sa.select(t.app_user.c.id).where(t.app_user.c.username == username)).scalar()
    if found is None:
        raise UserError(f"no account named {username!r}")
    return int(found)


@cli.group("audit")
def audit_group() -> None:
    """Check and export the web app's tamper-evident audit trail (a sha256 hash chain) and the access trail."""


_KEY_HELP = "Checkpoint key file (kept outside the database; `oncosurg audit keygen` makes one)."


def _key(path: str | None) -> bytes | None:
    from oncosurg.store.audit import load_key

    if path is None:
        return None
    try:
        return load_key(path)
    except (OSError, ValueError) as exc:
        raise UserError(str(exc)) from None


@audit_group.command("verify")
@db_option
@click.option("--checkpoint", "checkpoint_files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="A checkpoint written by `oncosurg audit checkpoint` (repeatable): detects a truncated or "
                   "re-hashed chain.")
@click.option("--key", "key_file", type=click.Path(exists=True, dir_okay=False), envvar="ONCOSURG_AUDIT_KEY",
              help=_KEY_HELP + " [env ONCOSURG_AUDIT_KEY]")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def audit_verify_cmd(db: str | None, checkpoint_files: tuple[str, ...], key_file: str | None, as_json: bool) -> None:
    """Recompute the audit trail's hash chain, and each patient's state from the trail against the
    tables (a direct database edit shows). Exit status 0 when intact, 1 when not.

    The chain alone cannot tell a truncated or wholly re-hashed trail: check it against signed
    checkpoints (`oncosurg audit checkpoint`) with --checkpoint FILE --key FILE.
    """
    from oncosurg.store.audit import verify

    if checkpoint_files and key_file is None:
        raise UserError("--checkpoint needs --key (the key the checkpoint was signed with)")
    points = []
    for path in checkpoint_files:
        try:
            with open(path, encoding="utf-8") as handle:
                points.append(json.load(handle))
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}: not a checkpoint file ({exc})") from None
    key = _key(key_file)
    store = _store(db)
    try:
        with store.read() as conn:
            result = verify(conn, checkpoints=points, key=key)
    finally:
        store.dispose()
    if as_json:
        click.echo(json.dumps(result.to_dict()))
    elif result.ok:
        unchecked = (f"; {result.patients_unchecked} patient(s) created before the trail carried values not "
                     "checkable" if result.patients_unchecked else "")
        points_ok = f"; {len(points)} checkpoint(s) hold" if points else ""
        click.echo(f"audit trail intact: {result.rows} row(s); state of {result.patients_checked} patient(s) "
                   f"matches the tables{unchecked}{points_ok}; head {result.head_hash}")
    else:
        where = f" at row {result.bad_id}" if result.bad_id else ""
        click.echo(f"audit trail BROKEN{where}: {result.problem}", err=True)
        for m in result.mismatches[:20]:
            click.echo(f"  {m['centre']}/{m['patient_id']}: {m['what']}{' ' + m['field'] if m['field'] else ''}: "
                       f"trail {m['trail']!r}, tables {m['table']!r}", err=True)
    if not result.ok:
        sys.exit(1)


@audit_group.command("checkpoint")
@db_option
@click.option("--key", "key_file", type=click.Path(exists=True, dir_okay=False), envvar="ONCOSURG_AUDIT_KEY",
              required=True, help=_KEY_HELP + " [env ONCOSURG_AUDIT_KEY]")
@click.option("--out", type=click.Path(dir_okay=False), default="-", show_default=True,
              help="Where to write the checkpoint ('-' = standard output, e.g. to mail or file it elsewhere).")
def audit_checkpoint_cmd(db: str | None, key_file: str, out: str) -> None:
    """Write the audit chain's head (row count and hash) signed with HMAC-SHA256 under a key kept outside
    the database. Keep checkpoints elsewhere; `audit verify --checkpoint` detects truncation and re-hashing.
    """
    from oncosurg.store.audit import checkpoint

    key = _key(key_file)
    assert key is not None
    store = _store(db)
    try:
        with store.read() as conn:
            point = checkpoint(conn, key=key)
    finally:
        store.dispose()
    text = json.dumps(point, indent=2) + "\n"
    if out == "-":
        click.echo(text, nl=False)
    else:
        with open(out, "w", encoding="utf-8") as handle:
            handle.write(text)
        click.echo(f"checkpoint of row {point['rows']} written to {out}", err=True)


@audit_group.command("keygen")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="The key file to create (mode 0600).")
def audit_keygen_cmd(out: str) -> None:
    """Create a random 256-bit checkpoint key (64 hex digits). Keep it off the database server's disk
    backups, or wherever an attacker of the database cannot read it."""
    import secrets

    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UserError(f"{out} exists; a key is never overwritten") from None
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32) + "\n")
    click.echo(f"key written to {out}", err=True)


@audit_group.command("access")
@db_option
@click.option("--out", type=click.Path(dir_okay=False), default="-", show_default=True,
              help="Output CSV file ('-' = standard output).")
@click.option("--user", "username", default="", metavar="NAME", help="Only this user's reads and exports.")
@click.option("--centre", default="", metavar="NAME", help="Only rows of this centre.")
@click.option("--patient", "patient_id", default="", metavar="ID",
              help="Only this patient's reads, and the registry exports (use with --centre).")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), default=None, help="From this day (UTC).")
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]), default=None, help="Up to this day, included (UTC).")
def audit_access_cmd(db: str | None, out: str, username: str, centre: str, patient_id: str, since, until) -> None:  # type: ignore[no-untyped-def]
    """Write the access trail (who read which patient, who exported what; oldest first) as CSV."""
    import datetime as dt

    import sqlalchemy as sa

    from oncosurg.web.errors import Busy
    from oncosurg.web.services.access import export_csv, flush

    store = _store(db)
    try:
        try:
            flush(store)  # rows a running server journalled and has not moved yet
        except (OSError, sa.exc.SQLAlchemyError, Busy) as exc:
            click.echo(f"warning: the access journal beside the registry could not be merged ({exc}); "
                       "rows recorded in the last second may be missing", err=True)
        with store.read() as conn:
            handle = sys.stdout if out == "-" else open(out, "w", encoding="utf-8", newline="")  # noqa: SIM115
            try:
                for chunk in export_csv(conn, centres=None, username=username, centre=centre, patient_id=patient_id,
                                        since=since, until=until + dt.timedelta(days=1) if until else None):
                    handle.write(chunk)
            finally:
                if handle is not sys.stdout:
                    handle.close()
    finally:
        store.dispose()


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
