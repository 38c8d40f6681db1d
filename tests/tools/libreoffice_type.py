"""Type text into cells of a workbook in LibreOffice Calc, as a user would, and save it as .xlsx.

Run by the system Python (which has LibreOffice's ``uno`` module), not the project's virtualenv:

    python3 libreoffice_type.py PIPE SOURCE.xlsx TARGET.xlsx SHEET!A5=text …

It connects to a headless ``soffice`` listening on the named pipe PIPE, opens SOURCE, enters each
text with Calc's own input command (``.uno:EnterString`` on the cell, exactly what typing and
pressing Enter does: number recognition, the cell's number format), saves TARGET in Excel 2007+
format and closes LibreOffice.
"""

import contextlib
import sys
import time

import uno  # LibreOffice's Python bridge (Debian: python3-uno)
from com.sun.star.beans import PropertyValue


def prop(name, value):
    p = PropertyValue()
    p.Name, p.Value = name, value
    return p


def main(pipe, source, target, edits):
    local = uno.getComponentContext()
    resolver = local.ServiceManager.createInstanceWithContext("com.sun.star.bridge.UnoUrlResolver", local)
    deadline = time.monotonic() + 60
    while True:
        try:
            ctx = resolver.resolve(f"uno:pipe,name={pipe};urp;StarOffice.ComponentContext")
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    smgr = ctx.ServiceManager
    desktop = smgr.createInstanceWithContext("com.sun.star.frame.Desktop", ctx)
    doc = desktop.loadComponentFromURL(uno.systemPathToFileUrl(source), "_blank", 0, (prop("Hidden", True),))
    dispatcher = smgr.createInstanceWithContext("com.sun.star.frame.DispatchHelper", ctx)
    controller = doc.getCurrentController()
    frame = controller.getFrame()
    for edit in edits:
        place, text = edit.split("=", 1)
        sheet, cell = place.split("!")
        controller.setActiveSheet(doc.Sheets.getByName(sheet))
        dispatcher.executeDispatch(frame, ".uno:GoToCell", "", 0, (prop("ToPoint", cell),))
        dispatcher.executeDispatch(frame, ".uno:EnterString", "", 0, (prop("StringName", text),))
    doc.storeToURL(uno.systemPathToFileUrl(target), (prop("FilterName", "Calc MS Excel 2007 XML"),))
    doc.close(True)
    with contextlib.suppress(Exception):  # the bridge closes as LibreOffice exits
        desktop.terminate()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])
