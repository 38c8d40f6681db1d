"""A registry where resection has no effect on survival, and patients are resected only if they live
long enough to be operated (guarantee time): the naive comparison is "significant", the engine
refuses it, and the landmark and time-dependent Cox analyses find no effect.

Each replicate is a simulated multi-episode registry (``tests/episode_registry.py``, hazard ratio of
death after resection = 1) run through the protocol engine on SQLite.
"""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa

from episode_registry import simulate
from oncosurg.protocol.engine import compile_protocol, run_protocol
from oncosurg.protocol.model import ProtocolError, protocol_from_dict
from oncosurg.stats import logrank_test
from oncosurg.store.engine import open_store
from oncosurg.store.repository import import_patients

RESECTION = "liver_procedure where procedure_type = 'hepatectomy'"
REPLICATES = 20


def protocol(comparisons: list[dict]) -> dict:
    return {
        "protocol": {"format": 2, "id": "null", "title": "Resection without effect"},
        "index": {"label": "Start of cetuximab", "episode": "therapy_line where has(agents, 'cetuximab')"},
        "populations": {"resected": f"exists({RESECTION} and procedure_date >= index_date)"},
        "outcomes": {"os": {"label": "Overall survival", "events": ["death"]}},
        "endpoints": [{"id": "n", "kind": "count", "label": "n", "definition": "patients"}],
        "comparisons": comparisons,
    }


VALID = protocol([
    {"id": "landmark", "label": "landmark", "outcome": "os", "method": "landmark", "landmark": 6,
     "exposure": RESECTION},
    {"id": "td", "label": "time-dependent", "outcome": "os", "method": "time_dependent_cox", "exposure": RESECTION},
])


def test_the_engine_refuses_the_naive_comparison() -> None:
    naive = protocol([{"id": "naive", "label": "resected vs not", "outcome": "os", "method": "kaplan_meier",
                       "groups": "resected"}])
    with pytest.raises(ProtocolError) as info:
        compile_protocol(protocol_from_dict(naive))
    message = str(info.value)
    assert "comparisons[0] (naive).groups" in message and "decided after time zero" in message
    assert "landmark" in message and "time_dependent_cox" in message


@pytest.mark.slow
def test_null_effect_is_found_null_by_the_valid_methods_only() -> None:
    compiled = protocol_from_dict(VALID)
    naive_p, landmark_cover, td_cover, td_hr = [], 0, 0, []
    for seed in range(REPLICATES):
        engine = open_store("sqlite://")
        records = simulate(400, 100 + seed, effect=1.0, referred=0.0, median_death=360.0, median_resection=180.0,
                           resectable=0.6)
        assert not import_patients(engine, records, source="sim", sha256="0" * 64, rows=len(records)).issues
        results = run_protocol(engine, compiled)
        cp = compile_protocol(compiled)
        c = cp.view.subquery.c
        with engine.connect() as conn:  # the naive split, computed by hand: ever resected vs never
            rows = conn.execute(sa.select(c.os_months, c.os_event, cp.populations["resected"].sql)
                                .where(cp.cohort)).all()
        t = np.asarray([r[0] for r in rows], float)
        e = np.asarray([bool(r[1]) for r in rows])
        g = np.asarray([int(bool(r[2])) for r in rows])
        naive_p.append(logrank_test(t, e, g).p)
        for key in ("landmark", "td"):
            hr = results["comparisons"][key]["hr"]
            covered = hr["lower"] <= 1 <= hr["upper"]
            if key == "landmark":
                landmark_cover += covered
            else:
                td_cover += covered
                td_hr.append(hr["hr"])
        engine.dispose()
    # the naive log-rank is strongly "significant" in every replicate
    assert max(naive_p) < 1e-3, sorted(naive_p)[-3:]
    # the valid analyses' 95% CIs cover HR = 1 in most replicates (nominal 95%)
    assert landmark_cover >= 0.8 * REPLICATES, landmark_cover
    assert td_cover >= 0.8 * REPLICATES, td_cover
    assert 0.8 < float(np.exp(np.mean(np.log(td_hr)))) < 1.25
