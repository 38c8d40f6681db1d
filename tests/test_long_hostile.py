"""Hostile and malformed long registries: every issue at once, each with its file, line, column and rule."""

from __future__ import annotations

import datetime as dt
import io
import os
import zipfile
from pathlib import Path

import pytest

from oncosurg.ingest.long import MAX_MEMBERS, parse_long, read_long
from oncosurg.pathway.model import TABLES

PATIENTS = "centre,patient_id,referral\nC,P1,in_house\n"
CONTACTS = "centre,patient_id,contact_no,contact_date,vital_status\nC,P1,1,2008-01-01,alive\n"
LINES = "centre,patient_id,line_number,start_date,agents\nC,P1,1,2005-01-10,cetuximab\n"
PROCEDURES = "centre,patient_id,procedure_no,procedure_date,procedure_type,resected_segments,margin\n"
COMPLICATIONS = "centre,patient_id,procedure_no,complication_no,grade,complication_date\n"
BASE = {"patients.csv": PATIENTS, "contacts.csv": CONTACTS, "therapy_lines.csv": LINES}

Found = list[tuple[str, str | None, int | None, str | None]]


def _folder(tmp: Path, files: dict[str, str | bytes]) -> Path:
    folder = tmp / f"registry-{len(list(tmp.iterdir()))}"
    folder.mkdir()
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return folder


def found(tmp: Path, files: dict[str, str | bytes], **kw: object) -> Found:
    with read_long(_folder(tmp, {**BASE, **files}), today=dt.date(2024, 1, 1), **kw) as registry:
        assert registry.error_count == len(registry.issues)
        return [(i.code, i.file, i.line, i.column) for i in registry.issues]


def messages(tmp: Path, files: dict[str, str | bytes]) -> list[str]:
    with read_long(_folder(tmp, {**BASE, **files}), today=dt.date(2024, 1, 1)) as registry:
        return [i.format() for i in registry.issues]


def _zip(members: dict[str, bytes], **kw: object) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, **kw) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def zip_found(members: dict[str, bytes]) -> Found:
    with parse_long(_zip(members), source="r.zip", today=dt.date(2024, 1, 1)) as registry:
        return [(i.code, i.file, i.line, i.column) for i in registry.issues]


BASE_BYTES = {name: text.encode() for name, text in BASE.items()}


def test_a_clean_registry_has_no_issue(tmp_path: Path) -> None:
    assert found(tmp_path, {}) == []


# ------------------------------------------------------------------------------------------ files and encodings

def test_empty_file_and_header_only(tmp_path: Path) -> None:
    assert found(tmp_path, {"mdt_reviews.csv": ""}) == [("F101", "mdt_reviews.csv", None, None)]
    assert found(tmp_path, {"mdt_reviews.csv": "\n \n"}) == [("F101", "mdt_reviews.csv", None, None)]
    assert found(tmp_path, {"mdt_reviews.csv": ",".join(TABLES[2].columns) + "\n"}) == []


def test_binary_and_encoding_name_the_line(tmp_path: Path) -> None:
    assert found(tmp_path, {"contacts.csv": CONTACTS.encode() + b"C,P1,2,\x00\x01,alive\n"}) == [
        ("F103", "contacts.csv", 3, None)]
    latin = (LINES + "C,P1,2,2005-06-01,cetuximab\n").replace("C,P1,2", "Hôpital,P1,2").encode("latin-1")
    ((code, file, line, _),) = found(tmp_path, {"therapy_lines.csv": latin})
    assert (code, file, line) == ("F102", "therapy_lines.csv", 3)
    assert "0xf4" in messages(tmp_path, {"therapy_lines.csv": latin})[0]


def test_utf8_bom_and_crlf_are_accepted(tmp_path: Path) -> None:
    data = b"\xef\xbb\xbf" + CONTACTS.replace("\n", "\r\n").encode()
    assert found(tmp_path, {"contacts.csv": data}) == []
    assert found(tmp_path, {"contacts.csv": CONTACTS.replace("\n", "\r").encode()}) == []  # classic Mac endings


