"""Offline FHIR conformance checks: strict R4 (the official JSON Schema) and IG profiles (snapshots).

Two checkers, both reading only definitions fetched at setup time (``tests/fhir_packages.py``):

* :class:`R4Schema` validates every resource of a bundle against the FHIR R4 (4.0.1) JSON Schema,
  resource by resource (``#/definitions/<type>``): unknown elements, types, primitive formats,
  codes of required bindings the schema enumerates, and resource types (R4B-only types fail).
  It does not evaluate invariants nor cross-field rules, and dates are checked by pattern only.
* :class:`ProfileChecker` validates each resource against the StructureDefinition snapshots of the
  profiles in its ``meta.profile`` (mCODE STU4): cardinality (choice types included), fixed and
  pattern values, slicing with ``value``/``pattern`` discriminators on ``url``, ``code`` and
  ``$this`` (slice cardinality, closed slicing), required bindings whose ValueSet expands locally
  (mCODE's own, R4 core's from FHIR.js, US Core's problem-or-health-concern from a hand-written
  copy in ``tests/fixtures/fhir``), error invariants (FHIRPath, with ``fhirpathpy``) and extensions
  whose definition is loaded.  Not covered: ``ele-1`` (fhirpathpy lacks ``hasValue()``; the
  schema covers empty elements partly), discriminators of type ``type``/``profile``/``exists``,
  reference targets, and bindings to ValueSets defined by filters (SNOMED CT hierarchies).

Adapted from the feasibility spike of issue 14 (it caught 5/5 profile violations with no false
error on the IG's 54 examples of the profiles oncosurg claims; ``test_fhir_conformance.py`` keeps
both figures as tests).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import fhirpathpy.engine.invocations.misc as _fp_misc
import jsonschema
from fhirpathpy import apply_parsed_path
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models
from fhirpathpy.parser import parse

R4 = models["r4"]
_fp_misc.print = lambda *a, **k: None  # US Core invariants call trace(): keep the test output clean
Issues = list[tuple[str, str]]


@functools.cache
def _parsed(expression: str) -> Any:
    """A FHIRPath expression parsed once (parsing is most of fhirpathpy's time)."""
    return parse(expression)


def evaluate(value: Any, base: str, expression: str, resource: Mapping[str, Any]) -> list[Any]:
    """``fhirpathpy.evaluate`` with the parse cached; ``base`` types the value (so ``value[x]`` resolves)."""
    node = ResourceNode.create_node(value, base)
    return apply_parsed_path(node, _parsed(expression), {"resource": resource, "rootResource": resource}, R4)


class Definitions:
    """StructureDefinitions, ValueSets and CodeSystems by canonical URL, with local expansion."""

    def __init__(self) -> None:
        self.sds: dict[str, dict[str, Any]] = {}
        self.valuesets: dict[str, dict[str, Any]] = {}
        self.codesystems: dict[str, dict[str, Any]] = {}
        self._expanded: dict[str, set[tuple[str | None, str]] | None] = {}
        self.skipped_bindings: set[str] = set()
        self.skipped_invariants: dict[str, str] = {}

    def load_dir(self, folder: Path) -> None:
        for path in sorted(folder.glob("*.json")):
            if path.name.startswith(("StructureDefinition-", "ValueSet-", "CodeSystem-")):
                self.add(json.loads(path.read_text(encoding="utf-8")))

    def load_fhirjs_valuesets(self, path: Path) -> None:
        """FHIR.js ``profiles/valuesets.json``: ``{url: {"systems": [{"uri", "codes": [{"code"}]}]}}``."""
        for url, vs in json.loads(path.read_text(encoding="utf-8")).items():
            if isinstance(vs, dict) and "systems" in vs and url not in self.valuesets:
                self._expanded[url] = {(s["uri"], c["code"]) for s in vs["systems"]
                                       for c in s.get("codes", [])} or None

    def add(self, resource: Mapping[str, Any]) -> None:
        table = {"StructureDefinition": self.sds, "ValueSet": self.valuesets, "CodeSystem": self.codesystems}
        if resource.get("url") and resource.get("resourceType") in table:
            table[resource["resourceType"]].setdefault(resource["url"], dict(resource))

    def expand(self, url: str, depth: int = 0) -> set[tuple[str | None, str]] | None:
        """``{(system, code)}`` of a ValueSet, or ``None`` when it cannot be expanded locally."""
        url = url.split("|")[0]
        if url in self._expanded:
            return self._expanded[url]
        vs = self.valuesets.get(url)
        result: set[tuple[str | None, str]] | None = None
        if vs is not None and depth < 10:
            contains = vs.get("expansion", {}).get("contains")
            if contains:
                result, stack = set(), list(contains)
                while stack:
                    c = stack.pop()
                    if "code" in c:
                        result.add((c.get("system"), c["code"]))
                    stack += c.get("contains", [])
            else:
                result = self._compose(vs.get("compose", {}), depth)
        self._expanded[url] = result
        return result

    def _include(self, inc: Mapping[str, Any], depth: int) -> set[tuple[str | None, str]] | None:
        if inc.get("filter"):
            return None
        codes: set[tuple[str | None, str]] | None = None
        system = inc.get("system")
        if system:
            if inc.get("concept"):
                codes = {(system, c["code"]) for c in inc["concept"]}
            else:
                cs = self.codesystems.get(system)
                if cs is None or cs.get("content") not in (None, "complete"):
                    return None
                codes, stack = set(), list(cs.get("concept", []))
                while stack:
                    c = stack.pop()
                    codes.add((system, c["code"]))
                    stack += c.get("concept", [])
        for ref in inc.get("valueSet", []):
            sub = self.expand(ref, depth + 1)
            if sub is None:
                return None
            codes = sub if codes is None else codes & sub
        return codes

    def _compose(self, compose: Mapping[str, Any], depth: int) -> set[tuple[str | None, str]] | None:
        out: set[tuple[str | None, str]] = set()
        for inc in compose.get("include", []):
            part = self._include(inc, depth)
            if part is None:
                return None
            out |= part
        for exc in compose.get("exclude", []):
            part = self._include(exc, depth)
            if part is None:
                return None
            out -= part
        return out


def _matches(value: Any, pattern: Any) -> bool:
    """FHIR pattern matching: the value holds at least what the pattern holds."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(k in value and _matches(value[k], v) for k, v in pattern.items())
    if isinstance(pattern, list):
        return isinstance(value, list) and all(any(_matches(v, p) for v in value) for p in pattern)
    return value == pattern


def _fixed_or_pattern(el: Mapping[str, Any]) -> tuple[str | None, Any]:
    for k, v in el.items():
        if k.startswith("fixed") and k != "fixed":
            return "fixed", v
        if k.startswith("pattern") and k != "pattern":
            return "pattern", v
    return None, None


def _walk(value: Any, path: str) -> list[Any]:
    """Values at a dotted sub-path (discriminator paths such as ``url``, ``code``, ``$this``)."""
    if path in ("$this", ""):
        return [value]
    found = [value]
    for part in path.split("."):
        nxt: list[Any] = []
        for v in found:
            if isinstance(v, dict) and part in v:
                x = v[part]
                nxt += x if isinstance(x, list) else [x]
        found = nxt
    return found


class ProfileChecker:
    """Validates resources against the snapshots of the profiles they claim."""

    def __init__(self, definitions: Definitions) -> None:
        self.defs = definitions
        self._trees: dict[str, tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]] = {}

    def _tree(self, sd: Mapping[str, Any]) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]:
        url = sd["url"]
        if url not in self._trees:
            elements = sd["snapshot"]["element"]
            children: dict[str, list[dict[str, Any]]] = {}
            slices: dict[str, list[dict[str, Any]]] = {}
            for e in elements:
                eid = e["id"]
                if "." not in eid:
                    continue
                parent, last = eid.rsplit(".", 1)
                if ":" in last:  # a slice: attached to the sliced element, not a child
                    if "." not in last.split(":", 1)[1]:
                        slices.setdefault(eid.rsplit(":", 1)[0], []).append(e)
                    continue
                children.setdefault(parent, []).append(e)
            self._trees[url] = (children, slices)
        return self._trees[url]

    def validate(self, resource: Mapping[str, Any], sd: Mapping[str, Any]) -> Issues:
        if resource.get("resourceType") != sd["type"]:
            return [(sd["type"], f"resourceType {resource.get('resourceType')!r} is not {sd['type']}")]
        issues: Issues = []
        root = sd["snapshot"]["element"][0]
        self._element(resource, root, root["id"], sd["type"], resource, sd, issues)
        return issues

    @staticmethod
    def _values(parent: Mapping[str, Any], el: Mapping[str, Any]) -> list[Any]:
        name = el["path"].rsplit(".", 1)[-1]
        if name.endswith("[x]"):
            stem = name[:-3]
            return [parent[key] for t in el.get("type", [])
                    if (key := stem + t["code"][0].upper() + t["code"][1:]) in parent]
        v = parent.get(name)
        if v is None:
            return []
        return v if isinstance(v, list) else [v]

    def _element(self, value: Any, el: Mapping[str, Any], eid: str, where: str, resource: Mapping[str, Any],
                 sd: Mapping[str, Any], issues: Issues) -> None:
        self._invariants(value, el, where, resource, issues)
        kind, want = _fixed_or_pattern(el)
        if kind == "fixed" and value != want:
            issues.append((where, f"must equal the fixed value {json.dumps(want)}"))
        elif kind == "pattern" and not _matches(value, want):
            issues.append((where, f"must match the pattern {json.dumps(want)}"))
        self._binding(value, el, where, issues)
        for t in el.get("type", []):  # a profiled type (extension, identifier…) whose definition is loaded
            for profile in t.get("profile", []):
                psd = self.defs.sds.get(profile.split("|")[0])
                if psd is None or psd.get("derivation") != "constraint" or not isinstance(value, dict):
                    continue
                if psd["type"] == "Extension" and value.get("url") != psd["url"]:
                    continue  # an extension slot holding another extension
                root = psd["snapshot"]["element"][0]
                self._element(value, root, root["id"], where, resource, psd, issues)
        if not isinstance(value, dict):
            return
        children, slices = self._tree(sd)
        for child in children.get(eid, []):
            found = self._values(value, child)
            path = f"{where}.{child['path'].rsplit('.', 1)[-1].replace('[x]', '')}"
            self._cardinality(len(found), child, path, issues)
            assigned: dict[int, dict[str, Any]] = {}
            if child.get("slicing") and slices.get(child["id"]):
                assigned = self._slice(found, child, slices[child["id"]], path, issues, children)
            for i, v in enumerate(found):
                vpath = f"{path}[{i}]" if child.get("max") != "1" else path
                self._element(v, child, child["id"], vpath, resource, sd, issues)
                if i in assigned:
                    self._element(v, assigned[i], assigned[i]["id"], vpath, resource, sd, issues)

    def _invariants(self, value: Any, el: Mapping[str, Any], where: str, resource: Mapping[str, Any],
                    issues: Issues) -> None:
        for c in el.get("constraint", []):
            if c.get("severity") != "error" or not c.get("expression"):
                continue
            if c["key"] in self.defs.skipped_invariants or (c["key"] == "ele-1" and not isinstance(value, dict)):
                continue
            types = [t["code"] for t in el.get("type", [])]  # the element's type, so value[x] resolves
            base = types[0] if len(types) == 1 and types[0] not in ("BackboneElement", "Element") else el["path"]
            if "." not in el["path"] and el["path"] == resource.get("resourceType"):
                base = el["path"]
            try:
                ok = evaluate(value, base, c["expression"], resource)
            except Exception as exc:  # e.g. hasValue() (ele-1) is not implemented in fhirpathpy
                self.defs.skipped_invariants[c["key"]] = str(exc)[:80]
                continue
            if ok == [False]:
                issues.append((where, f"invariant {c['key']} failed: {c.get('human', '')}"))

    @staticmethod
    def _cardinality(n: int, el: Mapping[str, Any], path: str, issues: Issues) -> None:
        if n < el.get("min", 0):
            issues.append((path, f"minimum cardinality {el['min']} not met (found {n})"))
        most = el.get("max", "*")
        if most != "*" and n > int(most):
            issues.append((path, f"maximum cardinality {most} exceeded (found {n})"))

    def _slice(self, found: list[Any], el: Mapping[str, Any], slice_els: list[dict[str, Any]], path: str,
               issues: Issues, children: Mapping[str, list[dict[str, Any]]]) -> dict[int, dict[str, Any]]:
        discriminators = el["slicing"].get("discriminator", [])
        assigned: dict[int, dict[str, Any]] = {}
        counts = {s["sliceName"]: 0 for s in slice_els}
        for i, v in enumerate(found):
            for s in slice_els:
                if self._in_slice(v, s, discriminators, children):
                    assigned[i] = s
                    counts[s["sliceName"]] += 1
                    break
            else:
                if el["slicing"].get("rules") == "closed":
                    issues.append((f"{path}[{i}]", "matches no slice of a closed slicing"))
        for s in slice_els:
            self._cardinality(counts[s["sliceName"]], s, f"{path}:{s['sliceName']}", issues)
        return assigned

    def _in_slice(self, v: Any, s: Mapping[str, Any], discriminators: list[Mapping[str, Any]],
                  children: Mapping[str, list[dict[str, Any]]]) -> bool:
        for d in discriminators:
            if d["type"] not in ("value", "pattern"):
                return False
            target = s if d["path"] == "$this" else next(
                (c for c in children.get(s["id"], []) if c["path"].endswith("." + d["path"])), None)
            if target is None:  # the discriminator may be fixed by the slice's type profile
                for t in s.get("type", []):
                    for profile in t.get("profile", []):
                        psd = self.defs.sds.get(profile.split("|")[0])
                        path = f"{psd['type']}.{d['path']}" if psd else None
                        target = target or next((e for e in (psd or {}).get("snapshot", {}).get("element", [])
                                                 if e["path"] == path), None)
            if target is None:
                return False
            _, want = _fixed_or_pattern(target)
            got = _walk(v, d["path"])
            if want is not None:
                if not any(_matches(g, want) for g in got):
                    return False
            elif target.get("binding", {}).get("strength") == "required":
                codes = self.defs.expand(target["binding"]["valueSet"])
                if codes is None or not any(self._coded_in(g, codes) for g in got):
                    return False
            else:
                return False
        return True

    @staticmethod
    def _coded_in(value: Any, codes: set[tuple[str | None, str]]) -> bool:
        if isinstance(value, str):
            return any(c == value for _, c in codes)
        if isinstance(value, dict) and "code" in value:
            return (value.get("system"), value["code"]) in codes
        if isinstance(value, dict):
            return any((c.get("system"), c.get("code")) in codes for c in value.get("coding", []))
        return False

    def _binding(self, value: Any, el: Mapping[str, Any], where: str, issues: Issues) -> None:
        b = el.get("binding")
        if not b or b.get("strength") != "required" or not b.get("valueSet"):
            return
        coded = {"code", "Coding", "CodeableConcept", "Quantity", "string", "uri"}
        if not {t["code"] for t in el.get("type", [])} & coded:
            return
        codes = self.defs.expand(b["valueSet"])
        if codes is None:
            self.defs.skipped_bindings.add(b["valueSet"].split("|")[0])
            return
        if isinstance(value, dict) and "coding" in value and not value.get("coding"):
            return
        if not self._coded_in(value, codes):
            issues.append((where, f"code not in the required value set {b['valueSet']}"))


def bundle_resources(bundle: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    entries = bundle.get("entry", []) if bundle.get("resourceType") == "Bundle" else [{"resource": bundle}]
    for i, e in enumerate(entries):
        if isinstance(e.get("resource"), dict):
            yield f"entry[{i}]", e["resource"]


#: The R4 schema's patterns that use ``\\s``/``\\S``, as FHIR defines them: XML Schema regular
#: expressions, where whitespace is only space, tab, CR and LF.  Read by Python's ``re`` (or
#: ECMAScript) they would also count U+00A0 and other spaces as whitespace and refuse a FHIR string
#: holding a no-break space.
_XSD_PATTERNS = {
    r"^[ \r\n\t\S]+$": r"^[\s\S]+$",  # string, markdown: any character, at least one
    r"^[^\s]+(\s[^\s]+)*$": r"^[^ \t\n\r]+([ \t\n\r][^ \t\n\r]+)*$",  # code
    r"^\S*$": r"^[^ \t\n\r]*$",  # uri
    r"^(\s*([0-9a-zA-Z\+/=]){4}\s*)+$": r"^([ \t\n\r]*([0-9a-zA-Z\+/=]){4}[ \t\n\r]*)+$",  # base64Binary
}


def _xsd_whitespace(schema: Any) -> Any:
    """The schema with :data:`_XSD_PATTERNS` applied (any other whitespace pattern is an error)."""
    if isinstance(schema, dict):
        out = {}
        for k, v in schema.items():
            if k == "pattern" and isinstance(v, str):
                if ("\\s" in v or "\\S" in v) and v not in _XSD_PATTERNS:
                    raise ValueError(f"R4 schema pattern {v!r}: give its XML Schema reading in _XSD_PATTERNS")
                out[k] = _XSD_PATTERNS.get(v, v)
            else:
                out[k] = _xsd_whitespace(v)
        return out
    if isinstance(schema, list):
        return [_xsd_whitespace(v) for v in schema]
    return schema


class R4Schema:
    """Strict FHIR R4 (4.0.1) structure: the official JSON Schema, resource by resource."""

    def __init__(self, path: Path) -> None:
        self.schema = _xsd_whitespace(json.loads(path.read_text(encoding="utf-8")))
        self.types = set(self.schema["discriminator"]["mapping"])
        self._cls = jsonschema.validators.validator_for(self.schema)
        self._validators: dict[str, Any] = {}

    def _validator(self, kind: str) -> Any:
        if kind not in self._validators:
            self._validators[kind] = self._cls({"$ref": f"#/definitions/{kind}",
                                                "definitions": self.schema["definitions"]})
        return self._validators[kind]

    def check(self, resource: Mapping[str, Any], where: str = "$") -> Issues:
        kind = resource.get("resourceType")
        if kind not in self.types:
            return [(where, f"unknown R4 resourceType {kind!r}")]
        shallow = resource
        if kind == "Bundle":  # each entry's resource is checked by its own type (no 146-way oneOf)
            shallow = dict(resource, entry=[{k: v for k, v in e.items() if k != "resource"}
                                            for e in resource.get("entry", [])])
        out = [(where + e.json_path[1:], jsonschema.exceptions.best_match([e]).message)
               for e in self._validator(str(kind)).iter_errors(shallow)]
        if kind == "Bundle":
            for i, e in enumerate(resource.get("entry", [])):
                if isinstance(e.get("resource"), dict):
                    out += self.check(e["resource"], f"{where}.entry[{i}].resource")
        return out


class Conformance:
    """Both checkers over the definitions of a cache folder written by ``tests/fhir_packages.py``."""

    def __init__(self, cache: Path, shims: Path, extra: list[Mapping[str, Any]] = ()) -> None:  # type: ignore[assignment]
        self.defs = Definitions()
        self.defs.load_dir(cache / "hl7.fhir.us.mcode" / "package")
        self.defs.load_dir(shims)
        self.defs.load_fhirjs_valuesets(cache / "fhir" / "package" / "profiles" / "valuesets.json")
        for resource in extra:
            self.defs.add(resource)
        self.profiles = ProfileChecker(self.defs)
        self.schema = R4Schema(cache / "@asymmetrik+fhir-json-schema-validator" / "package" / "fhir.schema.json")

    def profile_issues(self, bundle: Mapping[str, Any]) -> Issues:
        out: Issues = []
        for where, resource in bundle_resources(bundle):
            for url in resource.get("meta", {}).get("profile", []):
                sd = self.defs.sds.get(url.split("|")[0])
                if sd is None:
                    out.append((where, f"profile {url} is not loaded"))
                    continue
                out += [(f"{where} {sd['name']}: {p}", m) for p, m in self.profiles.validate(resource, sd)]
        return out

    def issues(self, bundle: Mapping[str, Any]) -> Issues:
        """Strict-R4 and profile issues of a bundle (empty when it conforms)."""
        return self.schema.check(bundle) + self.profile_issues(bundle)
