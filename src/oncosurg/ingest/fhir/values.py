"""Reading single FHIR values as registry values, refusing what cannot be read safely.

Each function turns one FHIR element into the registry's text (what a registry CSV cell would hold,
then checked by :func:`oncosurg.rules.parse_cell`) or says why it cannot: a quantity in a unit that
does not convert to the registry's (UCUM), a drug outside the agent vocabulary (ATC, RxNorm), a
gene the registry does not record (HGNC).  Nothing here guesses: a code it does not know is either
named in the problem or passed on as text so that the registry's own check names it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from oncosurg.export.fhir import terminology as tx

Concept = Mapping[str, Any] | None


def codings(concept: Concept) -> list[tuple[str, str]]:
    """(system, code) of every coding of a CodeableConcept (or of a Coding)."""
    if not isinstance(concept, Mapping):
        return []
    items = concept.get("coding") if "coding" in concept else [concept]
    return [(str(c.get("system", "")), str(c.get("code", ""))) for c in items or [] if isinstance(c, Mapping)]


def local(concept: Concept, name: str) -> str | None:
    """The code of oncosurg's code system ``name`` in a concept (``None`` when absent)."""
    system = tx.code_system(name)
    return next((code for s, code in codings(concept) if s == system), None)


def has(concept: Concept, coding: Mapping[str, str]) -> bool:
    return (coding["system"], coding["code"]) in codings(concept)


def uses_legacy(value: Any) -> bool:
    """Whether a JSON value mentions a URI of the earlier releases' ``urn:oncosurg:fhir`` namespace."""
    if isinstance(value, str):
        return value.startswith(tx.LEGACY)
    if isinstance(value, Mapping):
        return any(uses_legacy(v) for v in value.values())
    if isinstance(value, list):
        return any(uses_legacy(v) for v in value)
    return False


def date_text(value: Any) -> str:
    """The date part of a FHIR date or dateTime (``2005-01-10T09:00:00+01:00`` → ``2005-01-10``)."""
    text = str(value)
    return text[:10] if len(text) > 10 and text[10] == "T" else text


def number_text(value: Decimal) -> str:
    """A decimal as registry text: ``49`` for a whole number, else the shortest text of the nearest
    float (``4.9`` cm → ``49``; ``0.1`` mm stays ``0.1``; ``5e-324`` stays short)."""
    if value == value.to_integral_value() and abs(value) < Decimal("1e15"):
        return str(int(value))
    return repr(float(value))


def quantity_text(q: Any, unit: str) -> tuple[str | None, str | None]:
    """A Quantity in the registry's UCUM ``unit`` as registry text, converted when UCUM allows it.

    Returns ``(text, None)`` or ``(None, problem)``: no numeric value, a ``system`` other than UCUM,
    a unit code without its system, no unit code, or a unit that does not convert (e.g. ``in`` for a
    size in mm).
    """
    if not isinstance(q, Mapping):
        return None, "is not a Quantity"
    value = q.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None, "has no numeric value"
    system = q.get("system")
    if system is not None and system != tx.UCUM:
        return None, f"gives its unit in {system!r}, not UCUM ({tx.UCUM})"
    code = q.get("code") or (q.get("unit") if system == tx.UCUM else None)
    if code and system is None:  # FHIR qty-3: a unit code needs its system
        return None, f"gives the unit code {code!r} without its system (the registry reads UCUM, {tx.UCUM})"
    if not code:
        return None, f"gives no UCUM unit code (the registry records {unit!r})"
    factors = tx.UCUM_CONVERSIONS.get(unit, {unit: "1"})
    if code not in factors:
        accepted = ", ".join(repr(c) for c in factors)
        return None, f"is in {code!r}, which oncosurg does not convert to {unit!r} (accepted: {accepted})"
    try:
        exact = Decimal(repr(value)) * Decimal(factors[code])
    except InvalidOperation:  # pragma: no cover - value is a finite JSON number
        return None, "has no numeric value"
    return number_text(exact), None


