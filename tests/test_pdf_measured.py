"""Measured PDF files as a new user brings them: what works, and one-line errors for what cannot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aso_workflows.errors import InputError
from aso_workflows.spectra.pdf import PDFSimulator
from aso_workflows.spectra.targets import read_target
from aso_workflows.structures import load_structure

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_pdfgui_structure_files_start_a_campaign():
    """PDFfit .stru files (PDFgui's models) are read; atoms of occupancy 0 (template placeholders) dropped."""
    cdse = load_structure(EXAMPLES / "cdse_xray_measured" / "CdSe-wurtzite.stru")
    assert cdse.composition.reduced_formula == "CdSe" and len(cdse) == 4
    assert cdse.lattice.abc == pytest.approx((4.3, 4.3, 7.01)) and cdse.lattice.gamma == pytest.approx(120)
    lmo = load_structure(EXAMPLES / "lamno3_neutron_measured" / "LaMnO3_10K_pdfgui_refined.stru")
    assert lmo.composition.formula == "La4 Mn4 O12"  # the 4 Ca of occupancy 0 are not atoms


def test_reciprocal_space_and_mismatched_radiation_are_refused_in_one_line(tmp_path):
    q = np.arange(0.5, 25, 0.02)
    fq = tmp_path / "sample.fq"
    fq.write_text(
        "# F(Q) from PDFgetX3\n#L Q F(Q)\n"
        + "\n".join(f"{a:.3f} {b:.4f}" for a, b in zip(q, np.sin(q), strict=True))
    )
    with pytest.raises(InputError, match=r"reciprocal space .* a PDF target needs r"):
        read_target(fq, "pdf", simulator=PDFSimulator(rmin=1.5, rmax=20.0))
    neutron = EXAMPLES / "lamno3_neutron_measured" / "LaMnO3_10K.gr"
    with pytest.raises(InputError, match="is neutron PDF data .* set radiation: neutron"):
        read_target(neutron, "pdf", simulator=PDFSimulator(rmin=1.7, rmax=19.5, qmax=35.0, radiation="xray"))
    ok = read_target(
        neutron, "pdf", simulator=PDFSimulator(rmin=1.7, rmax=19.5, qmax=35.0, radiation="neutron")
    )
    assert len(ok.values) == 1780 and ok.extra.get("dy")


def test_a_nanoparticle_pdf_fits_its_diameter():
    """A nanoparticle file works: pdffit2's spherical envelope (spdiameter) is refined with the scale."""
    from aso_workflows.spectra.fit import make_fitter

    cdse = load_structure(EXAMPLES / "cdse_xray_measured" / "CdSe-wurtzite.stru")
    sim = PDFSimulator(rmin=1.5, rmax=15.0, qmax=14.0, qdamp=0.05, biso=1.0)
    nano = sim.with_settings(spdiameter=30.0).simulate(cdse)
    target = nano.model_copy(update={"values": (0.5 * nano.y).tolist()})
    result = make_fitter("pdf", ["scale", "spdiameter"], target, sim).fit(sim.simulate(cdse), cdse)
    assert result.parameters["spdiameter"] == pytest.approx(30.0, rel=1e-3)
    assert result.goodness < 1e-4 and result.uncertainties["spdiameter"] >= 0
