"""Per-atom PDF contributions from pdffit2's pair selection: exact, symmetric, in site order."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Structure

import aso_workflows
from aso_workflows.spectra.pdf import PDFSimulator
from aso_workflows.spectra.pdf_partials import TOLERANCE, pdf_site_contributions, simulate_with_sites

DATA = Path(aso_workflows.__file__).parent / "data"


@pytest.fixture(scope="module")
def linio2() -> Structure:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Structure.from_file(str(DATA / "LiNiO2.cif"))


def _perturbed(s: Structure, seed: int, amplitude: float = 0.15) -> Structure:
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(len(s), 3)) * amplitude
    return Structure(s.lattice, s.species, s.cart_coords + d, coords_are_cartesian=True)


@pytest.mark.parametrize(
    "settings",
    [{}, {"qdamp": 0.04, "qbroad": 0.02, "biso": 0.8, "rmax": 8.0, "rstep": 0.02}],
    ids=["reference", "damped"],
)
def test_rows_reproduce_the_engine_pdf(linio2, settings):
    sim = PDFSimulator(engine="pdffit2", **settings)
    s = _perturbed(linio2, 0)
    spectrum = simulate_with_sites(sim, s)
    g = np.asarray(spectrum.values)
    rows = np.asarray(spectrum.site_values)
    assert rows.shape == (len(s), sim.npoints)
    assert spectrum.absorber_sites == list(range(len(s)))
    assert np.max(np.abs(rows.mean(0) - g)) <= TOLERANCE * np.max(np.abs(g))
    # a real split: the rows differ from each other and from G
    assert np.max(np.abs(rows - g)) > 0.1 * np.max(np.abs(g))
    info = spectrum.extra["site_contributions"]
    assert info["engine_calls"] == len(s) + len(s.composition)
    assert info["max_rel_error"] <= TOLERANCE and info["seconds"] > 0


def test_rows_follow_the_atoms_not_the_site_order(linio2):
    """Each row is a function of its atom's environment: equivalent atoms of the ideal cell get equal
    rows, and reordering the sites reorders the rows."""
    sim = PDFSimulator(engine="pdffit2")
    rows = pdf_site_contributions(sim, linio2).rows
    for element in ("Li", "Ni", "O"):
        idx = [i for i, site in enumerate(linio2) if site.specie.symbol == element]
        np.testing.assert_allclose(rows[idx], np.broadcast_to(rows[idx[0]], rows[idx].shape), atol=1e-5)
    s = _perturbed(linio2, 1)
    order = np.random.default_rng(2).permutation(len(s))
    shuffled = Structure(
        s.lattice, [s.species[i] for i in order], s.cart_coords[order], coords_are_cartesian=True
    )
    np.testing.assert_allclose(
        pdf_site_contributions(sim, shuffled).rows, pdf_site_contributions(sim, s).rows[order], atol=1e-9
    )
