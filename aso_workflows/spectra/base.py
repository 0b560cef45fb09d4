"""The abstract simulator interface shared by the PDF, EXAFS and XANES engines."""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from pymatgen.core import Structure

from aso_workflows.spectra.spectrum import Grid, Spectrum
from aso_workflows.structures import settings_hash

__all__ = ["Simulator", "AbsorberSimulator"]


class Simulator(ABC):
    """Turns a structure into the spectrum an instrument would measure.

    Subclasses are dataclasses whose fields are the settings; ``settings_dict()`` is what gets stored
    with every spectrum and hashed into cache/unique keys.
    """

    technique: ClassVar[str]
    """Set by each concrete simulator (``technique = "pdf"``): its name in the technique registry."""

    @abstractmethod
    def grid(self) -> Grid:
        """The grid every spectrum of this simulator is reported on."""

    @abstractmethod
    def simulate(self, structure: Structure, workdir: str | Path | None = None) -> Spectrum:
        """Simulate one structure."""

    def simulate_many(self, structures: Sequence[Structure], progress: bool = False) -> list[Spectrum]:
        """Simulate several structures (subclasses may vectorise or reuse engine state)."""
        it = structures
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(structures, desc=f"{self.technique} simulations", unit="sim")
        return [self.simulate(s) for s in it]

    def settings_dict(self) -> dict:
        """The settings as a JSON-able dict (dataclass fields)."""
        if dataclasses.is_dataclass(self):
            return {"technique": self.technique, **dataclasses.asdict(self)}
        raise NotImplementedError

    def settings_key(self) -> str:
        """A short hash of the settings, for cache and unique keys."""
        return settings_hash(self.settings_dict())

    def engine_version(self) -> str:
        """Name and version of the underlying code."""
        return ""


class AbsorberSimulator(Simulator):
    """An XAS simulator: one independent run per absorbing site, then an average.

    Each absorber run is callable on its own with its inputs and outputs in one directory, because the
    cluster workflow runs each as a separate job.
    """

    absorber: str

    @abstractmethod
    def absorber_sites(self, structure: Structure) -> list[int]:
        """Indices of the sites (in ``structure``) to compute, per the settings (all or a subset)."""

    @abstractmethod
    def write_absorber_inputs(self, structure: Structure, site: int, directory: str | Path) -> Path:
        """Write the inputs of one absorber run into ``directory``; returns the directory."""

    @abstractmethod
    def run_absorber(self, directory: str | Path) -> Spectrum:
        """Run one absorber calculation whose inputs are in ``directory``; returns its spectrum."""

    @abstractmethod
    def combine(self, site_spectra: Sequence[Spectrum], sites: Sequence[int]) -> Spectrum:
        """Average per-site spectra into the structure's spectrum (keeping the per-site ones)."""

    def simulate(self, structure: Structure, workdir: str | Path | None = None) -> Spectrum:
        import tempfile

        sites = self.absorber_sites(structure)
        spectra = []
        with tempfile.TemporaryDirectory(prefix="aso-xas-") as tmp:
            base = Path(workdir) if workdir is not None else Path(tmp)
            for site in sites:
                d = self.write_absorber_inputs(structure, site, base / f"site_{site:04d}")
                spectra.append(self.run_absorber(d))
        return self.combine(spectra, sites)