def test_utf8_error_beyond_the_first_chunk(tmp_path: Path) -> None:
    rows = "C,P1,1,2008-01-01,alive\n" * 60_000  # 1.4 MB: the bad byte is in the second chunk
    data = (CONTACTS + rows).encode() + b"C,P1,9,2005-02-0\xe9,alive\n"
    assert found(tmp_path, {"contacts.csv": data}) == [("F102", "contacts.csv", 60_003, None)]


def test_header_problems_are_all_reported_with_did_you_mean(tmp_path: Path) -> None:
    header = "centre,patient_id,contact_no,contact_dat,vital_status,grade,,vital_status,=cmd\n"
    got = found(tmp_path, {"contacts.csv": header})
    assert ("H201", "contacts.csv", 1, "contact_dat") in got
    assert ("H201", "contacts.csv", 1, "grade") in got
    assert ("H204", "contacts.csv", 1, None) in got
    assert ("H203", "contacts.csv", 1, "vital_status") in got
    assert ("V310", "contacts.csv", 1, "=cmd") in got
    assert ("H202", "contacts.csv", 1, "contact_date") in got
    text = "\n".join(messages(tmp_path, {"contacts.csv": header}))
    assert "did you mean 'contact_date'?" in text and "'grade' is a column of complications.csv" in text


def test_missing_key_column(tmp_path: Path) -> None:
    assert found(tmp_path, {"disease_events.csv": "centre,patient_id,event_date,event_kind\n"}) == [
        ("H202", "disease_events.csv", 1, "event_no")]


def test_unclosed_quote_and_semicolons_and_row_width(tmp_path: Path) -> None:
    got = found(tmp_path, {"contacts.csv": CONTACTS + 'C,P1,2,"2009-01-01,alive\nC,P1,3,2010-01-01,alive\n'})
    assert got == [("F104", "contacts.csv", 3, None)]
    got = found(tmp_path, {"contacts.csv": CONTACTS.replace(",", ";")})
    assert got == [("F104", "contacts.csv", 1, None)]
    got = found(tmp_path, {"contacts.csv": CONTACTS + "C,P1,2,2009-01-01\n"})
    assert got == [("F105", "contacts.csv", 3, None)]


def test_formula_injection_and_control_characters(tmp_path: Path) -> None:
    reviews = "centre,patient_id,review_no,review_date,decision,notes\n" \
              "C,P1,1,2005-01-01,resectable,=HYPERLINK(\"http://x\")\nC,P1,2,2005-02-01,resectable,a\x07b\n"
    assert found(tmp_path, {"mdt_reviews.csv": reviews}) == [
        ("V310", "mdt_reviews.csv", 2, "notes"), ("V313", "mdt_reviews.csv", 3, "notes")]
    got = found(tmp_path, {"patients.csv": PATIENTS + "C,-2+3,in_house\n"})
    assert ("V310", "patients.csv", 3, "patient_id") in got


def test_megabyte_cell_is_refused_briefly(tmp_path: Path) -> None:
    huge = "x" * (1 << 20)
    reviews = f"centre,patient_id,review_no,review_date,decision,notes\nC,P1,1,2005-01-01,resectable,{huge}\n"
    assert found(tmp_path, {"mdt_reviews.csv": reviews}) == [("V309", "mdt_reviews.csv", 2, "notes")]
    (text,) = messages(tmp_path, {"mdt_reviews.csv": reviews})
    assert len(text) < 400 and "1048576 characters" in text
    got = found(tmp_path, {"patients.csv": PATIENTS + f"C,{huge},in_house\n"})
    assert got == [("V309", "patients.csv", 3, "patient_id")]  # and no cascade from the unknown patient


