"""Mismatch: MSE, per-technique normalisation, weights and grid handling."""

from __future__ import annotations

import numpy as np
import pytest

from aso_workflows.errors import InputError
from aso_workflows.spectra.mismatch import Objective, TechniqueTerm, mse
from aso_workflows.spectra.pdf import PDFSimulator
from aso_workflows.spectra.spectrum import Grid, Spectrum


def _spectrum(technique: str, x, y) -> Spectrum:
    name, unit = {"pdf": ("r", "Å"), "exafs": ("k", "Å^-1"), "xanes": ("e", "eV")}[technique]
    return Spectrum(
        technique=technique, grid=Grid(name=name, unit=unit, values=list(map(float, x))), values=list(y)
    )


@pytest.fixture
def pdfs(nio, linio2):
    sim = PDFSimulator()
    return sim.simulate(nio), sim.simulate(linio2)


def test_mse_of_arrays():
    assert mse([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 0.0
    assert mse([0.0, 0.0], [1.0, 3.0]) == pytest.approx(5.0)
    with pytest.raises(ValueError):
        mse([0.0, 1.0], [0.0, 1.0, 2.0])


def test_identical_spectra_give_zero_and_different_ones_positive(pdfs):
    nio_pdf, linio2_pdf = pdfs
    objective = Objective([TechniqueTerm("pdf", nio_pdf)])
    total, per = objective.evaluate({"pdf": nio_pdf})
    assert total == 0.0 and per == {"pdf": 0.0}
    total, per = objective.evaluate({"pdf": linio2_pdf})
    assert total > 0 and per["pdf"] == pytest.approx(mse(nio_pdf.y, linio2_pdf.y))
    assert total == pytest.approx(per["pdf"] / np.var(nio_pdf.y))


def test_variance_normalisation_removes_units():
    """Rescaling a technique's spectra (other units) leaves its normalised term unchanged."""
    x = np.linspace(0, 10, 101)
    target, candidate = np.sin(x), np.sin(x + 0.3)
    t1 = TechniqueTerm("exafs", _spectrum("exafs", x, target))
    t1000 = TechniqueTerm("exafs", _spectrum("exafs", x, 1000 * target))
    v1 = t1.value(_spectrum("exafs", x, candidate))
    v1000 = t1000.value(_spectrum("exafs", x, 1000 * candidate))
    assert v1 == pytest.approx(v1000, rel=1e-9)
    raw = TechniqueTerm("exafs", _spectrum("exafs", x, 1000 * target), normalisation="none")
    assert raw.value(_spectrum("exafs", x, 1000 * candidate)) == pytest.approx(1e6 * mse(target, candidate))
    fixed = TechniqueTerm("exafs", _spectrum("exafs", x, target), normalisation=0.5)
    assert fixed.value(_spectrum("exafs", x, candidate)) == pytest.approx(2 * mse(target, candidate))


def test_weighted_sum_of_two_techniques(pdfs):
    nio_pdf, linio2_pdf = pdfs
    e = np.linspace(-10, 50, 121)
    xanes_target = _spectrum("xanes", e, 1 / (1 + np.exp(-e / 3)))
    xanes_other = _spectrum("xanes", e, 1 / (1 + np.exp(-(e - 2) / 3)))
    objective = Objective(
        [TechniqueTerm("pdf", nio_pdf, weight=2.0), TechniqueTerm("xanes", xanes_target, weight=0.5)]
    )
    total, per = objective.evaluate({"pdf": linio2_pdf, "xanes": xanes_other})
    expected = 2.0 * per["pdf"] / np.var(nio_pdf.y) + 0.5 * per["xanes"] / np.var(xanes_target.y)
    assert total == pytest.approx(expected)
    assert per["xanes"] == pytest.approx(mse(xanes_target.y, xanes_other.y))
    # only the PDF term differs from zero when XANES matches
    total_pdf_only, _ = objective.evaluate({"pdf": linio2_pdf, "xanes": xanes_target})
    assert total_pdf_only == pytest.approx(2.0 * per["pdf"] / np.var(nio_pdf.y))


def test_spectrum_on_another_grid_is_interpolated_onto_the_target_grid():
    coarse_x = np.linspace(3, 12, 10)
    fine_x = np.linspace(2, 13, 111)
    line = lambda x: 0.5 * x - 1  # noqa: E731 - linear: interpolation is exact
    target = _spectrum("exafs", coarse_x, line(coarse_x))
    objective = Objective([TechniqueTerm("exafs", target)])
    total, _ = objective.evaluate({"exafs": _spectrum("exafs", fine_x, line(fine_x))})
    assert total == pytest.approx(0.0, abs=1e-20)
    total, _ = objective.evaluate({"exafs": _spectrum("exafs", fine_x, line(fine_x) + 0.1)})
    assert total == pytest.approx(0.01 / np.var(target.y))


def test_spectrum_not_covering_the_target_grid_is_an_input_error():
    target = _spectrum("exafs", np.linspace(3, 12, 10), np.arange(10.0))
    short = _spectrum("exafs", np.linspace(3, 10, 10), np.arange(10.0))
    with pytest.raises(InputError, match="exafs"):
        Objective([TechniqueTerm("exafs", target)]).evaluate({"exafs": short})


def test_missing_technique_and_bad_terms(pdfs):
    nio_pdf, _ = pdfs
    objective = Objective([TechniqueTerm("pdf", nio_pdf)])
    with pytest.raises(InputError, match="missing"):
        objective.evaluate({"exafs": nio_pdf})
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="weight"):
        TechniqueTerm("pdf", nio_pdf, weight=0.0)
    with pytest.raises(ValidationError, match="normalisation"):
        TechniqueTerm("pdf", nio_pdf, normalisation="std")  # type: ignore[arg-type]  # a bad value on purpose
    with pytest.raises(ValidationError, match="normalisation"):
        TechniqueTerm("pdf", nio_pdf, normalisation=-1.0)
    flat = _spectrum("pdf", [1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    with pytest.raises(ValidationError, match="zero variance"):
        TechniqueTerm("pdf", flat)
    with pytest.raises(InputError, match="more than once"):
        Objective([TechniqueTerm("pdf", nio_pdf), TechniqueTerm("pdf", nio_pdf)])
