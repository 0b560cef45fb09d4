"""The technique registry: every list of techniques derives from it, and a new technique is one entry.

The toy technique here (``rdf``: a Gaussian-broadened histogram of pair distances) is added through
:func:`~aso_workflows.spectra.techniques.register_technique` alone, then read from a file, simulated from
the command line and used by a small campaign, with no other change to the package.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from campaign_files import EXAMPLE, campaign_yaml
from pymatgen.core import Structure
from typer.testing import CliRunner

from aso_workflows.errors import InputError
from aso_workflows.settings import settings_dataclass
from aso_workflows.spectra import techniques
from aso_workflows.spectra.base import Simulator
from aso_workflows.spectra.goodness import r_factor
from aso_workflows.spectra.spectrum import Grid, Spectrum
from aso_workflows.spectra.targets.base import TargetReader
from aso_workflows.spectra.techniques import (
    SurrogateNeeds,
    TechniqueEntry,
    get_technique,
    register_technique,
    technique_names,
)


@settings_dataclass
class RadialHistogram(Simulator):
    """Pair distances of a structure, histogrammed per atom and broadened by a Gaussian (a toy technique)."""

    rmin: float = 1.0
    rmax: float = 5.0
    step: float = 0.05
    sigma: float = 0.1

    technique: ClassVar[str] = "rdf"

    def grid(self) -> Grid:
        r = np.arange(self.rmin, self.rmax + 0.5 * self.step, self.step)
        return Grid(name="r", unit="Å", values=r.tolist())

    def simulate(self, structure: Structure, workdir: str | Path | None = None) -> Spectrum:
        r = self.grid().array
        d = np.array(
            [n.nn_distance for site in structure.get_all_neighbors(self.rmax + 3 * self.sigma) for n in site]
        )
        y = np.exp(-0.5 * ((r[:, None] - d[None, :]) / self.sigma) ** 2).sum(axis=1) / len(structure)
        return Spectrum(
            technique="rdf",
            grid=self.grid(),
            values=y.tolist(),
            settings=self.settings_dict(),
            engine="numpy radial histogram",
        )


class RadialHistogramReader(TargetReader):
    """Two columns, as the base reader reads them."""

    technique = "rdf"


ENTRY = TechniqueEntry(
    name="rdf",
    simulator=RadialHistogram,
    reader=RadialHistogramReader,
    fitter=None,
    goodness="R",
    goodness_function=r_factor,
    grid="r",
    unit="Å",
    y_label="pairs per atom",
    description="radial histogram of pair distances (a test technique)",
    surrogate=SurrogateNeeds(level="graph"),
)


@pytest.fixture
def rdf():
    """The toy technique, registered for one test."""
    register_technique(ENTRY)
    try:
        yield ENTRY
    finally:
        techniques._REGISTRY.pop("rdf")


def test_the_builtin_techniques_are_registry_entries():
    assert technique_names()[:3] == ["pdf", "exafs", "xanes"]
    assert [get_technique(t).goodness for t in ("pdf", "exafs", "xanes")] == ["Rw", "R", "R"]
    with pytest.raises(
        InputError, match=r"unknown technique 'saxs'; expected one of \['pdf', 'exafs', 'xanes'"
    ):
        get_technique("saxs")
    with pytest.raises(ValueError, match="registered twice"):
        register_technique(dataclasses.replace(get_technique("pdf")))


def test_a_spectrum_of_an_unregistered_technique_is_refused():
    with pytest.raises(ValueError, match="unknown technique 'rdf'"):
        Spectrum(technique="rdf", grid=Grid(name="r", unit="Å", values=[1.0, 2.0]), values=[0.0, 1.0])


def test_a_new_technique_reads_targets_and_simulates(rdf, tmp_path):
    from aso_workflows.cli import app
    from aso_workflows.spectra.registry import make_simulator
    from aso_workflows.spectra.targets import read_target

    sim = make_simulator("rdf", sigma=0.08)
    target = sim.simulate(Structure.from_file(EXAMPLE / "target.cif"))
    path = tmp_path / "target.rdf"
    path.write_text(
        "# r pairs\n" + "\n".join(f"{x:.4f} {y:.6f}" for x, y in zip(target.x, target.y, strict=True))
    )
    read = read_target(path, "rdf", simulator=sim)
    assert read.technique == "rdf" and np.allclose(read.y, target.y, atol=1e-6)
    feff = tmp_path / "xmu.dat"
    feff.write_text("# omega e k mu mu0 chi\n" + "\n".join(f"{i} {i} {i} 1 1 0.{i}" for i in range(1, 9)))
    with pytest.raises(InputError, match="is a xmu file; a rdf target needs two columns"):
        read_target(feff, "rdf")

    png = tmp_path / "rdf.png"
    result = CliRunner().invoke(
        app, ["simulate", str(EXAMPLE / "start.cif"), "-t", "rdf", "-s", "sigma=0.08", "--plot", str(png)]
    )
    assert result.exit_code == 0, result.output
    assert "rdf" in result.stdout and "numpy radial histogram" in result.stdout and png.stat().st_size > 5000


def test_a_campaign_runs_a_technique_added_through_the_registry_alone(rdf, tmp_path):
    from aso_workflows.campaign.local import LocalCampaignRunner
    from aso_workflows.config import load_config

    pair: dict[str, Any] = {
        "start": str(EXAMPLE / "start.cif"),
        "targets": [
            {"technique": "rdf", "structure": str(EXAMPLE / "target.cif"), "settings": {"sigma": 0.08}}
        ],
        "sampler": {"min_displacement": 0.05, "max_displacement": 0.3},
        "min_distances": {"Ni-O": 1.7, "Li-O": 1.7, "O-O": 2.2},
    }
    cfg = load_config(campaign_yaml(tmp_path, "toy", pair=pair, optimizer="random", budget=5, initial_size=2))
    state = LocalCampaignRunner(progress=False).run(cfg)
    done = state.evaluations("completed")
    assert state.doc["status"] == "completed" and len(done) == cfg.budget
    assert all(e["goodness"]["rdf"]["name"] == "R" for e in done)
    best = min(done, key=lambda e: e["objective"])
    start = next(e for e in done if e["kind"] == "start")
    assert best["objective"] <= start["objective"] and state.targets["rdf"].technique == "rdf"
    with pytest.raises(InputError, match=r"no nuisance fit for 'rdf'"):
        load_config(
            campaign_yaml(
                tmp_path, "toyfit", pair={**pair, "targets": [{**pair["targets"][0], "fit": ["scale"]}]}
            )
        )