@dataclass(frozen=True, slots=True)
class Drug:
    """What a medication concept is to the registry: an ``agent``, ``supportive`` care (ignored), or
    ``unknown`` (a coded drug outside the vocabulary, or no code oncosurg reads: refused)."""

    kind: str
    agent: str | None = None
    shown: str = ""


def drug(concept: Concept) -> Drug:
    """Classify a medication by its codes: the local agent code first, then ATC, then RxNorm."""
    found = codings(concept)
    text = str((concept or {}).get("text") or "") if isinstance(concept, Mapping) else ""
    agent = local(concept, "agent")
    if agent is not None:
        return Drug("agent", agent, agent)
    for system, code in found:
        if system == tx.ATC:
            named = {v: k for k, v in tx.AGENT_ATC.items()}.get(code) or tx.ATC_ALIASES.get(code)
            if named:
                return Drug("agent", named, f"ATC {code}")
            if code.startswith(tx.SUPPORTIVE_ATC):
                return Drug("supportive", None, f"ATC {code}")
            return Drug("unknown", None, f"ATC {code}" + (f" ({text})" if text else ""))
    for system, code in found:
        if system == tx.RXNORM:
            named = {v: k for k, v in tx.AGENT_RXNORM.items()}.get(code) or tx.RXNORM_ALIASES.get(code)
            if named:
                return Drug("agent", named, f"RxNorm {code}")
            if code in tx.SUPPORTIVE_RXNORM:
                return Drug("supportive", None, f"RxNorm {code} ({tx.SUPPORTIVE_RXNORM[code]})")
            return Drug("unknown", None, f"RxNorm {code}" + (f" ({text})" if text else ""))
    shown = ", ".join(f"{s or '?'}|{c}" for s, c in found) or (repr(text) if text else "no code")
    return Drug("unknown", None, shown)


def gene_ids(components: Iterable[Mapping[str, Any]]) -> list[str]:
    """HGNC ids of the "gene studied" components (LOINC 48018-6) of an observation (``HGNC:1097``; a bare
    ``1097`` in the HGNC system is read as ``HGNC:1097``).  A gene given another way (only as text, a
    symbol, another code system) is ``"?"``: the caller refuses it, since it may be a gene the registry
    records."""
    out = []
    for component in components:
        if not isinstance(component, Mapping) or not has(component.get("code"), tx.GENE_STUDIED):
            continue
        ids = [code if code.startswith("HGNC:") else f"HGNC:{code}"
               for system, code in codings(component.get("valueCodeableConcept"))
               if system == tx.HGNC and (code.startswith("HGNC:") or code.isdigit())]
        out += ids or ["?"]
    return out


def genes_unread(components: Iterable[Mapping[str, Any]]) -> list[tuple[int, str]]:
    """The "gene studied" components :func:`gene_ids` cannot read: (index, how they name the gene)."""
    out = []
    for i, component in enumerate(components):
        if not isinstance(component, Mapping) or gene_ids([component]) != ["?"]:
            continue
        value = component.get("valueCodeableConcept")
        text = value.get("text") if isinstance(value, Mapping) else None
        shown = ", ".join(f"{s or '?'}|{c}" for s, c in codings(value) if c)
        out.append((i, shown or repr(text or "no code")))
    return out


#: Answers read as a mutation status besides the local codes (LOINC present/absent, detected/not detected).
MUTATION_ANSWERS = {(tx.LOINC, "LA9633-4"): "mutant", (tx.LOINC, "LA9634-2"): "wild_type",
                    (tx.LOINC, "LA11882-0"): "mutant", (tx.LOINC, "LA11883-8"): "wild_type"}


def coded_text(concept: Concept, name: str, answers: Mapping[tuple[str, str], str] | None = None) -> str:
    """The registry code of a coded value: the local code, a known standard answer, else the codes as
    text (so that the registry's check names the value it does not know)."""
    code = local(concept, name)
    if code is not None:
        return code
    for pair in codings(concept):
        if answers and pair in answers:
            return answers[pair]
    found = codings(concept)
    if found:
        return " ".join(f"{s}|{c}" for s, c in found)
    return str((concept or {}).get("text") or "") if isinstance(concept, Mapping) else ""
