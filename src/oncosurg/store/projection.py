"""The flat registry row of every patient, computed in SQL from the episode tables.

This is :func:`oncosurg.pathway.flat.to_flat` as one ``SELECT`` (window functions, no per-patient
round trips), so the analysis view, the flat export and every protocol written against the flat
columns run inside the database on SQLite and PostgreSQL alike.  ``tests/test_store_episodes.py``
keeps the two definitions in step on random multi-episode registries.

* rescue line: the lowest-numbered conversion line with cetuximab among its agents, else the
  lowest-numbered conversion line;
* the operation: the first liver procedure other than portal vein embolisation on or after the
  rescue line's start (any date when the start is unknown), replaced by the corresponding second
  stage when it is a two-stage first stage or ALPPS stage 1 and that second stage exists;
* clavien_dindo_max: the worst complication grade of that operation; ``none`` when complications
  were assessed and none is recorded;
* progression_date: the first disease event on or after the rescue start;
* last_contact_date: the latest contact; death_date: the date of the ``dead`` contact.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from oncosurg.pathway.flat import LINE_BURDEN, PATHOLOGY_COLUMNS, PROCEDURE_COLUMNS, PROCEDURE_TO_FLAT
from oncosurg.pathway.model import OPERATIONS, Table
from oncosurg.schema import CLAVIEN_DINDO, COLUMNS


def has_code(column: sa.ColumnElement[Any], code: str) -> sa.ColumnElement[bool]:
    """Whether a canonical ``;``-list column holds ``code`` (exact, since codes contain no ``;``)."""
    return (sa.literal(";") + sa.func.coalesce(column, "") + sa.literal(";")).like(f"%;{code};%")


def _first(select: sa.Select, partition: sa.ColumnElement[Any], *order: sa.ColumnElement[Any],
           name: str) -> sa.Subquery:
    ranked = select.add_columns(sa.func.row_number().over(partition_by=partition, order_by=order).label("rn"))
    inner = ranked.subquery(f"{name}_ranked")
    return sa.select(*[c for c in inner.c if c.name != "rn"]).where(inner.c.rn == 1).subquery(name)


def flat_select(tables: Mapping[Table, sa.Table], centre: sa.Table) -> sa.Select:
    """One row per patient: ``pk``, every flat registry column in registry order, then the ids of the
    rows the flat columns come from (``rescue_line_pk``, ``operation_pk``)."""
    p = tables[Table.PATIENT]
    line = tables[Table.THERAPY_LINE]
    proc = tables[Table.LIVER_PROCEDURE]
    comp = tables[Table.COMPLICATION]
    path = tables[Table.PATHOLOGY]
    event = tables[Table.DISEASE_EVENT]
    contact = tables[Table.CONTACT]

    cetuximab_first = sa.case((has_code(line.c.agents, "cetuximab"), 0), else_=1)
    rescue = _first(sa.select(line).where(line.c.intent == "conversion"), line.c.patient_pk,
                    cetuximab_first, line.c.line_number, name="rescue")
    start = rescue.c.start_date

    ops = (sa.select(proc).select_from(proc.outerjoin(rescue, rescue.c.patient_pk == proc.c.patient_pk))
           .where(proc.c.procedure_type.in_(OPERATIONS),
                  sa.or_(start.is_(None), proc.c.procedure_date >= start)))
    first_op = _first(ops, proc.c.patient_pk, proc.c.procedure_date, proc.c.procedure_no, name="first_op")
    second_type = sa.case((first_op.c.procedure_type == "two_stage_first", "two_stage_second"),
                          (first_op.c.procedure_type == "alpps_1", "alpps_2"), else_=None)
    seconds = (sa.select(proc.c.id.label("id"), proc.c.patient_pk)
               .select_from(proc.join(first_op, first_op.c.patient_pk == proc.c.patient_pk))
               .where(proc.c.procedure_type == second_type, proc.c.procedure_date >= first_op.c.procedure_date)
               .add_columns(proc.c.procedure_date, proc.c.procedure_no))
    second = _first(seconds, proc.c.patient_pk, proc.c.procedure_date, proc.c.procedure_no, name="second_stage")
    chosen = (sa.select(first_op.c.patient_pk, sa.func.coalesce(second.c.id, first_op.c.id).label("id"))
              .select_from(first_op.outerjoin(second, second.c.patient_pk == first_op.c.patient_pk))
              .subquery("chosen"))
    op = proc.alias("op")
    worst = (sa.select(comp.c.procedure_pk, sa.func.max(comp.c.grade_rank).label("rank"))
             .group_by(comp.c.procedure_pk).subquery("worst"))
    first_event = (sa.select(event.c.patient_pk, sa.func.min(event.c.event_date).label("event_date"))
                   .select_from(event.outerjoin(rescue, rescue.c.patient_pk == event.c.patient_pk))
                   .where(sa.or_(start.is_(None), event.c.event_date >= start))
                   .group_by(event.c.patient_pk).subquery("first_event"))
    contacts = (sa.select(contact.c.patient_pk, sa.func.max(contact.c.contact_date).label("last"),
                          sa.func.max(sa.case((contact.c.vital_status == "dead", contact.c.contact_date)))
                          .label("death"))
                .group_by(contact.c.patient_pk).subquery("contacts"))

    def partner() -> sa.ColumnElement[str]:
        iri, oxa = has_code(rescue.c.agents, "irinotecan"), has_code(rescue.c.agents, "oxaliplatin")
        return sa.case((rescue.c.id.is_(None), sa.null()), (sa.and_(iri, oxa), "both"), (iri, "irinotecan"),
                       (oxa, "oxaliplatin"), (has_code(rescue.c.agents, "other"), "other"), else_="none")

    surgery_type = sa.case(*[(op.c.procedure_type == k, v) for k, v in PROCEDURE_TO_FLAT.items()], else_=sa.null())
    two_stage = sa.case(
        (sa.and_(op.c.two_stage.is_(None), op.c.procedure_type.in_(("two_stage_first", "two_stage_second"))),
         sa.true()), else_=op.c.two_stage)
    grade = sa.case(*[(worst.c.rank == i, g) for i, g in enumerate(CLAVIEN_DINDO) if i > 0],
                    else_=sa.case((sa.and_(op.c.id.is_not(None), op.c.complications_assessed.is_(True)), "none"),
                                  else_=sa.null()))
    value: dict[str, sa.ColumnElement[Any]] = {
        "patient_id": p.c.patient_id, "centre": centre.c.name, "referral": p.c.referral, "sex": p.c.sex,
        "age_at_cetuximab": p.c.age_at_rescue, "primary_site": p.c.primary_site,
        "primary_side": p.c.primary_side, "ras_status": p.c.ras_status,
        **{c: rescue.c[c] for c in LINE_BURDEN},
        "prior_chemo_lines": rescue.c.line_number - 1,
        "cetuximab_start": rescue.c.start_date, "cetuximab_partner": partner(),
        "cetuximab_cycles": rescue.c.cycles, "best_response": rescue.c.best_response,
        "surgery_date": op.c.procedure_date, "surgery_type": surgery_type,
        **{c: op.c[c] for c in PROCEDURE_COLUMNS}, "two_stage": two_stage,
        "clavien_dindo_max": grade,
        **{c: path.c[c] for c in PATHOLOGY_COLUMNS},
        "progression_date": first_event.c.event_date, "death_date": contacts.c.death,
        "last_contact_date": contacts.c["last"],
    }
    joined = (p.join(centre, centre.c.id == p.c.centre_id)
              .outerjoin(rescue, rescue.c.patient_pk == p.c.id)
              .outerjoin(chosen, chosen.c.patient_pk == p.c.id)
              .outerjoin(op, op.c.id == chosen.c.id)
              .outerjoin(worst, worst.c.procedure_pk == op.c.id)
              .outerjoin(path, path.c.procedure_pk == op.c.id)
              .outerjoin(first_event, first_event.c.patient_pk == p.c.id)
              .outerjoin(contacts, contacts.c.patient_pk == p.c.id))
    return sa.select(p.c.id.label("pk"), *[value[c].label(c) for c in COLUMNS],
                     rescue.c.id.label("rescue_line_pk"), op.c.id.label("operation_pk")).select_from(joined)
