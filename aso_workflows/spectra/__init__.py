"""Spectra: the ``Spectrum`` document, simulators, targets and mismatch.

Techniques: one entry each in ``techniques`` (simulator, target reader, fitter, goodness, labels).
Simulators: PDF in ``pdf``; EXAFS and XANES with FEFF in ``exafs`` and ``xanes`` (their shared absorber
runs in ``feff_absorber``, the FEFF runner in ``feff_engine``, XAFS processing in ``xafs``).

The FEFF simulators are not imported here (``make_simulator("exafs", ...)`` imports them lazily).
"""

from __future__ import annotations

from aso_workflows.spectra.base import AbsorberSimulator, Simulator
from aso_workflows.spectra.mismatch import Objective, TechniqueTerm, mse
from aso_workflows.spectra.pdf import PDFSimulator
from aso_workflows.spectra.registry import make_simulator, simulator_class, simulator_settings
from aso_workflows.spectra.spectrum import Grid, Spectrum
from aso_workflows.spectra.targets import read_target
from aso_workflows.spectra.techniques import (
    TechniqueEntry,
    get_technique,
    register_technique,
    technique_names,
)

__all__ = [
    "AbsorberSimulator",
    "Grid",
    "Objective",
    "PDFSimulator",
    "Simulator",
    "Spectrum",
    "TechniqueEntry",
    "TechniqueTerm",
    "make_simulator",
    "mse",
    "get_technique",
    "read_target",
    "register_technique",
    "simulator_class",
    "simulator_settings",
    "technique_names",
]