def test_values_are_checked_per_table(tmp_path: Path) -> None:
    lines = LINES + "C,P1,2,2005-13-01,cetuximab;aspirin\nC,P1,x,,\n"
    assert found(tmp_path, {"therapy_lines.csv": lines}) == [
        ("V302", "therapy_lines.csv", 3, "start_date"), ("V306", "therapy_lines.csv", 3, "agents"),
        ("V303", "therapy_lines.csv", 4, "line_number"), ("V301", "therapy_lines.csv", 4, "agents")]
    assert found(tmp_path, {"contacts.csv": CONTACTS.replace("2008-01-01", "2031-01-01")}) == [
        ("V312", "contacts.csv", 2, "contact_date")]


def test_max_errors_keeps_the_first_and_counts_them_all(tmp_path: Path) -> None:
    rows = "".join(f"C,P1,{n},2005-01-01,maybe\n" for n in range(2, 102))
    with read_long(_folder(tmp_path, {**BASE, "contacts.csv": CONTACTS + rows}), max_errors=10) as registry:
        assert registry.error_count == 100 and len(registry.issues) == 10 and not registry.ok


# ------------------------------------------------------------------------------------------ folders and archives

def test_folder_without_patients_and_with_strangers(tmp_path: Path) -> None:
    folder = _folder(tmp_path, {"contacts.csv": CONTACTS, "complication.csv": COMPLICATIONS, "notes.txt": "hello",
                                "old/patients.csv": PATIENTS, ".DS_Store": b"\x00"})
    os.symlink("/etc/passwd", folder / "therapy_lines.csv")
    with read_long(folder) as registry:
        got = sorted((i.code, i.file) for i in registry.issues)
        text = "\n".join(i.format() for i in registry.issues)
    assert got == [("F109", "complication.csv"), ("F109", "notes.txt"), ("F109", "old"),
                   ("F109", "patients.csv"), ("F109", "therapy_lines.csv")]
    assert "did you mean 'complications.csv'?" in text and "symbolic link" in text and "sub-folder" in text


