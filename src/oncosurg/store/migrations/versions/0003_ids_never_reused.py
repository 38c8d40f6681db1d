"""Ids are never reused; complications say whether they only stand for a worst grade.

* SQLite: every table with a surrogate ``id`` is rebuilt with ``AUTOINCREMENT`` (every row and id
  kept; a plain ``INTEGER PRIMARY KEY`` hands the id of the last deleted row to the next insert,
  so a patient registered after a deletion inherited the deleted patient's audit history).
* Both backends: each id counter (``sqlite_sequence``, the PostgreSQL sequence) is set past the
  highest id ever used, deleted rows included: the audit trail remembers them.
* ``complication.from_worst_grade``: true for the rows that stand for a registry CSV's or the
  surgery card's ``clavien_dindo_max`` (``worst complication (…)``), false for complications recorded
  one by one; only the former may follow a lowered worst grade (oncosurg.store.complications).

The rebuild runs with SQLite's foreign keys off (:func:`oncosurg.store.engine.upgrade`), so that
dropping the old tables cascades nothing; ``PRAGMA foreign_key_check`` is run before committing.
A later batch migration that rebuilds one of these tables must pass
``table_kwargs={"sqlite_autoincrement": True}`` (``tests/test_ids.py`` checks the schema).

It runs after ``0004_accounts_security`` (the two were written in parallel and 0004 reached main
first: a registry already at 0004 must still get this one), so the tables 0004 adds or extends (``access_trail``, ``login_attempt``, ``app_user``) are
rebuilt with their new columns: the chain is 0001 → 0002 → 0004 → 0003.

Revision ID: 0003_ids_never_reused
Revises: 0004_accounts_security
"""

import sqlalchemy as sa
from alembic import op

revision = '0003_ids_never_reused'
down_revision = '0004_accounts_security'
branch_labels = None
depends_on = None

#: Tables whose ``id`` is a generated surrogate key.
TABLES = ('centre', 'import_batch', 'patient', 'complication', 'change_log', 'app_user', 'login_attempt',
          'audit_log', 'mdt_review', 'response_assessment', 'access_trail')
#: Audit entities whose ``entity_id`` is an id of that table (rows deleted since are remembered there).
ENTITIES = ('patient', 'complication', 'mdt_review', 'response_assessment', 'app_user')

_audit = sa.table('audit_log', sa.column('entity', sa.String), sa.column('entity_id', sa.Integer),
                  sa.column('patient_pk', sa.Integer))
_change_log = sa.table('change_log', sa.column('patient_pk', sa.Integer))
_complication = sa.table('complication', sa.column('description', sa.String),
                         sa.column('from_worst_grade', sa.Boolean))


def _highest_ids(bind: sa.Connection) -> dict[str, int]:
    """The highest id each table ever handed out, as far as the store remembers."""
    high = {name: bind.execute(sa.select(sa.func.max(sa.column('id'))).select_from(sa.table(name))).scalar() or 0
            for name in TABLES}
    for entity in ENTITIES:
        used = bind.execute(sa.select(sa.func.max(_audit.c.entity_id)).where(_audit.c.entity == entity)).scalar()
        high[entity] = max(high[entity], used or 0)
    for used in (bind.execute(sa.select(sa.func.max(_audit.c.patient_pk))).scalar(),
                 bind.execute(sa.select(sa.func.max(_change_log.c.patient_pk))).scalar()):
        high['patient'] = max(high['patient'], used or 0)
    return high


def _set_counters(bind: sa.Connection, high: dict[str, int]) -> None:
    for name, value in high.items():
        if bind.dialect.name == 'sqlite':
            bind.execute(sa.text('DELETE FROM sqlite_sequence WHERE name = :t'), {'t': name})
            bind.execute(sa.text('INSERT INTO sqlite_sequence (name, seq) VALUES (:t, :v)'), {'t': name, 'v': value})
        elif bind.dialect.name == 'postgresql' and value > 0:
            bind.execute(sa.text(
                "SELECT setval(s, :v) FROM (SELECT pg_get_serial_sequence(:t, 'id')::regclass AS s) q "
                "WHERE COALESCE(pg_sequence_last_value(s), 0) < :v"), {'t': name, 'v': value})


def upgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == 'sqlite'
    high = _highest_ids(bind)
    for name in TABLES:
        if not sqlite and name != 'complication':
            continue
        with op.batch_alter_table(name, recreate='always' if sqlite else 'auto',
                                  table_kwargs={'sqlite_autoincrement': True}) as batch_op:
            if name == 'complication':
                batch_op.add_column(sa.Column('from_worst_grade', sa.Boolean(), server_default=sa.false(),
                                              nullable=False))
    op.execute(_complication.update().where(_complication.c.description.like('worst complication (%'))
               .values(from_worst_grade=True))
    _set_counters(bind, high)
    if sqlite:
        broken = bind.execute(sa.text('PRAGMA foreign_key_check')).all()
        if broken:
            raise RuntimeError(f'foreign keys broken by the rebuild: {broken[:5]}')


def downgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == 'sqlite'
    for name in TABLES:
        if not sqlite and name != 'complication':
            continue
        with op.batch_alter_table(name, recreate='always' if sqlite else 'auto') as batch_op:
            if name == 'complication':
                batch_op.drop_column('from_worst_grade')
