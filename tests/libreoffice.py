"""LibreOffice Calc, driven headless, for the tests of what a data manager does to an exported workbook.

:func:`type_cells` opens a workbook in LibreOffice, types text into cells through Calc's own input
command (so number recognition and the cells' formats apply, exactly as when typing) and saves it as
.xlsx.  It needs ``soffice`` and the system Python's ``uno`` module (Debian: libreoffice-calc,
python3-uno; ``.ci/run`` installs them).  Tests using it are marked ``libreoffice``; they skip when
LibreOffice is missing, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

TOOL = Path(__file__).parent / "tools" / "libreoffice_type.py"
SYSTEM_PYTHON = "/usr/bin/python3"


def missing() -> str | None:
    """Why LibreOffice cannot be driven here (``None`` when it can)."""
    if shutil.which("soffice") is None:
        return "soffice not found (apt-get install libreoffice-calc)"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import uno"], capture_output=True)
    if probe.returncode != 0:
        return "the system Python has no 'uno' module (apt-get install python3-uno)"
    return None


def require() -> None:
    """Skip the test when LibreOffice is missing; under CI=true fail instead (CI must run it)."""
    reason = missing()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(reason + " (under CI=true the LibreOffice tests must run; .ci/run installs it)")
    pytest.skip(reason)


def type_cells(source: Path, target: Path, edits: list[str], workdir: Path) -> None:
    """Type ``edits`` (``SHEET!A5=text``) into ``source`` in LibreOffice and save the result as ``target``."""
    soffice = shutil.which("soffice")
    assert soffice is not None
    pipe = f"oncosurg_test_{uuid.uuid4().hex}"
    profile = workdir / "libreoffice-profile"
    office = subprocess.Popen([soffice, "--headless", "--invisible", "--norestore", "--nologo", "--nodefault",
                               f"-env:UserInstallation={profile.as_uri()}", f"--accept=pipe,name={pipe};urp;"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        done = subprocess.run([SYSTEM_PYTHON, str(TOOL), pipe, str(source), str(target), *edits],
                              capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-2000:]
        office.wait(timeout=60)
    finally:
        if office.poll() is None:
            office.kill()
            office.wait()
