"""Proposing candidates: multi-start gradient descent of the acquisition through the surrogate.

Starts (as the reference, ``optimizer/torch.py`` of Fung-Lab/ActiveStructOpt): every structure evaluated
so far, then fresh perturbations of the campaign's start structure drawn by its sampler (0.1–1.0 Å), up
to ``n_starts`` (128); Adam with lr 1e-3 on the Cartesian positions for ``steps`` (100) steps — a trust
region of roughly 0.1 Å around the evaluated structures. In the exploitation phase (λ = 0 for the last
simulations of the budget, :class:`~aso_workflows.optimizers.aso.acquisition.LCBSchedule`) the reference
searches with 1024 starts × 1000 steps; on a CPU that is sized down to ``cpu_exploit_scale`` (2) × the
normal search (see :class:`GradientProposer`).

All starts are optimised together in batches of up to ``max_batch`` (``[B, N, 3]``): every step calls
each technique's differentiable predictor once on the batch, adds a minimum-distance penalty and takes
one Adam step on the positions (and optionally a symmetric strain of the lattice). Adam acts on each
coordinate separately and the loss is a sum over starts, so batching does not change a start's path.
Each start keeps the best constraint-satisfying point of its trajectory (the reference keeps the best
over all starts and steps); at the end violators are discarded by the exact periodic check in float64
and up to ``q`` candidates are chosen greedily by acquisition value, each at least
``diversity_threshold`` (RMS displacement) away from the already chosen, the pending (being simulated)
and the already evaluated structures. When fewer than ``q`` survive, the batch is completed near the best
structure or shrinks (:mod:`~aso_workflows.optimizers.aso.fallback`: optimised candidates closer than the
threshold that are predicted to improve on the best, then local perturbations flagged ``fallback``).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator
from pymatgen.core import Lattice, Structure

from aso_workflows.errors import InputError
from aso_workflows.optimizers.aso.acquisition import AcquisitionFunction
from aso_workflows.optimizers.sampling import PerturbationSampler, min_distance_penalty, violations
from aso_workflows.progress import Phase, phase
from aso_workflows.settings import settings_dataclass

if TYPE_CHECKING:
    import torch

__all__ = ["GradientProposer", "Proposal", "Predictor", "rms_displacement"]

log = logging.getLogger(__name__)

#: Extra reach (Å) of the list of close pairs kept for the minimum-distance penalty during a search
_CONTACT_SKIN = 0.5
#: Steps between two reads of the best value for the progress bar (each is a host synchronisation)
_REPORT_EVERY = 10

#: ``predict_torch(positions [B, N, 3] Å, lattice [B, 3, 3] Å rows) -> (mean [B, M], std [B, M])``
Predictor = Callable[["torch.Tensor", "torch.Tensor"], tuple["torch.Tensor", "torch.Tensor"]]


@dataclass
class Proposal:
    """One proposed candidate structure.

    Attributes
    ----------
    structure
        The candidate (fractional coordinates wrapped into the cell).
    acquisition
        Its acquisition value (lower is better).
    mean, std
        Predicted spectrum and uncertainty per technique, ``[M_t]`` arrays.
    start_index
        Index of the optimised start in the batch (for a fallback: of the random candidate).
    parent_index
        Index into ``start_structures`` of the structure the start was made from; -1 for a fresh
        perturbation of the reference structure.
    fallback
        True if no gradient-optimised candidate was usable and this is a random perturbation instead.
    search
        How the batch was searched: ``phase`` (``"explore"`` or ``"exploit"``), ``n_starts``, ``steps``,
        ``fresh_starts`` (perturbations of the reference among the starts), ``valid`` (starts whose best
        point keeps every minimum distance), ``seconds``.
    """

    structure: Structure
    acquisition: float
    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]
    start_index: int
    parent_index: int
    fallback: bool = False
    search: dict = dataclasses.field(default_factory=dict)


def _frac(pos: torch.Tensor, lat: torch.Tensor) -> torch.Tensor:
    import torch

    return pos @ torch.linalg.inv(lat)


def rms_displacement(
    frac_a: torch.Tensor, lat_a: torch.Tensor, frac_b: torch.Tensor, lat_b: torch.Tensor
) -> torch.Tensor:
    """RMS atomic displacement (Å) between every structure of set A and every one of set B, ``[A, R]``.

    Periodic-aware (each displacement is wrapped to the nearest image in fractional coordinates) and
    with the best global translation removed (a circular mean per axis first, so that a shift by half a
    cell is handled, then the Euclidean mean). Displacements are converted to Å with the mean of the two
    lattices. The nearest image is taken in fractional coordinates, exact for displacements small
    compared with the cell — the only ones a diversity threshold is about.

    Parameters
    ----------
    frac_a, frac_b
        Fractional coordinates ``[A, N, 3]`` and ``[R, N, 3]`` (same species order).
    lat_a, lat_b
        Lattices (rows) ``[A, 3, 3]`` and ``[R, 3, 3]``.
    """
    import torch

    frac_a, lat_a, frac_b, lat_b = (x.detach() for x in (frac_a, lat_a, frac_b, lat_b))  # no gradient
    na, nr = frac_a.shape[0], frac_b.shape[0]
    out = frac_a.new_zeros(na, nr)
    if na == 0 or nr == 0:
        return out
    n = frac_a.shape[1]
    chunk = max(1, 2_000_000 // max(1, nr * n))
    for s in range(0, na, chunk):
        fa, la = frac_a[s : s + chunk], lat_a[s : s + chunk]
        d = frac_b[None] - fa[:, None]  # [a, R, N, 3]
        d = d - torch.round(d)
        angle = 2 * torch.pi * d
        shift = torch.atan2(torch.sin(angle).mean(-2, keepdim=True), torch.cos(angle).mean(-2, keepdim=True))
        d = d - shift / (2 * torch.pi)
        d = d - torch.round(d)
        d = d - d.mean(-2, keepdim=True)
        lat = 0.5 * (la[:, None] + lat_b[None])  # [a, R, 3, 3]
        cart = d @ lat
        out[s : s + chunk] = torch.sqrt((cart**2).sum(-1).mean(-1))
    return out


def _species(structure: Structure) -> list[str]:
    return [site.specie.symbol for site in structure]


def _stack(structures: Sequence[Structure]) -> tuple[torch.Tensor, torch.Tensor]:
    """Fractional coordinates [S, N, 3] and lattices [S, 3, 3] as float64."""
    import torch

    if not structures:
        return torch.zeros(0, 0, 3, dtype=torch.float64), torch.zeros(0, 3, 3, dtype=torch.float64)
    frac = torch.tensor(np.stack([s.frac_coords for s in structures]), dtype=torch.float64)
    lat = torch.tensor(np.stack([s.lattice.matrix for s in structures]), dtype=torch.float64)
    return frac, lat


def _resolve_device(device: str) -> torch.device:
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@settings_dataclass
class GradientProposer:
    """Multi-start gradient optimisation of the acquisition through a differentiable surrogate.

    Attributes
    ----------
    n_starts
        Starts per proposal (reference 128).
    steps
        Adam steps per start (reference 100).
    lr
        Adam learning rate on Cartesian positions: an Adam step moves a coordinate by about ``lr`` Å, so
        the reference's 1e-3 × 100 steps keeps each start within ~0.1 Å (a trust region around the
        evaluated structures, where the surrogate was trained). Before issue 12 the default was 1e-2
        from the 8 best structures; measured on the per-site RDF stand-in of the tests (8-atom NiO, 32
        starts, 100 steps, start 0.19 Å RMS from the target), 1e-2 got closer to that stand-in's target
        (0.003 vs 0.10 Å) — a stand-in that is exact everywhere, unlike a surrogate trained on 30
        structures.
    starts
        ``"evaluated"`` (reference): the ``start_structures`` given (every evaluated structure, best
        first, up to ``n_starts``), then fresh perturbations of the ``reference`` structure by the
        campaign's sampler; ``"best"``: the given structures cycled, each copy displaced by Gaussian
        noise of ``start_noise`` Å (the first copy of each unchanged).
    exploit_n_starts, exploit_steps
        Size of the search in the exploitation phase (``propose(..., exploit=True)``) on a GPU; ``None``
        (default): the reference's ratios, 8 × ``n_starts`` and 10 × ``steps`` (1024 × 1000 for 128 × 100).
    cpu_exploit_scale
        On a CPU (the proposal's device resolves to ``cpu``) the exploitation search has
        ``cpu_exploit_scale`` × the normal starts and steps, at most the GPU size: the default 2 gives
        256 × 200 for 128 × 100, ~4× the cost of a normal proposal instead of 80× (an 8-atom NiO cell with
        a small surrogate: 44 s per normal proposal, 220 s at 256 × 250 on the loaded 2-core machine;
        ``docs/aso.md``). 10 gives the reference's search on a CPU, 1 no larger search.
    max_batch
        Starts pushed through the surrogate at once (memory bound; the result does not depend on it).
    optimise_lattice
        Also optimise a symmetric strain ε of each lattice (``L = L₀(1 + ε)``, atoms follow affinely).
    lattice_lr
        Adam learning rate of the strain components (per step).
    max_strain
        Each strain component is clamped to ``±max_strain``.
    penalty_weight
        Weight of :func:`~aso_workflows.optimizers.sampling.min_distance_penalty` (Å⁻²) added to the acquisition:
        with 100 an overlap of 0.1 Å costs 1, about a whole normalised mismatch. Only violation-free
        points of a trajectory are ever kept, so the penalty just steers starts back to valid space.
    start_noise
        ``starts: best`` only: standard deviation (Å) of the Gaussian displacement of the copies.
    q
        Proposals returned (the reference proposes 1).
    diversity_threshold
        Minimum RMS displacement (Å, periodic, translation removed) between a proposal and any other
        proposal, pending or evaluated structure.
    seed
        Seed of the start noise, the fresh perturbations and the fallback sampler; ``None`` for fresh
        randomness.
    device
        Torch device of the optimisation: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda[:n]"``
        (the predictors must accept tensors there).
    dtype
        Floating type of the optimised tensors (the surrogate's, usually ``float32``).
    progress
        Show a progress bar over the steps (:func:`aso_workflows.progress.phase`).
    fallback_min_displacement, fallback_max_displacement
        Bounds (Å, RMS) of the local perturbations of the best structure that complete a batch when too
        few optimised starts are valid and distinct: their amplitude is sized to the best's neighbourhood
        (the RMS distance to the nearest other evaluated structure, at most ``fallback_max_displacement``;
        from half of it, or ``fallback_min_displacement`` if smaller), so it shrinks as the search
        converges (:mod:`~aso_workflows.optimizers.aso.fallback`).
    fallback_max_ratio
        A local perturbation is proposed only if its predicted objective is at most this many times the
        best evaluated structure's; otherwise the batch shrinks.
    min_separation
        Smallest RMS displacement (Å) between a candidate that completes a batch and any known structure
        (the diversity threshold relaxed near convergence; the structure fingerprint resolves ~1e-3 Å).
    constraint
        Set by the campaign from its ``symmetry`` and ``restraints`` (never in a file): positions are
        mapped into the space group and the restraints' penalty is added
        (:class:`~aso_workflows.optimizers.constraint.SearchConstraint`).
    """

    n_starts: Annotated[int, Field(ge=1)] = 128
    steps: Annotated[int, Field(ge=0)] = 100
    lr: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1e-3
    starts: Literal["evaluated", "best"] = "evaluated"
    exploit_n_starts: Annotated[int, Field(ge=1)] | None = None
    exploit_steps: Annotated[int, Field(ge=0)] | None = None
    cpu_exploit_scale: Annotated[float, Field(ge=1, allow_inf_nan=False)] = 2.0
    max_batch: Annotated[int, Field(ge=1)] = 256
    optimise_lattice: bool = False
    lattice_lr: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1e-3
    max_strain: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.05
    penalty_weight: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 100.0
    start_noise: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.1
    q: Annotated[int, Field(ge=1)] = 1
    diversity_threshold: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.05
    seed: int | None = 0
    device: str = "auto"
    dtype: Literal["float32", "float64"] = "float32"
    progress: bool = True
    fallback_min_displacement: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.1
    fallback_max_displacement: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.5
    fallback_max_ratio: Annotated[float, Field(ge=1, allow_inf_nan=False)] = 10.0
    min_separation: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 2e-3
    constraint: Any = None

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", v):
            raise ValueError(f"expected 'auto', 'cpu' or 'cuda[:n]', got {v!r}")
        return v

    @model_validator(mode="after")
    def _fallback_range(self) -> GradientProposer:
        if self.fallback_min_displacement > self.fallback_max_displacement:
            raise ValueError(
                f"fallback_min_displacement ({self.fallback_min_displacement}) must not exceed "
                f"fallback_max_displacement ({self.fallback_max_displacement})"
            )
        return self

    def search_size(self, exploit: bool) -> tuple[int, int]:
        """``(starts, steps)`` of a proposal: the normal search, or the exploitation-phase search
        (reference 1024 × 1000; on a CPU ``cpu_exploit_scale`` × the normal one, at most that)."""
        if not exploit:
            return self.n_starts, self.steps
        n = 8 * self.n_starts if self.exploit_n_starts is None else self.exploit_n_starts
        k = 10 * self.steps if self.exploit_steps is None else self.exploit_steps
        if _resolve_device(self.device).type == "cpu":
            n = min(n, round(self.cpu_exploit_scale * self.n_starts))
            k = min(k, round(self.cpu_exploit_scale * self.steps))
        return n, k

    # ---- public ----------------------------------------------------------------------------------
    def propose(
        self,
        start_structures: Sequence[Structure],
        predict: Mapping[str, Predictor],
        acquisition: AcquisitionFunction,
        dmin_matrix: np.ndarray,
        pending: Sequence[Structure] = (),
        evaluated: Sequence[Structure] = (),
        *,
        seed: int | None = None,
        reference: Structure | None = None,
        sampler: PerturbationSampler | None = None,
        exploit: bool = False,
    ) -> list[Proposal]:
        """Up to ``q`` candidates, best acquisition first.

        Parameters
        ----------
        start_structures
            Structures to start from, ranked (best first): every evaluated structure
            (``starts: evaluated``) or the best few (``starts: best``).
        predict
            ``{technique: predict_torch}``, each differentiable and vectorised over the batch.
        acquisition
            Scores ``(means, stds)`` per technique, lower is better.
        dmin_matrix
            (N, N) minimum allowed distances (Å), see :func:`aso_workflows.optimizers.sampling.min_distance_matrix`.
        pending, evaluated
            Candidates being simulated and structures already simulated: proposals keep away from both.
        seed
            Overrides ``self.seed`` for this call (e.g. ``seed + iteration``).
        reference, sampler
            ``starts: evaluated``: the structure whose fresh perturbations fill the starts (the campaign's
            start; default ``start_structures[0]``) and what draws them (the campaign's sampler, its
            minimum distances replaced by ``dmin_matrix``; default :class:`PerturbationSampler`).
        exploit
            Search with the exploitation-phase size (:meth:`search_size`).

        Returns
        -------
        list[Proposal]
            Up to ``q`` proposals; fewer near convergence, when no distinct candidate is predicted good
            enough (:mod:`~aso_workflows.optimizers.aso.fallback`). Entries with ``fallback=True`` are
            local perturbations of the best structure.
        """
        self._check_inputs(start_structures, predict, dmin_matrix, pending, evaluated)
        t0 = time.perf_counter()
        seed = self.seed if seed is None else seed
        n_starts, steps = self.search_size(exploit)
        x0, l0, parents = self._starts(start_structures, n_starts, reference, sampler, dmin_matrix, seed)
        best = self._optimise(x0, l0, predict, acquisition, dmin_matrix, steps)
        ref_frac, ref_lat = _stack([*pending, *evaluated])
        chosen, cand_frac, cand_lat, ok = self._select(best, dmin_matrix, ref_frac, ref_lat)
        search: dict[str, Any] = {"phase": "exploit" if exploit else "explore", "n_starts": len(x0)}
        search.update(steps=steps, fresh_starts=int((parents < 0).sum()), valid=int(ok.sum()))
        like = start_structures[0]
        proposals = [self._proposal(like, best, k, cand_frac, cand_lat, parents, search) for k in chosen]
        if len(proposals) < self.q:
            import torch

            from aso_workflows.optimizers.aso.fallback import fill_batch

            log.info(
                "gradient proposal: %d of %d starts valid and distinct, %d wanted; completing the batch "
                "near the best (optimised/fallback.py)",
                len(chosen),
                len(x0),
                self.q,
            )
            order = [int(k) for k in torch.argsort(best["value"].cpu()) if ok[k]]
            optimised = {
                "frac": cand_frac,
                "lat": cand_lat,
                "value": best["value"].cpu(),
                "means": best["means"],
                "stds": best["stds"],
                "parents": parents,
            }
            proposals += fill_batch(
                self,
                start_structures=start_structures,
                predict=predict,
                acquisition=acquisition,
                dmin_matrix=dmin_matrix,
                optimised=optimised,
                order=order,
                chosen=chosen,
                ref_frac=ref_frac,
                ref_lat=ref_lat,
                seed=seed,
                search=search,
            )
        search["seconds"] = round(time.perf_counter() - t0, 3)
        return proposals

    def _proposal(
        self,
        like: Structure,
        best: dict,
        k: int,
        frac: torch.Tensor,
        lat: torch.Tensor,
        parents: np.ndarray,
        search: dict[str, Any],
    ) -> Proposal:
        """Start ``k``'s best point as a :class:`Proposal`."""
        return Proposal(
            structure=self._structure(like, frac[k], lat[k]),
            acquisition=float(best["value"][k]),
            mean={t: v[k].detach().cpu().numpy().astype(float) for t, v in best["means"].items()},
            std={t: v[k].detach().cpu().numpy().astype(float) for t, v in best["stds"].items()},
            start_index=k,
            parent_index=int(parents[k]),
            search=search,
        )

    def _select(
        self, best: dict, dmin_matrix: np.ndarray, ref_frac: torch.Tensor, ref_lat: torch.Tensor
    ) -> tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor]:
        """The starts to propose (best acquisition first, valid by the exact periodic check in float64,
        distinct), with every start's fractional coordinates, lattice and validity (CPU, float64)."""
        import torch

        pos, lat = best["pos"].double().cpu(), best["lat"].double().cpu()
        ok = torch.isfinite(best["value"]).cpu() & ~violations(pos, lat, dmin_matrix)
        cand_frac = _frac(pos, lat)
        order = [int(k) for k in torch.argsort(best["value"].cpu()) if ok[k]]
        return self._greedy(order, cand_frac, lat, ref_frac, ref_lat, [], []), cand_frac, lat, ok

    # ---- steps -------------------------------------------------------------------------------------
    def _check_inputs(
        self,
        start_structures: Sequence[Structure],
        predict: Mapping[str, Predictor],
        dmin_matrix: np.ndarray,
        pending: Sequence[Structure],
        evaluated: Sequence[Structure],
    ) -> None:
        if not start_structures:
            raise InputError("proposal.start_structures", "expected at least one structure to start from")
        if not predict:
            raise InputError("proposal.predict", "expected at least one technique's predictor")
        species = _species(start_structures[0])
        groups = (("start_structures", start_structures), ("pending", pending), ("evaluated", evaluated))
        for name, group in groups:
            for k, s in enumerate(group):
                if _species(s) != species:
                    raise InputError(
                        f"proposal.{name}[{k}]",
                        "species/site order differs from start_structures[0] (fixed composition and order "
                        "expected)",
                    )
        n = len(species)
        if np.shape(dmin_matrix) != (n, n):
            raise InputError("dmin_matrix", f"expected shape ({n}, {n}), got {np.shape(dmin_matrix)}")

    def _starts(
        self,
        structures: Sequence[Structure],
        n_starts: int,
        reference: Structure | None,
        sampler: PerturbationSampler | None,
        dmin_matrix: np.ndarray,
        seed: int | None,
    ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """Start positions [B, N, 3], lattices [B, 3, 3] and parents (index into ``structures``, -1 for
        a fresh perturbation of ``reference``)."""
        import torch

        if self.starts == "best":
            parents = np.arange(n_starts) % len(structures)
            chosen = [structures[int(p)] for p in parents]
        else:
            n_given = min(len(structures), n_starts)
            chosen = list(structures[:n_given])
            fresh: list[Structure] = []
            if n_starts > n_given:
                base = reference if reference is not None else structures[0]
                sampler = sampler if sampler is not None else PerturbationSampler()
                fresh = self._perturb(sampler, base, n_starts - n_given, dmin_matrix, seed)
            chosen += fresh
            parents = np.concatenate([np.arange(n_given), np.full(len(fresh), -1)]).astype(int)
        pos = torch.tensor(np.stack([s.cart_coords for s in chosen]), dtype=torch.float64)
        lat = torch.tensor(np.stack([s.lattice.matrix for s in chosen]), dtype=torch.float64)
        if self.starts == "best":
            gen = torch.Generator(device="cpu")
            if seed is None:
                gen.seed()
            else:
                gen.manual_seed(seed)
            noise = torch.randn(pos.shape, generator=gen, dtype=torch.float64) * self.start_noise
            noise[: len(structures)] = 0.0  # the structures themselves are starts too
            pos = pos + noise
        device, dtype = _resolve_device(self.device), getattr(torch, self.dtype)
        return pos.to(device, dtype), lat.to(device, dtype), parents

    def _geometry(
        self, x0: torch.Tensor, l0: torch.Tensor, disp: torch.Tensor, strain: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        pos = x0 + disp if self.constraint is None else self.constraint.positions(x0 + disp, l0)
        if strain is None:
            return pos, l0
        eps = 0.5 * (strain + strain.transpose(-1, -2))
        deform = torch.eye(3, dtype=x0.dtype, device=x0.device) + eps
        return pos @ deform, l0 @ deform  # rows: r' = r (1 + ε), fractional coordinates unchanged

    def _evaluate(
        self,
        pos: torch.Tensor,
        lat: torch.Tensor,
        predict: Mapping[str, Predictor],
        acquisition: AcquisitionFunction,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:

        means: dict[str, torch.Tensor] = {}
        stds: dict[str, torch.Tensor] = {}
        for t, fn in predict.items():
            mean, std = fn(pos, lat)
            if mean.ndim != 2 or mean.shape[0] != pos.shape[0] or std.shape != mean.shape:
                raise InputError(
                    f"proposal.predict[{t}]",
                    f"expected (mean, std) of shape [B={pos.shape[0]}, M], got {tuple(mean.shape)} and "
                    f"{tuple(std.shape)}",
                )
            means[t], stds[t] = mean, std
        return acquisition(means, stds), means, stds

    def _optimise(
        self,
        x0: torch.Tensor,
        l0: torch.Tensor,
        predict: Mapping[str, Predictor],
        acquisition: AcquisitionFunction,
        dmin_matrix: np.ndarray,
        steps: int,
    ) -> dict:
        """Adam on every start, ``max_batch`` at a time; each start's best valid point of its trajectory."""
        import torch

        dmin = torch.as_tensor(np.asarray(dmin_matrix, dtype=float), dtype=x0.dtype, device=x0.device)
        parts = []
        chunks = range(0, x0.shape[0], self.max_batch)
        desc = f"proposal ({x0.shape[0]} starts × {steps} steps)"
        with phase(desc, len(chunks) * (steps + 1), enabled=self.progress) as bar:
            for c in chunks:
                sl = slice(c, c + self.max_batch)
                parts.append(self._optimise_batch(x0[sl], l0[sl], predict, acquisition, dmin, steps, bar))
        out: dict = {k: torch.cat([p[k] for p in parts]) for k in ("value", "pos", "lat")}
        for key in ("means", "stds"):
            out[key] = {t: torch.cat([p[key][t] for p in parts]) for t in parts[0][key]}
        return out

    def _optimise_batch(
        self,
        x0: torch.Tensor,
        l0: torch.Tensor,
        predict: Mapping[str, Predictor],
        acquisition: AcquisitionFunction,
        dmin: torch.Tensor,
        steps: int,
        bar: Phase,
    ) -> dict:
        """The hot loop: one batched evaluation, penalty and Adam step per step; the best point of each
        start is kept on the device (the progress bar reads it every :data:`_REPORT_EVERY` steps)."""
        import torch

        from aso_workflows.surrogate.neighbors import SkinNeighborList

        disp = torch.zeros_like(x0, requires_grad=True)
        groups: list[dict] = [{"params": [disp], "lr": self.lr}]
        strain = None
        if self.optimise_lattice:
            strain = torch.zeros_like(l0, requires_grad=True)
            groups.append({"params": [strain], "lr": self.lattice_lr})
        opt = torch.optim.Adam(groups)
        reach = float(dmin.max()) if dmin.numel() else 0.0
        contacts = SkinNeighborList(reach, _CONTACT_SKIN) if reach > 0 else None  # kept across the steps
        b = x0.shape[0]
        best: dict = {
            "value": torch.full((b,), torch.inf, dtype=x0.dtype, device=x0.device),
            "pos": x0.clone(),
            "lat": l0.clone(),
            "means": {},
            "stds": {},
        }
        for step in range(steps + 1):
            pos, lat = self._geometry(x0, l0, disp, strain)
            value, means, stds = self._evaluate(pos, lat, predict, acquisition)
            penalty = min_distance_penalty(pos, lat, dmin, contacts) if contacts else torch.zeros_like(value)
            if self.constraint is not None:  # restraints (aso_workflows/optimizers/constraint.py)
                penalty = penalty + self.constraint.penalty(pos, lat)
            with torch.no_grad():
                better = torch.isfinite(value) & (penalty == 0) & (value < best["value"])
                best["value"] = torch.where(better, value, best["value"])
                best["pos"] = torch.where(better[:, None, None], pos, best["pos"])
                best["lat"] = torch.where(better[:, None, None], lat, best["lat"])
                for src, dst in ((means, best["means"]), (stds, best["stds"])):
                    for t, v in src.items():
                        dst[t] = torch.where(better[:, None], v, dst[t]) if t in dst else v.detach().clone()
            if step % _REPORT_EVERY == 0 or step == steps:  # a host read: not at every step
                bar.update(1, best=float(best["value"].min()), valid=int(torch.isfinite(best["value"]).sum()))
            else:
                bar.update(1)
            if step == steps:
                break
            finite = torch.isfinite(value)
            loss = (
                torch.where(finite, value, torch.zeros_like(value)).sum()
                + self.penalty_weight * penalty.sum()
            )
            opt.zero_grad()
            loss.backward()
            for p in (disp, strain):
                if p is not None and p.grad is not None:
                    p.grad.nan_to_num_(0.0, 0.0, 0.0)  # one bad start must not poison the others
            opt.step()
            if strain is not None:
                with torch.no_grad():
                    strain.clamp_(-self.max_strain, self.max_strain)
        return best

    def _greedy(
        self,
        order: list[int],
        frac: torch.Tensor,
        lat: torch.Tensor,
        ref_frac: torch.Tensor,
        ref_lat: torch.Tensor,
        chosen_frac: list[torch.Tensor],
        chosen_lat: list[torch.Tensor],
    ) -> list[int]:
        """Indices (in ``order``'s ranking) of up to ``q - len(chosen)`` mutually distinct candidates."""
        import torch

        want = self.q - len(chosen_frac)
        if want <= 0 or not order:
            return []
        idx = torch.tensor(order)
        far = torch.ones(len(order), dtype=torch.bool)
        if len(ref_frac):
            far = (
                rms_displacement(frac[idx], lat[idx], ref_frac, ref_lat).min(1).values
                >= self.diversity_threshold
            )
        picked: list[int] = []
        cf, cl = list(chosen_frac), list(chosen_lat)
        for pos_in_order, k in enumerate(order):
            if len(picked) == want:
                break
            if not far[pos_in_order]:
                continue
            if cf:
                d = rms_displacement(frac[k][None], lat[k][None], torch.stack(cf), torch.stack(cl))
                if float(d.min()) < self.diversity_threshold:
                    continue
            picked.append(k)
            cf.append(frac[k])
            cl.append(lat[k])
        return picked

    def _structure(self, like: Structure, frac: torch.Tensor, lat: torch.Tensor) -> Structure:
        return Structure(
            Lattice(lat.numpy()),
            like.species,
            frac.numpy(),
            to_unit_cell=True,
            site_properties=like.site_properties or None,
        )

    @staticmethod
    def _perturb(
        sampler: PerturbationSampler, s: Structure, n: int, dmin_matrix: np.ndarray, seed: int | None
    ) -> list[Structure]:
        """``n`` valid perturbations of ``s``, halving the displacement range (up to 4 times) when a
        crowded structure (e.g. a best one at the edge of the allowed distances) leaves no valid draw;
        an empty list if even that fails."""
        for _ in range(5):
            try:
                return sampler.sample(s, n, dmin_matrix=dmin_matrix, seed=seed)
            except InputError:
                sampler = dataclasses.replace(
                    sampler,
                    min_displacement=sampler.min_displacement / 2,
                    max_displacement=sampler.max_displacement / 2,
                    max_tries=min(sampler.max_tries, 200),
                )
        return []
