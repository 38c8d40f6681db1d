"""Where numba keeps the compiled survival kernels, and a writable place when the package is read-only.

Every ``@njit`` function of :mod:`oncosurg.stats` is compiled with ``cache=True``: the first run
compiles (about 10 s of CPU for the kernels the demo uses) and writes the machine code next to the
sources (``oncosurg/stats/__pycache__/*.nbi``/``*.nbc``); later runs load it in milliseconds.
numba falls back to ``~/.cache/numba`` when the package folder is read-only; when neither is
writable (a read-only image, a locked-down home), :func:`ensure_writable_cache` points
``NUMBA_CACHE_DIR`` at a folder of the temporary directory so caching still works instead of failing
at import.  Nothing here imports numba.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def _writable(folder: Path) -> bool:
    """Whether ``folder`` (or, when missing, its nearest existing parent) accepts new files."""
    while not folder.exists():
        if folder.parent == folder:
            return False
        folder = folder.parent
    return os.access(folder, os.W_OK | os.X_OK)


def user_cache_dir() -> Path:
    """numba's user-wide fallback (``$XDG_CACHE_HOME/numba``, else ``~/.cache/numba``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return Path(base) / "numba"


def ensure_writable_cache() -> str | None:
    """Set ``NUMBA_CACHE_DIR`` to a temporary folder when numba would have nowhere to cache; returns it."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return None
    if _writable(PACKAGE_DIR / "__pycache__") or _writable(user_cache_dir()):
        return None
    folder = Path(tempfile.gettempdir()) / f"oncosurg-numba-cache-{os.getuid() if hasattr(os, 'getuid') else 0}"
    os.environ["NUMBA_CACHE_DIR"] = str(folder)
    return str(folder)


def kernels_cached(module: str = "km") -> bool:
    """Whether the kernels of ``oncosurg.stats.<module>`` were compiled and cached by an earlier run.

    Used for progress messages only ("first run: compiling …"), so a wrong guess costs nothing.
    """
    roots = [Path(os.environ["NUMBA_CACHE_DIR"])] if os.environ.get("NUMBA_CACHE_DIR") else \
        [PACKAGE_DIR / "__pycache__", user_cache_dir()]
    return any(root.is_dir() and next(root.rglob(f"{module}.*.nbi"), None) is not None for root in roots)
