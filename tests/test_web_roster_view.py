"""The list's filters as array operations (:class:`oncosurg.web.services.roster.RosterView`) select
exactly the patients the plain per-patient tests select, on random rosters and after in-place changes."""

from __future__ import annotations

import dataclasses
import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from oncosurg.web.services.patients import STAGE_FILTERS
from oncosurg.web.services.roster import Facts, RosterView
from oncosurg.web.services.worklist import last_news, status_unknown

TODAY = dt.date(2024, 6, 3)
CENTRES = ("Paul Brousse", "Beaujon", "Lyon Sud")
# ids with letters whose lower case is longer (İ → i̇) or equal to another's, digits, separators, even NUL
ID_CHARS = "AaBbİıSsß-0129 \0"
# dates a few days around the horizons drawn (0-4 weeks), so that the boundaries are hit
dates = st.one_of(st.none(), st.integers(-3, 32).map(lambda days: TODAY - dt.timedelta(days=days)))


@st.composite
def facts(draw: st.DrawFn, pk: int) -> Facts:
    return Facts(pk=pk, patient_id=draw(st.text(ID_CHARS, min_size=1, max_size=8)),
                 centre=draw(st.sampled_from(CENTRES)), referral=None, cetuximab_start=draw(dates),
                 surgery_date=draw(dates),
                 surgery_type=draw(st.sampled_from((None, "hepatectomy", "ablation"))), progression_date=draw(dates),
                 death_date=draw(dates), last_contact_date=draw(dates), stop_date=draw(dates), last_review=draw(dates))


def reference(ordered: list[Facts], *, centres: frozenset[str] | None, centre: str, needle: str, stage: str,
              horizon_weeks: int) -> list[int]:
    """The list's filter as it was written per patient (before the arrays)."""
    def news_within(f: Facts) -> bool:
        return not status_unknown(last_news(f.last_contact_date, f.last_review), today=TODAY,
                                  horizon_weeks=horizon_weeks)

    def line_open(f: Facts) -> bool:
        return f.surgery_date is None and f.death_date is None and f.stop_date is None

    tests = {"": lambda f: True, "on_cetuximab": lambda f: line_open(f) and news_within(f),
             "status_unknown": lambda f: line_open(f) and not news_within(f),
             "operated": lambda f: f.surgery_date is not None, "resected": lambda f: f.surgery_type == "hepatectomy",
             "progressed": lambda f: f.progression_date is not None, "deceased": lambda f: f.death_date is not None,
             "alive": lambda f: f.death_date is None}
    return [i for i, f in enumerate(ordered) if (centres is None or f.centre in centres)
            and (not centre or f.centre == centre) and (not needle or needle in f.patient_id.lower())
            and tests[stage](f)]


@settings(max_examples=150, deadline=None)
@given(data=st.data(), n=st.integers(0, 40))
def test_the_view_selects_what_the_per_patient_tests_select(data: st.DataObject, n: int) -> None:
    ordered = sorted((data.draw(facts(pk)) for pk in range(1, n + 1)), key=lambda f: f.order)
    view = RosterView(ordered)
    if ordered and data.draw(st.booleans()):  # change some patients in place (same centre and id)
        changed = {f.pk: dataclasses.replace(data.draw(facts(f.pk)), patient_id=f.patient_id, centre=f.centre)
                   for f in data.draw(st.lists(st.sampled_from(ordered), max_size=5))}
        before, earlier = list(ordered), view
        everyone = dict(centres=None, centre="", needle="", stage="alive", today=TODAY, horizon_weeks=6)
        alive_before = list(view.select(**everyone))
        view = view.replaced(changed)
        assert earlier.ordered == before and list(earlier.select(**everyone)) == alive_before, \
            "a request holding the earlier view keeps it unchanged"
        ordered = [changed.get(f.pk, f) for f in before]
        assert view.ordered == ordered
    for _ in range(6):
        centres = data.draw(st.one_of(st.none(), st.frozensets(st.sampled_from(CENTRES))))
        centre = data.draw(st.sampled_from(("", *CENTRES, "Elsewhere")))
        needle = data.draw(st.one_of(st.just(""), st.text(ID_CHARS, max_size=3).map(str.lower),
                                     st.sampled_from([f.patient_id.lower()[1:3] for f in ordered] or [""])))
        stage = data.draw(st.sampled_from(("", *STAGE_FILTERS)))
        horizon = data.draw(st.integers(0, 4))
        got = view.select(centres=centres, centre=centre, needle=needle, stage=stage, today=TODAY,
                          horizon_weeks=horizon)
        assert list(got) == reference(ordered, centres=centres, centre=centre, needle=needle, stage=stage,
                                      horizon_weeks=horizon), (centres, centre, needle, stage)
