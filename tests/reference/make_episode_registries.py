"""Write the multi-episode registries of tests/reference/episodes/ (run by hand, then the R scripts).

    .venv/bin/python tests/reference/make_episode_registries.py
    Rscript tests/reference/comparisons_reference.R
    Rscript tests/reference/crlm_first_hepatectomy_reference.R

They are long registries (docs/registry-long.md, written by oncosurg.export.long), all synthetic:
the reference cohort with all its episodes (oncosurg.reference), and simulated registries
(tests/episode_registry.py): sim-1 without any effect of resection, sim-2 with a protective effect
(hazard ratio 0.5) and more referred patients, sim-3 with a harmful one (2.0); and ties, sim-2 with
the ties of exposure, event and entry dates (make_tie_registry.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from make_tie_registry import write_ties  # noqa: E402

from episode_registry import simulate  # noqa: E402
from oncosurg.export.long import write_long  # noqa: E402
from oncosurg.reference import reference_records  # noqa: E402

REGISTRIES = {
    "sim-1": dict(n=300, seed=1),
    "sim-2": dict(n=250, seed=2, effect=0.5, referred=0.3),
    "sim-3": dict(n=200, seed=3, effect=2.0, median_death=300.0, median_resection=90.0),
}

if __name__ == "__main__":
    write_long(reference_records(), HERE / "episodes" / "reference-cohort", overwrite=True)
    print(f"wrote {HERE / 'episodes' / 'reference-cohort'}")
    for name, kw in REGISTRIES.items():
        write_long(simulate(**kw), HERE / "episodes" / name, overwrite=True)  # type: ignore[arg-type]
        print(f"wrote {HERE / 'episodes' / name}")
    write_ties(HERE / "episodes" / "sim-2", HERE / "episodes" / "ties")
    print(f"wrote {HERE / 'episodes' / 'ties'}")
