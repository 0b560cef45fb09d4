"""Bond restraints: windows and bond-valence sums on the start's bonds; the bond table of the report."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Structure
from test_symmetry import ideal_lamno3

from aso_workflows.config import load_config
from aso_workflows.errors import InputError
from aso_workflows.restraints import BondValence, Restraints, bond_table
from aso_workflows.symmetry import symmetry_constraints


def _distorted() -> tuple[Structure, Structure]:
    start = ideal_lamno3()
    c = symmetry_constraints(start, "Pbnm")
    p = np.array([-0.0084, 0.0489, 0.0743, -0.0124, -0.0247, 0.0556, 0.0392])  # PDFgui's LaMnO3, 10 K
    return start, Structure(start.lattice, start.species, c.positions(p))


def test_windows_and_bond_valence_sums_follow_the_starts_bonds():
    torch = pytest.importorskip("torch")
    start, refined = _distorted()
    r = Restraints(
        bonds={"Mn-O": (1.85, 2.25)}, bvs={"Mn-O": BondValence(valence=3.0, r0=1.760, tolerance=0.5)}
    )
    compiled = r.compile(start)
    assert compiled.ok(start) and compiled.ok(refined)  # the JT split 1.91–2.18 Å fits the window
    strict = Restraints(bvs={"Mn-O": BondValence(valence=3.0, r0=1.760, tolerance=0.2)}).compile(start)
    assert strict.ok(refined) and strict.violations(start) == [  # the ideal start is over-bonded
        "Mn-O bond-valence sum(s) 3.41–3.41, expected 3 ± 0.2"
    ]
    tight = Restraints(bonds={"Mn-O": (1.90, 2.05)}).compile(start)
    (line,) = tight.violations(refined)
    assert line.startswith("Mn-O bond(s) outside [1.9, 2.05] Å: ") and "2.176" in line
    pos = torch.tensor(np.stack([start.cart_coords, refined.cart_coords]), requires_grad=True)
    lat = torch.tensor(np.stack([start.lattice.matrix] * 2))
    penalty = tight.penalty(pos, lat)
    assert float(penalty[0].detach()) == 0.0 and float(penalty[1].detach()) > 0
    penalty.sum().backward()
    assert float(pos.grad.abs().sum()) > 0  # the proposals can follow it back into the window
    # atoms wrapped into the cell keep their bonds (the same 24 Mn–O bonds whatever the wrapping)
    wrapped = Structure(refined.lattice, refined.species, refined.frac_coords + 1.0, to_unit_cell=True)
    assert tight.violations(wrapped) == tight.violations(refined)


def test_the_bond_table_sets_the_best_beside_the_start_and_flags_what_left_its_window():
    start, refined = _distorted()
    rows = {b["pair"]: b for b in bond_table(refined, start)}
    mn_o = rows["Mn-O"]
    assert mn_o["n"] == 24 and mn_o["best"][0] == pytest.approx(1.912, abs=2e-3)
    assert mn_o["best"][2] == pytest.approx(2.176, abs=2e-3)
    assert mn_o["flag"] is not None and "start ± 5 %" in mn_o["flag"]  # no restraint: the start's range
    given = {b["pair"]: b for b in bond_table(refined, start, {"Mn-O": (1.85, 2.25)})}
    assert given["Mn-O"]["flag"] is None and given["Mn-O"]["window_source"] == "restraint"


def test_restraints_and_symmetry_are_checked_against_the_start(tmp_path):
    from campaign_files import campaign_yaml

    bad = campaign_yaml(tmp_path, "r1", restraints={"bonds": {"Mn-O": [1.8, 2.3]}})
    with pytest.raises(InputError, match="restraints.*has no Mn"):
        load_config(bad)
    wrong = campaign_yaml(tmp_path, "r2", symmetry="Pm-3m")
    with pytest.raises(InputError, match="field 'symmetry'"):
        load_config(wrong)
    with pytest.raises(InputError, match="give bonds and/or bvs"):
        load_config(campaign_yaml(tmp_path, "r3", restraints={}))
