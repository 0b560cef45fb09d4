"""Least-squares refinement with finite-difference Jacobians (``optimizer: lsq``).

The refinement a practitioner runs when the simulator gives no derivatives (FEFF for EXAFS and XANES;
any code treated as a black box): Levenberg–Marquardt on the atomic positions against the campaign's
own targets and mismatch, the Jacobian of the residuals taken by forward differences. Every simulator
run is counted:

- the Jacobian's forward calls (one structure with one coordinate moved by ``fd_step`` per refined
  coordinate: ``P`` calls for ``P`` coordinates) run inside the propose job; the proposal that first
  needs a Jacobian stores their number in ``predicted.lsq.jacobian_calls`` (the other proposals of the
  batch share it and store 0);
- every trial step is a proposal, simulated by the campaign like any other candidate (one campaign
  evaluation each), and the Levenberg–Marquardt accept/reject decision reads its stored mismatch.

An lsq evaluation therefore costs ``1 + jacobian_calls`` simulator runs (:func:`simulator_calls`), the
count the structure-determination benchmark puts on its x axis (``lsq/calc``). With every atom refined
one step costs ``P + 1 = 3N + 1`` structures (73 for 24 atoms): at a budget of 100 simulations the
refinement makes at most one step. ``atoms_per_step`` refines a block of atoms at a time (block
coordinate descent, ``3k + 1`` structures per step) for small budgets.

The residual vector ``r`` is the campaign's objective written as a sum of squares: per target, the
(fitted) spectrum minus the target on the target grid, times ``sqrt(weight · w_i / (Σw · normaliser))``
(``w`` the nuisance fitter's point weights, uniform without one), so ``r·r`` is the stored mismatch.

Batches and damping
-------------------
One Jacobian per iteration at the current point (the *head*), then the ``q`` proposals are Levenberg–
Marquardt steps ``(JᵀJ + λ·diag(JᵀJ)) δ = −Jᵀr`` for a ladder of dampings ``λ·10^(k − q//2)``, k = 0 … q−1
(q = 1: the classic one trial). Each step is capped at ``max_step`` Å per atom and, if it breaks a minimum
distance, halved until it does not (as the DiffPy baseline does). When the campaign has simulated them:
the best trial replaces the head if it lowers the mismatch (next centre ``λ_best / 10``, the next block
of atoms), else the head stays, its Jacobian is reused from a cache file (no new calls; the
proposal charges none) and the ladder moves above the old one (``λ_max · 10^(1 + q//2)``). When λ passes
``max_damping`` on every block in a row the refinement has converged: it restarts from the best structure
so far, every atom displaced by up to ``restart_displacement`` Å (seeded): a multi-start refinement.

State from the store
--------------------
Nothing is kept in memory between jobs: the refinement path (head, λ, block, restarts) is replayed from
the stored lsq proposals and their evaluations, so a resumed campaign continues where it stopped. The
Jacobian cache (``<workdir>/lsq/*.npz``) only saves calls: without it the Jacobian is computed again and
charged again.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal, Protocol, cast

import numpy as np
from pydantic import Field
from pymatgen.core import Structure

from aso_workflows.errors import InputError
from aso_workflows.optimizers.base import (
    FALLBACK_KIND,
    CampaignView,
    CandidateProposal,
    Optimizer,
    ProposalContext,
)
from aso_workflows.optimizers.registry import register_optimizer
from aso_workflows.settings import settings_dataclass
from aso_workflows.structures import structure_fingerprint

__all__ = ["LeastSquaresRefinement", "residual_vector", "simulate_structure", "simulator_calls"]

if TYPE_CHECKING:
    from aso_workflows.spectra.mismatch import Objective
    from aso_workflows.spectra.spectrum import Spectrum

KIND = "lsq"


class RefinementCampaign(CampaignView, Protocol):
    """What the refinement reads beyond :class:`CampaignView` (all of it
    :class:`~aso_workflows.campaign.state.CampaignState`'s): its work folder (Jacobian cache), the XAS
    absorber sites, stored spectra and proposals."""

    @property
    def workdir(self) -> Path: ...
    def absorber_sites(self, technique: str) -> list[int]: ...
    def spectrum(self, cache_id: str) -> Spectrum: ...
    def proposals(self, iteration: int | None = None) -> list[dict]: ...


_INITIAL_KINDS = ("start", "initial")


# ---- the forward model -------------------------------------------------------------------------------
def simulate_structure(state: RefinementCampaign, structure: Structure, workdir: Path) -> dict:
    """Every target technique's spectrum of ``structure``, as the campaign's simulators compute them
    (XAS: the campaign's absorber sites, one run each, averaged). Returns ``{technique: Spectrum}``."""
    from aso_workflows.spectra.base import AbsorberSimulator

    out = {}
    for technique, sim in state.simulators.items():
        d = Path(workdir) / technique
        if isinstance(sim, AbsorberSimulator):
            sites = state.absorber_sites(technique) or sim.absorber_sites(structure)
            spectra = [
                sim.run_absorber(sim.write_absorber_inputs(structure, site, d / f"site_{site:04d}"))
                for site in sites
            ]
            out[technique] = sim.combine(spectra, sites)
        else:
            d.mkdir(parents=True, exist_ok=True)
            out[technique] = sim.simulate(structure, workdir=d)
    return out


def residual_vector(objective: Objective, fitted: dict) -> np.ndarray:
    """The objective's residuals: ``r·r`` equals ``objective.evaluate`` of the fitted spectra.

    Parameters
    ----------
    objective
        The campaign's :class:`~aso_workflows.spectra.mismatch.Objective`.
    fitted
        ``{technique: Spectrum}``: spectra already fitted to the targets (a term's fitted spectrum, or
        the simulation when the target has no fit).
    """
    parts = []
    for term in objective.terms:
        y = term.on_target_grid(fitted[term.technique]).y
        d = np.asarray(y, dtype=float) - np.asarray(term.target.y, dtype=float)
        w = term.point_weights
        share = np.full(d.size, 1.0 / d.size) if w is None else np.asarray(w, dtype=float) / float(np.sum(w))
        parts.append(np.sqrt(term.weight * share / term.normaliser) * d)
    return np.concatenate(parts)


def _residuals_of(state: RefinementCampaign, structure: Structure, workdir: Path) -> tuple[np.ndarray, int]:
    """Simulate ``structure``, fit it as the campaign does, return (residuals, simulator calls).

    The calls are 1 (the structure) plus whatever the nuisance fits re-simulated.
    """
    spectra = simulate_structure(state, structure, workdir)
    _, fits = state.objective.evaluate_fitted(spectra, structure)
    r = residual_vector(state.objective, {t: f.spectrum for t, f in fits.items()})
    return r, 1 + sum(int(f.n_simulations) for f in fits.values())


def _stored_residuals(state: RefinementCampaign, evaluation: dict) -> np.ndarray:
    """The residuals of an evaluated structure from its stored (fitted) spectra: no simulation."""
    spectra = {t: state.spectrum(cid) for t, cid in (evaluation.get("spectra") or {}).items()}
    return residual_vector(state.objective, spectra)


# ---- the refinement path, replayed from the store ------------------------------------------------------
@dataclass
class RefinementPath:
    """Where the refinement stands after the stored lsq proposals (see the module docstring)."""

    head: dict  # the evaluation document of the current point
    damping: float
    block: int  # index into the block order
    segment: int  # restarts so far
    stalled_blocks: int  # blocks in a row whose λ passed max_damping
    charged: set[str] = field(default_factory=set)  # Jacobian keys already charged to a proposal


def _jacobian_key(head_fp: str, atoms: list[int], fd_step: float) -> str:
    payload = f"{head_fp}|{','.join(map(str, atoms))}|{fd_step:.6g}"
    return hashlib.sha1(payload.encode()).hexdigest()[:20]


@register_optimizer("lsq")
@settings_dataclass
class LeastSquaresRefinement(Optimizer):
    """Levenberg–Marquardt on the atomic positions with finite-difference Jacobians.

    See the module docstring.

    Attributes
    ----------
    fd_step
        Displacement (Å) of one Cartesian coordinate for its forward difference. 0.01 Å: far below the
        thermal broadening of a PDF peak or an EXAFS shell, far above FEFF's and pdffit2's numerical noise.
    damping
        Initial Levenberg–Marquardt damping λ (relative to ``diag(JᵀJ)``).
    max_damping
        λ above which a block counts as converged (move to the next block; all blocks in a row: restart).
    max_step
        Largest displacement (Å) of one atom in one step (a trust region; longer steps are scaled down).
    atoms_per_step
        Atoms refined per Jacobian (block coordinate descent, blocks in a seeded order); ``None``: every
        atom (a Jacobian costs ``3N`` simulations).
    restart_displacement
        Largest displacement (Å) of each atom when a converged refinement restarts from the best structure.
    start_from
        ``"best"`` initial structure (start included) or the ``"start"`` structure.
    """

    fd_step: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 0.01
    damping: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1e-2
    max_damping: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1e6
    max_step: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 0.3
    atoms_per_step: Annotated[int, Field(ge=1)] | None = None
    restart_displacement: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 0.2
    start_from: Literal["best", "start"] = "best"
    section: ClassVar[str | None] = "lsq"

    # ---- blocks ---------------------------------------------------------------------------------
    def blocks(self, n_atoms: int, seed: int) -> list[list[int]]:
        """The atom blocks in the order they are refined (one block of all atoms by default)."""
        if self.atoms_per_step is None or self.atoms_per_step >= n_atoms:
            return [list(range(n_atoms))]
        order = np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, 7])).permutation(n_atoms)
        k = self.atoms_per_step
        return [sorted(int(a) for a in order[i : i + k]) for i in range(0, n_atoms, k)]

    def ladder(self, centre: float, q: int) -> list[float]:
        """The dampings of one batch: ``centre · 10^(k − q//2)``, k = 0 … q−1."""
        return [centre * 10.0 ** (k - q // 2) for k in range(q)]

    # ---- replay ---------------------------------------------------------------------------------
    def replay(self, state: RefinementCampaign) -> RefinementPath:
        """The refinement path after every stored lsq batch (deterministic; module docstring)."""
        evals = state.evaluations(status=None)
        initial = [e for e in evals if e.get("kind") in _INITIAL_KINDS and e["status"] == "completed"]
        if self.start_from == "start":
            initial = [e for e in initial if e.get("kind") == "start"]
        if not initial:
            raise InputError("lsq", "the refinement needs a simulated start structure; none is stored yet")
        by_pid = {e["proposal_id"]: e for e in evals}
        path = RefinementPath(
            head=min(initial, key=lambda e: e["objective"]),
            damping=self.damping,
            block=0,
            segment=0,
            stalled_blocks=0,
        )
        n_blocks = len(self.blocks(len(state.start), state.config.seed))
        batches: dict[int, list[dict]] = {}
        for p in state.proposals():
            info = (p.get("predicted") or {}).get("lsq")
            if info is not None:
                batches.setdefault(int(p["iteration"]), []).append(p)
        for it in sorted(batches):
            props = batches[it]
            for p in props:
                info = p["predicted"]["lsq"]
                if info.get("jacobian_calls"):
                    path.charged.add(info["jacobian"])
            restart = [p for p in props if p["predicted"]["lsq"].get("restart")]
            done = [by_pid[p["_id"]] for p in props if p["_id"] in by_pid]
            ok = [e for e in done if e["status"] == "completed"]
            if restart:
                # a restart: the perturbed best is the new head whatever its mismatch
                e = by_pid.get(restart[0]["_id"])
                if e is not None and e["status"] == "completed":
                    path.head, path.damping, path.stalled_blocks = e, self.damping, 0
                    path.segment += 1
                continue
            best = min(ok, key=lambda e: e["objective"]) if ok else None
            if best is not None and best["objective"] < path.head["objective"]:
                lam = next(p["predicted"]["lsq"]["lambda"] for p in props if p["_id"] == best["proposal_id"])
                path.head, path.damping, path.stalled_blocks = best, lam / 10.0, 0
                path.block = (path.block + 1) % n_blocks
            else:
                lams = [p["predicted"]["lsq"]["lambda"] for p in props]
                path.damping = max(lams) * 10.0 ** (1 + len(props) // 2)
                if path.damping > self.max_damping:
                    path.stalled_blocks += 1
                    path.block = (path.block + 1) % n_blocks
                    path.damping = self.damping
        return path

    # ---- the Jacobian -------------------------------------------------------------------------------
    def jacobian(
        self, state: RefinementCampaign, head: Structure, atoms: list[int], workdir: Path, r0: np.ndarray
    ) -> tuple[np.ndarray, int]:
        """Forward-difference Jacobian of the residuals w.r.t. the Cartesian coordinates of ``atoms``.

        Returns ``(J [M, 3k], simulator calls)``.
        """
        cart0 = np.asarray(head.cart_coords, dtype=float)
        cols, calls = [], 0
        for a in atoms:
            for x in range(3):
                cart = cart0.copy()
                cart[a, x] += self.fd_step
                s = _structure(head, cart)
                r, n = _residuals_of(state, s, workdir / f"fd_{a}_{x}")
                calls += n
                cols.append((r - r0) / self.fd_step)
        return np.stack(cols, axis=1), calls

    def _cached_jacobian(
        self,
        state: RefinementCampaign,
        head: Structure,
        head_fp: str,
        atoms: list[int],
        r0: np.ndarray,
        key: str,
    ) -> tuple[np.ndarray, int]:
        """The Jacobian from the cache file, or computed (and cached) with its calls."""
        cache = state.workdir / "lsq" / f"{key}.npz"
        if cache.is_file():
            try:
                with np.load(cache) as z:
                    jac = np.asarray(z["jacobian"])
                if jac.shape == (r0.size, 3 * len(atoms)):
                    return jac, 0
            except (OSError, ValueError, KeyError):
                pass  # a torn file: compute again
        (state.workdir / "lsq").mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="aso-lsq-", dir=state.workdir / "lsq") as tmp:
            jac, calls = self.jacobian(state, head, atoms, Path(tmp), r0)
        part = cache.with_suffix(".part.npz")
        np.savez(part, jacobian=jac)
        part.replace(cache)
        return jac, calls

    # ---- proposals --------------------------------------------------------------------------------
    def propose(self, ctx: ProposalContext) -> list[CandidateProposal]:
        state = cast(RefinementCampaign, ctx.state)  # the campaign's CampaignState
        path = self.replay(state)
        blocks = self.blocks(len(state.start), state.config.seed)
        seen = {structure_fingerprint(s) for s, _ in ctx.evaluated} | {
            structure_fingerprint(s) for s in ctx.pending
        }
        if path.stalled_blocks >= len(blocks):
            return self._restart(ctx, path, seen)
        head = Structure.from_dict(path.head["structure"])
        head_fp = structure_fingerprint(head)
        atoms = blocks[path.block % len(blocks)]
        r0 = _stored_residuals(state, path.head)
        key = _jacobian_key(head_fp, atoms, self.fd_step)
        jac, calls = self._cached_jacobian(state, head, head_fp, atoms, r0, key)
        charge = 0 if key in path.charged else int(3 * len(atoms)) if calls == 0 else int(calls)
        jtj = jac.T @ jac
        g = jac.T @ r0
        # Marquardt's scaling, floored so that a coordinate the spectra do not see (a zero column: a
        # symmetric position, an atom beyond every absorber's cluster) keeps a finite damping
        diag = np.diag(jtj)
        scale = np.maximum(diag, 1e-9 * max(float(diag.max(initial=0.0)), 1e-300))
        out: list[CandidateProposal] = []
        for k, lam in enumerate(self.ladder(path.damping, ctx.q)):
            delta = -np.linalg.lstsq(jtj + lam * np.diag(scale), g, rcond=None)[0]
            step = delta.reshape(len(atoms), 3)
            longest = float(np.linalg.norm(step, axis=1).max()) if len(atoms) else 0.0
            if longest > self.max_step:
                step *= self.max_step / longest
            structure, halvings = self._constrained(head, atoms, step, state.dmin_matrix)
            predicted_decrease = float(-(g @ delta) - 0.5 * delta @ jtj @ delta)
            fp = structure_fingerprint(structure) if structure is not None else None
            info = {
                "lambda": float(lam),
                "jacobian": key,
                "jacobian_calls": charge if not out else 0,
                "parameters": 3 * len(atoms),
                "atoms": atoms,
                "head": path.head["_id"],
                "head_objective": float(path.head["objective"]),
                "segment": path.segment,
                "step_max_A": float(np.linalg.norm(step, axis=1).max()) if len(atoms) else 0.0,
                "min_distance_halvings": halvings,
                "predicted_decrease": predicted_decrease,
            }
            if structure is None or fp in seen:
                # the step is too short to be a new structure, or no shortened step keeps the minimum
                # distances: a perturbation of the head instead (kind fallback), so the batch stays q long
                structure = self._perturbed(state, head, ctx, k)
                out.append(
                    CandidateProposal(
                        structure=structure,
                        predicted={"lsq": info},
                        note="lsq step unusable (duplicate or too close); perturbed head instead",
                        kind=FALLBACK_KIND,
                    )
                )
            else:
                out.append(
                    CandidateProposal(
                        structure=structure,
                        predicted={"lsq": info},
                        note=f"lsq step λ={lam:.2g} on {len(atoms)} atom(s)"
                        + (f", {info['jacobian_calls']} Jacobian calls" if info["jacobian_calls"] else ""),
                    )
                )
            seen.add(structure_fingerprint(out[-1].structure))
        return out

    def _restart(self, ctx: ProposalContext, path: RefinementPath, seen: set[str]) -> list[CandidateProposal]:
        """A converged refinement: the best structure so far, perturbed; the first becomes the new head."""
        state = cast(RefinementCampaign, ctx.state)  # the campaign's CampaignState
        best = ctx.evaluated[0][0] if ctx.evaluated else state.start
        out = []
        for k in range(ctx.q):
            s = self._perturbed(state, best, ctx, k)
            out.append(
                CandidateProposal(
                    structure=s,
                    predicted={
                        "lsq": {
                            "restart": k == 0,
                            "jacobian_calls": 0,
                            "lambda": float(self.damping),
                            "segment": path.segment + 1,
                        }
                    },
                    note="lsq restart: converged on every block; best structure perturbed",
                )
            )
            seen.add(structure_fingerprint(s))
        return out

    def _perturbed(
        self, state: RefinementCampaign, structure: Structure, ctx: ProposalContext, candidate: int
    ) -> Structure:
        from aso_workflows.optimizers.sampling import PerturbationSampler

        seq = np.random.SeedSequence([state.config.seed & 0xFFFFFFFF, ctx.iteration, candidate, 11])
        sampler = PerturbationSampler(
            min_displacement=0.0,
            max_displacement=self.restart_displacement,
            amplitude="atom",
            seed=int(seq.generate_state(1)[0]),
        )
        return sampler.sample(structure, 1, dmin_matrix=state.dmin_matrix)[0]

    @staticmethod
    def _constrained(
        head: Structure, atoms: list[int], step: np.ndarray, dmin: np.ndarray
    ) -> tuple[Structure | None, int]:
        """``head`` with ``atoms`` moved by ``step`` (Å), halved until every minimum distance holds."""
        from aso_workflows.optimizers.diffpy_refine import DiffPyRefinement

        cart = np.asarray(head.cart_coords, dtype=float).copy()
        cart[atoms] += step
        return DiffPyRefinement._enforce_min_distances(_structure(head, cart), head, dmin)


def _structure(template: Structure, cart: np.ndarray) -> Structure:
    return Structure(
        template.lattice,
        template.species,
        cart,
        coords_are_cartesian=True,
        to_unit_cell=True,
        site_properties=template.site_properties or None,
    )


def simulator_calls(evaluations: list[dict], proposals: dict[str, dict] | None = None) -> list[int]:
    """Cumulative simulator runs after each evaluation (chronological order, failed ones included).

    One per evaluation, plus the ``predicted.lsq.jacobian_calls`` of its proposal (the finite-difference
    Jacobian the lsq step was computed from).
    """
    total, out = 0, []
    for e in evaluations:
        cost = 1
        if proposals is not None:
            lsq = (proposals.get(str(e.get("proposal_id")), {}).get("predicted") or {}).get("lsq") or {}
            cost += int(lsq.get("jacobian_calls", 0) or 0)
        total += cost
        out.append(total)
    return out
