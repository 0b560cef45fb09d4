"""Bayesian optimisation with a Gaussian process (BoTorch): the GP-BO baseline.

The GP is trained on exactly the data the campaign simulated (the same initial perturbations as every
other optimiser, then its own proposals), nothing else.

Features
--------
Every structure of a campaign derives from the start structure by moving its atoms (site order and
species never change), so a structure is described completely by the displacement of each atom from
its start position: Cartesian, minimum image (fractional difference wrapped into [-1/2, 1/2), times the
start lattice), flattened to 3N numbers and mapped from the box ``[-box, box]`` Å to the unit cube that
BoTorch optimises over. No permutation-invariant descriptor is needed (atoms are never relabelled), and
unlike a descriptor (SOAP, RDF) this representation is exactly invertible: the acquisition optimum
decodes into the structure that is simulated. The box defaults to the sampler's ``max_displacement``, the
range of the initial data, so the GP is never asked to extrapolate beyond what it has seen. Positions
only: the lattice stays the start's (the reference also keeps it fixed).

Objective and acquisition
-------------------------
The GP models ``-log(mismatch)`` (BoTorch maximises; the log evens out the orders of magnitude between a
poor and a good structure), standardised (``Standardize`` outcome transform). ``SingleTaskGP`` keeps
BoTorch's defaults (botorch 0.18: RBF kernel with one length scale per feature and a log-normal
length-scale prior scaled with the dimension, which suits 24–200 features). The acquisition is ``LogExpectedImprovement`` for one candidate,
``qLogExpectedImprovement`` for a batch, with candidates proposed but not yet evaluated as pending
points, optimised with ``botorch.optim.optimize_acqf`` (multi-start L-BFGS-B in the box).

Minimum distances
-----------------
A decoded candidate that breaks a minimum distance is repaired: the displacement of every atom in a
violating pair is halved (towards its start position) until the structure is valid, up to 20 times; then
those atoms go back to their start positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, ClassVar

import numpy as np
from pydantic import Field
from pymatgen.core import Structure

from aso_workflows.errors import InputError
from aso_workflows.optimizers.base import CampaignView, CandidateProposal, Optimizer, ProposalContext
from aso_workflows.optimizers.registry import register_optimizer
from aso_workflows.settings import settings_dataclass
from aso_workflows.structures import structure_fingerprint

if TYPE_CHECKING:
    import torch
    from botorch.models import SingleTaskGP

__all__ = ["GPBayesOpt", "DisplacementFeatures"]

KIND = "gpbo"


@dataclass
class DisplacementFeatures:
    """Structures ↔ points of the unit cube ``[0, 1]^(3N)``: per-atom displacements from ``reference``.

    Attributes
    ----------
    reference
        The start structure (site order and lattice of every structure of the campaign).
    box
        Half-width (Å) of the displacement box along each Cartesian axis.
    """

    reference: Structure
    box: float

    @property
    def dim(self) -> int:
        return 3 * len(self.reference)

    def displacements(self, structure: Structure) -> np.ndarray:
        """Minimum-image Cartesian displacement of each atom from the reference, [N, 3] (Å)."""
        if len(structure) != len(self.reference):
            raise InputError("structure", f"{len(structure)} atoms, the start has {len(self.reference)}")
        df = np.asarray(structure.frac_coords) - np.asarray(self.reference.frac_coords)
        df -= np.round(df)
        return df @ np.asarray(self.reference.lattice.matrix)

    def encode(self, structure: Structure) -> np.ndarray:
        """The structure as a point of the unit cube (displacements beyond the box are clipped)."""
        d = self.displacements(structure).reshape(-1)
        return np.clip((d / self.box + 1.0) / 2.0, 0.0, 1.0)

    def decode_displacements(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, dtype=float) * 2.0 - 1.0) * self.box).reshape(-1, 3)

    def decode(self, x: np.ndarray) -> Structure:
        """The structure at a point of the unit cube (start lattice, start species and site order)."""
        return self.structure_from_displacements(self.decode_displacements(x))

    def structure_from_displacements(self, disp: np.ndarray) -> Structure:
        ref = self.reference
        return Structure(
            ref.lattice,
            ref.species,
            np.asarray(ref.cart_coords) + disp,
            coords_are_cartesian=True,
            to_unit_cell=True,
            site_properties=ref.site_properties or None,
        )


@register_optimizer("gpbo")
@settings_dataclass
class GPBayesOpt(Optimizer):
    """Gaussian-process Bayesian optimisation of the atomic positions (BoTorch, from the optional extra "baselines").

    See the module docstring.

    Attributes
    ----------
    box
        Half-width (Å) of the displacement box; ``None``: the sampler's ``max_displacement``.
    num_restarts, raw_samples
        Multi-start settings of ``optimize_acqf``.
    maxiter
        L-BFGS-B iterations per restart.
    max_repairs
        Halvings of the violating atoms' displacements before they go back to the start.
    """

    box: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    num_restarts: Annotated[int, Field(ge=1)] = 8
    raw_samples: Annotated[int, Field(ge=1)] = 256
    maxiter: Annotated[int, Field(ge=1)] = 100
    max_repairs: Annotated[int, Field(ge=0)] = 20
    section: ClassVar[str | None] = "gpbo"

    def features(self, state: CampaignView) -> DisplacementFeatures:
        box = self.box if self.box is not None else float(state.config.sampler.max_displacement)
        return DisplacementFeatures(reference=state.start, box=box)

    # ---- model ----------------------------------------------------------------------------------
    @staticmethod
    def fit(x: torch.Tensor, y: torch.Tensor) -> SingleTaskGP:
        """A ``SingleTaskGP`` on ``x`` [n, d] in the unit cube and ``y`` [n, 1] (standardised inside)."""
        from botorch.fit import fit_gpytorch_mll
        from botorch.models import SingleTaskGP
        from botorch.models.transforms.outcome import Standardize
        from gpytorch.mlls import ExactMarginalLogLikelihood

        model = SingleTaskGP(x, y, outcome_transform=Standardize(m=1))
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
        return model

    def propose(self, ctx: ProposalContext) -> list[CandidateProposal]:
        import torch
        from botorch.acquisition import LogExpectedImprovement, qLogExpectedImprovement
        from botorch.optim import optimize_acqf

        state = ctx.state
        feats = self.features(state)
        data = [(s, e) for s, e in ctx.evaluated if e is not None and e > 0 and math.isfinite(e)]
        if len(data) < 2:
            raise InputError("gpbo", f"the GP needs at least 2 evaluated structures, got {len(data)}")
        x = torch.tensor(np.stack([feats.encode(s) for s, _ in data]), dtype=torch.float64)
        y = torch.tensor([[-math.log(e)] for _, e in data], dtype=torch.float64)
        pending = (
            torch.tensor(np.stack([feats.encode(s) for s in ctx.pending]), dtype=torch.float64)
            if ctx.pending
            else None
        )
        bounds = torch.stack([torch.zeros(feats.dim), torch.ones(feats.dim)]).double()
        with torch.random.fork_rng():
            torch.manual_seed(ctx.seed)
            model = self.fit(x, y)
            best_f = float(y.max())
            if ctx.q == 1:
                acq = LogExpectedImprovement(model, best_f=best_f)
                if pending is not None:
                    acq = qLogExpectedImprovement(model, best_f=best_f, X_pending=pending)
            else:
                acq = qLogExpectedImprovement(model, best_f=best_f, X_pending=pending)
            cand, value = optimize_acqf(
                acq,
                bounds=bounds,
                q=ctx.q,
                num_restarts=self.num_restarts,
                raw_samples=self.raw_samples,
                options={"maxiter": self.maxiter, "seed": ctx.seed},
            )
            with torch.no_grad():
                post = model.posterior(cand)
                mean = post.mean.squeeze(-1).numpy()
                std = post.variance.clamp_min(0).sqrt().squeeze(-1).numpy()
        seen = {structure_fingerprint(s) for s, _ in ctx.evaluated} | {
            structure_fingerprint(s) for s in ctx.pending
        }
        out = []
        for k, xk in enumerate(cand.numpy()):
            structure, repairs = self.repair(feats, feats.decode_displacements(xk), state.dmin_matrix)
            fp = structure_fingerprint(structure)
            if fp in seen:
                continue  # the acquisition optimum is a structure already simulated: nothing to learn
            seen.add(fp)
            out.append(
                CandidateProposal(
                    structure=structure,
                    acquisition=float(torch.as_tensor(value).reshape(-1)[0]),
                    predicted={
                        "objective": float(math.exp(-mean[k])),
                        "gpbo": {
                            "mean_neg_log_mismatch": float(mean[k]),
                            "std_neg_log_mismatch": float(std[k]),
                            "repairs": repairs,
                            "n_train": len(data),
                            "box": feats.box,
                        },
                    },
                    note=f"gpbo (log)EI, {repairs} repair halvings" if repairs else "gpbo (log)EI",
                )
            )
        return out

    def repair(
        self, feats: DisplacementFeatures, disp: np.ndarray, dmin: np.ndarray
    ) -> tuple[Structure, int]:
        """Shrink the displacements of atoms in too-close pairs until every minimum distance holds."""
        import torch

        from aso_workflows.optimizers.sampling import close_pairs

        disp = np.array(disp, dtype=float)
        lat = torch.from_numpy(np.array(feats.reference.lattice.matrix, dtype=float))[None]
        cart0 = np.asarray(feats.reference.cart_coords, dtype=float)
        for n in range(self.max_repairs + 2):
            b, i, j, _, d = close_pairs(torch.from_numpy(cart0 + disp)[None], lat, dmin)
            i, j, d = i.numpy(), j.numpy(), d.numpy()
            real = d < dmin[i, j]
            if not real.any():
                return feats.structure_from_displacements(disp), n
            bad = np.unique(np.concatenate([i[real], j[real]]))
            disp[bad] = 0.0 if n >= self.max_repairs else disp[bad] * 0.5
        # the start positions of these atoms are themselves too close: nothing to repair towards
        raise InputError(
            "gpbo", "could not repair a candidate: the start structure breaks a minimum distance"
        )