def test_missing_path_and_not_a_zip(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_long(tmp_path / "nothing")
    (tmp_path / "r.zip").write_bytes(b"PK\x03\x04 not really")
    with read_long(tmp_path / "r.zip") as registry:
        assert [i.code for i in registry.issues] == ["F110"]


def test_zip_with_a_top_folder_is_read_and_nested_folders_are_not() -> None:
    assert zip_found({f"export/{n}": d for n, d in BASE_BYTES.items()}) == []
    got = zip_found({**BASE_BYTES, "a/b/complications.csv": COMPLICATIONS.encode()})
    assert got == [("F109", "a/b/complications.csv", None, None)]


def test_zip_path_traversal_and_strangers() -> None:
    got = zip_found({**BASE_BYTES, "../mdt_reviews.csv": b"x", "/etc/cron.d/x": b"x", "..\\evil.csv": b"x",
                     "README.txt": b"hi", "Patients.csv": b"x", "__MACOSX/._patients.csv": b"\x00"})
    assert sorted(got) == sorted([("F110", "../mdt_reviews.csv", None, None), ("F110", "/etc/cron.d/x", None, None),
                                  ("F110", "..\\evil.csv", None, None), ("F109", "README.txt", None, None),
                                  ("F109", "Patients.csv", None, None)])


def test_zip_duplicate_member() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in BASE_BYTES.items():
            archive.writestr(name, data)
        with pytest.warns(UserWarning):
            archive.writestr("contacts.csv", CONTACTS.encode())
    with parse_long(buffer.getvalue()) as registry:
        assert [(i.code, i.file) for i in registry.issues] == [("F109", "contacts.csv")]


def test_zip_bomb_and_too_many_members() -> None:
    bomb = zip_found({**BASE_BYTES, "mdt_reviews.csv": b"0" * (50 << 20)})
    assert bomb == [("F110", "mdt_reviews.csv", None, None)]
    crowd = zip_found({f"x{i}.csv": b"" for i in range(MAX_MEMBERS + 1)})
    assert [c for c, *_ in crowd] == ["F110"]


def test_corrupt_zip_member_is_reported() -> None:
    data = bytearray(_zip({**BASE_BYTES, "mdt_reviews.csv": b"centre,patient_id,review_no\n" * 5000}))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        info = archive.getinfo("mdt_reviews.csv")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    middle = start + info.compress_size // 2
    data[middle:middle + 8] = bytes(b ^ 0xFF for b in data[middle:middle + 8])
    with parse_long(bytes(data)) as registry:
        assert ("F110", "mdt_reviews.csv") in [(i.code, i.file) for i in registry.issues]


# ------------------------------------------------------------------------------------------ rules across episodes

PROC = PROCEDURES + "C,P1,1,2005-06-01,hepatectomy,5;6,R0\n"
EVENTS = "centre,patient_id,event_no,event_date,event_kind\n"
DEAD = "centre,patient_id,contact_no,contact_date,vital_status\nC,P1,1,2007-01-01,dead\n"


@pytest.mark.parametrize(("files", "expected"), [
    ({"contacts.csv": CONTACTS + "C,P2,1,2008-01-01,alive\n"}, ("E601", "contacts.csv", 3, "patient_id")),
    ({"liver_procedures.csv": PROC, "complications.csv": COMPLICATIONS + "C,P1,9,1,II,\n"},
     ("E601", "complications.csv", 2, "procedure_no")),
    ({"mdt_reviews.csv": "centre,patient_id,review_no,review_date,decision,line_number\n"
                         "C,P1,1,2005-01-01,resectable,4\n"}, ("E601", "mdt_reviews.csv", 2, "line_number")),
    ({"contacts.csv": CONTACTS + "C,P1,1,2008-02-01,alive\n"}, ("E602", "contacts.csv", 3, "contact_no")),
    ({"disease_events.csv": EVENTS + "C,P1,1,2006-01-01,progression\nC,P1,2,2006-01-01,progression\n"},
     ("E603", "disease_events.csv", 3, "event_no")),
    ({"liver_procedures.csv": PROCEDURES + "C,P1,1,2005-09-01,two_stage_first,,\n"
                              "C,P1,2,2005-08-01,two_stage_second,,\n"},
     ("E604", "liver_procedures.csv", 3, "procedure_date")),
    ({"liver_procedures.csv": PROC, "complications.csv": COMPLICATIONS + "C,P1,1,1,II,2005-05-01\n"},
     ("E604", "complications.csv", 2, "complication_date")),
    ({"disease_events.csv": EVENTS + "C,P1,1,2009-01-01,progression\n"}, ("E604", "disease_events.csv", 2,
                                                                          "event_date")),
    ({"contacts.csv": DEAD, "disease_events.csv": EVENTS + "C,P1,1,2007-02-01,progression\n"},
     ("E604", "disease_events.csv", 2, "event_date")),
    ({"therapy_lines.csv": LINES + "C,P1,2,2004-01-01,irinotecan\n"}, ("E605", "therapy_lines.csv", 3, "start_date")),
    ({"therapy_lines.csv": LINES + "C,P1,2,,irinotecan\n"}, ("E605", "therapy_lines.csv", 3, "start_date")),
    ({"liver_procedures.csv": PROCEDURES + "C,P1,1,2005-06-01,ablation,,R0\n"},
     ("E606", "liver_procedures.csv", 2, "margin")),
    ({"liver_procedures.csv": PROCEDURES + "C,P1,1,2005-06-01,pve,,\n",
      "pathology.csv": "centre,patient_id,procedure_no,steatosis_pct\nC,P1,1,20\n"},
     ("E606", "pathology.csv", 2, "procedure_no")),
    ({"patients.csv": "centre,patient_id,referral,referral_date\nC,P1,referred,2005-03-01\n",
      "therapy_lines.csv": "centre,patient_id,line_number,start_date,agents,given_at\n"
                           "C,P1,1,2005-01-10,cetuximab,centre\n"},
     ("E607", "therapy_lines.csv", 2, "start_date")),
    ({"patients.csv": "centre,patient_id,referral,referral_date\nC,P1,in_house,2005-03-01\n"},
     ("E607", "patients.csv", 2, "referral_date")),
    ({"liver_procedures.csv": PROC, "complications.csv": COMPLICATIONS + "C,P1,1,1,V,\n"},
     ("E608", "complications.csv", 2, "grade")),
    ({"contacts.csv": DEAD + "C,P1,2,2008-01-01,alive\n"}, ("E609", "contacts.csv", 3, "contact_date")),
    ({"contacts.csv": DEAD + "C,P1,2,2006-01-01,dead\n"}, ("E609", "contacts.csv", 3, "vital_status")),
    ({"contacts.csv": "centre,patient_id,contact_no,contact_date,vital_status\n"},
     ("E609", "patients.csv", 2, "patient_id")),
    ({"disease_events.csv": EVENTS + "C,P1,1,2006-01-01,recurrence\n"},
     ("E610", "disease_events.csv", 2, "event_kind")),
    ({"patients.csv": PATIENTS + "C,P1,referred\n"}, ("X410", "patients.csv", 3, "patient_id")),
])
def test_each_rule_across_episodes_names_file_and_line(tmp_path: Path, files: dict[str, str],
                                                       expected: tuple[str, str, int, str]) -> None:
    got = found(tmp_path, files)
    assert expected in got
    text = next(m for m in messages(tmp_path, files) if f"[{expected[0]} " in m)
    assert text.startswith(f"{expected[1]}:{expected[2]}: column '{expected[3]}'")


@pytest.mark.parametrize(("files", "expected"), [
    # an unreadable procedure date: its complication and the recurrence after it are not judged
    ({"liver_procedures.csv": PROCEDURES + "C,P1,1,2005-06-31,hepatectomy,5;6,R0\n",
      "complications.csv": COMPLICATIONS + "C,P1,1,1,II,2005-05-01\n",
      "disease_events.csv": EVENTS + "C,P1,1,2006-01-01,recurrence\n"},
     [("V302", "liver_procedures.csv", 2, "procedure_date")]),
    # an unreadable procedure number: complications naming procedure 1 are no orphans
    ({"liver_procedures.csv": PROCEDURES + "C,P1,one,2005-06-01,hepatectomy,5;6,R0\n",
      "complications.csv": COMPLICATIONS + "C,P1,1,1,II,2005-06-02\n"},
     [("V303", "liver_procedures.csv", 2, "procedure_no")]),
    # an unreadable contact date: nothing is "after the last contact"
    ({"contacts.csv": CONTACTS + "C,P1,2,2009-02-30,alive\n",
      "disease_events.csv": EVENTS + "C,P1,1,2008-06-01,progression\n"},
     [("V302", "contacts.csv", 3, "contact_date")]),
    # an unknown procedure type: neither the margin nor the pathology is judged
    ({"liver_procedures.csv": PROCEDURES + "C,P1,1,2005-06-01,hepatectomie,5;6,R0\n",
      "pathology.csv": "centre,patient_id,procedure_no,steatosis_pct\nC,P1,1,20\n"},
     [("V306", "liver_procedures.csv", 2, "procedure_type")]),
    # an invalid patient_id: no orphan report for the patient's rows
    ({"contacts.csv": CONTACTS + "C,P 2,1,2008-01-01,alive\n"}, [("V308", "contacts.csv", 3, "patient_id")]),
    # a ragged row is left out: its patient is not judged incomplete (no "no contact")
    ({"contacts.csv": "centre,patient_id,contact_no,contact_date,vital_status\nC,P1,1,2008-01-01,alive,x\n"},
     [("F105", "contacts.csv", 2, None)]),
    # a broken file: no rule across files (its rows are missing, not wrong)
    ({"contacts.csv": 'centre,patient_id,contact_no,contact_date,vital_status\nC,P1,1,"2008-01-01,alive\n'},
     [("F104", "contacts.csv", 2, None)]),
])
def test_no_cascade_from_a_value_that_failed(tmp_path: Path, files: dict[str, str], expected: Found) -> None:
    assert found(tmp_path, files) == expected
