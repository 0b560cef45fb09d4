"""What a constrained search may propose: the campaign's ``symmetry`` and ``restraints`` as one object.

The sampler (initial data, fresh starts of the proposals, fallbacks) and the gradient proposals see a
campaign's constraints through a :class:`SearchConstraint` (their ``constraint`` field, set by the
campaign, never in a file):

* :meth:`SearchConstraint.positions` maps Cartesian positions onto the nearest ones the space group
  allows (:class:`~aso_workflows.symmetry.SymmetricPositions`: linear, differentiable), the single hook
  of the gradient proposals;
* :meth:`SearchConstraint.penalty` adds the restraints' squared excursions to the acquisition (the
  proposals keep only points with none);
* :meth:`SearchConstraint.draw` makes a random structure in the group (every free coordinate moved, the
  RMS displacement of the atoms the sampler's amplitude);
* :meth:`SearchConstraint.ok` is the hard check (positions in the group, restraints kept).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from pymatgen.core import Lattice, Structure

if TYPE_CHECKING:
    import torch

    from aso_workflows.optimizers.base import CampaignView
    from aso_workflows.restraints import CompiledRestraints
    from aso_workflows.symmetry import SymmetryConstraints

__all__ = ["SearchConstraint", "campaign_constraint", "campaign_restraints", "campaign_symmetry"]

SYMMETRY_TOLERANCE = 1e-4
"""Largest deviation (Å) of an atom from its symmetric position for a structure to count as in the group."""


@dataclass
class SearchConstraint:
    """A campaign's symmetry (``None``: P1) and restraints (``None``: none), bound to its start."""

    symmetry: SymmetryConstraints | None = None
    restraints: CompiledRestraints | None = None

    def __post_init__(self) -> None:
        self._maps: dict[bytes, object] = {}

    def positions(self, pos: torch.Tensor, lattice: torch.Tensor) -> torch.Tensor:
        """Cartesian positions ``[B, N, 3]`` projected onto the group (unchanged without symmetry)."""
        if self.symmetry is None:
            return pos
        from aso_workflows.symmetry import SymmetricPositions

        start_lattice = np.asarray(self.symmetry.lattice_matrix)
        key = start_lattice.tobytes()
        if key not in self._maps:
            self._maps[key] = self.symmetry.torch_projector(start_lattice)
        proj = self._maps[key]
        assert isinstance(proj, SymmetricPositions)
        return proj.positions(pos, lattice)

    def penalty(self, pos: torch.Tensor, lattice: torch.Tensor) -> torch.Tensor:
        """The restraints' penalty per structure of the batch (zeros without restraints)."""
        if self.restraints is None:
            return pos.new_zeros(pos.shape[0])
        return self.restraints.penalty(pos, lattice)

    def ok(self, structure: Structure) -> bool:
        """In the group (within :data:`SYMMETRY_TOLERANCE`) and every restraint kept."""
        if self.symmetry is not None and self.symmetry.deviation(structure) > SYMMETRY_TOLERANCE:
            return False
        return self.restraints is None or self.restraints.ok(structure)

    def project(self, structure: Structure) -> Structure:
        """``structure`` moved onto the group (itself without symmetry)."""
        return structure if self.symmetry is None else self.symmetry.symmetrised(structure)

    def draw(
        self, structure: Structure, rng: np.random.Generator, amplitude: float, lattice: np.ndarray
    ) -> Structure:
        """``structure`` with its free coordinates moved at random, RMS atomic displacement ``amplitude``
        Å, in the cell ``lattice`` (fractional coordinates kept); without symmetry, every atom by
        ``amplitude`` along its own random direction (as the sampler)."""
        if self.symmetry is None:
            v = rng.normal(size=(len(structure), 3))
            disp = amplitude * v / np.linalg.norm(v, axis=1, keepdims=True)
            frac = np.asarray(structure.frac_coords) + disp @ np.linalg.inv(lattice)
        else:
            sym = self.symmetry
            p = sym.parameters(structure.frac_coords) + sym.random_displacement(rng, amplitude, lattice)
            frac = sym.positions(p)
        return Structure(
            Lattice(lattice),
            structure.species,
            frac,
            to_unit_cell=True,
            site_properties=structure.site_properties or None,
        )


def campaign_symmetry(state: CampaignView) -> SymmetryConstraints | None:
    """The campaign's ``symmetry`` (``None``, ``"start"`` or a group) as constraints on its start."""
    from aso_workflows.symmetry import symmetry_constraints

    value = getattr(state.config, "symmetry", None)
    if value is None:
        return None
    return symmetry_constraints(state.start, None if value == "start" else value)


def campaign_restraints(state: CampaignView) -> CompiledRestraints | None:
    """The campaign's ``restraints`` bound to the start's bonds (``None`` without)."""
    r = getattr(state.config, "restraints", None)
    return None if r is None else r.compile(state.start)


def campaign_constraint(state: CampaignView) -> SearchConstraint | None:
    """The campaign's search constraint (``None`` when it has neither symmetry nor restraints)."""
    sym, res = campaign_symmetry(state), campaign_restraints(state)
    return None if sym is None and res is None else SearchConstraint(sym, res)
