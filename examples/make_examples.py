"""Regenerate the example start/target structures (deterministic; the CIFs are committed).

python examples/make_examples.py
"""

from __future__ import annotations

import warnings
from pathlib import Path

from pymatgen.core import Structure

from aso_workflows.testing.generators import amorphize, jahn_teller_distort

HERE = Path(__file__).parent
DATA = HERE.parent / "aso_workflows" / "data"


def main() -> None:
    warnings.simplefilter("ignore")
    lin = Structure.from_file(DATA / "LiNiO2.cif")
    lin.make_supercell((2, 1, 1))  # 24 atoms: 6 NiO6 octahedra
    jt = jahn_teller_distort(lin, long=2.14, short=1.91, seed=1)
    for name in ("linio2_jt_pdf", "linio2_jt_exafs"):
        d = HERE / name
        d.mkdir(exist_ok=True)
        lin.to(filename=str(d / "start.cif"))
        jt.to(filename=str(d / "target.cif"))
    dia = Structure.from_file(DATA / "diamond.cif")
    dia.make_supercell((2, 1, 1))  # 16 atoms
    amo = amorphize(dia, displacement=0.5, min_distance=1.25, seed=3)
    d = HERE / "amorphous_carbon_pdf"
    d.mkdir(exist_ok=True)
    dia.to(filename=str(d / "start.cif"))
    amo.to(filename=str(d / "target.cif"))


if __name__ == "__main__":
    main()
