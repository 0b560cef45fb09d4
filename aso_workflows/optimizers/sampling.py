"""Random perturbations of a structure and periodic minimum-distance constraints (numpy and torch).

The initial data of a campaign are perturbations of the starting structure: each structure draws one
amplitude uniformly from ``[min_displacement, max_displacement]`` Å (reference 0.1–1.0 Å) and every atom
moves by it along a random direction; the lattice is optionally strained. An atom closer to another than
the pair-specific minimum distance (periodic images included) is re-drawn, one at a time, instead of the
whole structure (:class:`PerturbationSampler`).

The same constraint is needed inside the gradient proposal optimiser, for a batch of structures at once
and differentiably, so this module also provides :func:`min_distance_penalty` (sum of squared violations)
and :func:`violations` (exact hard check) on torch tensors. torch is imported by the functions that use
it: reading a campaign file (which validates :class:`PerturbationSampler`) does not load it.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import Field, model_validator
from pymatgen.core import Lattice, Structure

from aso_workflows.errors import InputError
from aso_workflows.settings import settings_dataclass
from aso_workflows.structures import min_distance_table, pair_min_distance_matrix

if TYPE_CHECKING:
    import torch

    from aso_workflows.surrogate.neighbors import SkinNeighborList

__all__ = [
    "PerturbationSampler",
    "SampleReport",
    "min_distance_matrix",
    "min_distance_penalty",
    "violations",
    "close_pairs",
]

# Upper bound on B·N·N·S distances held at once by the periodic scan (memory ~ 8 bytes each, a few times).
_SCAN_BUDGET = 4_000_000


def min_distance_matrix(
    structure: Structure,
    overrides: Mapping[str, float] | None = None,
    scale: float = 0.7,
    reference: Structure | None = None,
) -> np.ndarray:
    """The (N, N) matrix of minimum allowed distances (Å) between the sites of ``structure``.

    Parameters
    ----------
    structure
        Gives the species of each site (the order of sites is kept).
    overrides
        Pair entries like ``{"Ni-O": 1.7}`` (see :func:`aso_workflows.structures.min_distance_table`).
    scale
        Default distance is ``scale × (r_a + r_b)`` with pymatgen's atomic radii.
    reference
        Structure whose shortest pair distances cap the defaults (see
        :func:`~aso_workflows.structures.min_distance_table`); a campaign passes its start.
    """
    species = [site.specie.symbol for site in structure]
    table = min_distance_table(species, overrides, scale, reference=reference)
    return pair_min_distance_matrix(species, table)


# ---- periodic pair scan (torch) ------------------------------------------------------------------
# Hand-written: torch-geometric's radius_graph needs the optional compiled extras torch-cluster or
# pyg-lib, which the project does not require, and neither handles periodic images nor stays
# differentiable w.r.t. the lattice.
# Only pairs closer than max(dmin) matter, so a small block of image shifts suffices: after wrapping the
# fractional difference f into [-0.5, 0.5], an image n can be within d of the origin only if
# |f_k + n_k| <= d / h_k on every axis k, with h_k the spacing of the lattice planes normal to the
# reciprocal vector k (the fractional coordinate k of a vector of length d is at most d / h_k).


def _image_shifts(lattice: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Integer image shifts [S, 3] covering all images within ``cutoff`` of a wrapped difference.

    The range per axis is the maximum over the batch, so one shift set serves every structure.
    """
    import torch

    inv = torch.linalg.inv(lattice.detach().double())  # frac = cart @ inv; column k = reciprocal vector k
    spacing = 1.0 / torch.linalg.norm(inv, dim=-2)  # [B, 3] interplanar spacings h_k
    # |f_k + n_k| <= cutoff / h_k with |f_k| <= 1/2 needs |n_k| <= 1/2 + cutoff / h_k (tiny margin for
    # rounding); a cutoff below half of every spacing leaves only the wrapped difference itself (n = 0).
    reach = (cutoff / spacing.min(dim=0).values + 0.5 + 1e-6).floor().long().tolist()
    axes = [torch.arange(-k, k + 1, dtype=torch.float64) for k in reach]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
    return grid.to(device=lattice.device, dtype=lattice.dtype)


def _as_dmin(dmin_matrix: np.ndarray | torch.Tensor, like: torch.Tensor, n: int) -> torch.Tensor:
    import torch

    d = torch.as_tensor(dmin_matrix, dtype=like.dtype, device=like.device)
    if d.shape != (n, n):
        raise InputError("dmin_matrix", f"expected shape ({n}, {n}) for {n} atoms, got {tuple(d.shape)}")
    return d


def close_pairs(
    positions: torch.Tensor, lattice: torch.Tensor, dmin_matrix: np.ndarray | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every (structure, atom i, atom j, periodic image) closer than its minimum distance.

    Ordered pairs: each violating pair appears twice, as (i, j) and (j, i); an atom too close to its own
    periodic image appears as (i, i) with a non-zero image.

    Parameters
    ----------
    positions
        Cartesian positions [B, N, 3] (Å).
    lattice
        Lattice vectors as rows [B, 3, 3] (Å).
    dmin_matrix
        Minimum allowed distance [N, N] (Å).

    Returns
    -------
    b, i, j
        Long tensors [K]: structure and atom indices.
    image
        Float tensor [K, 3]: the integer lattice translation ``m`` with ``r_j - r_i + m @ L`` the close vector.
    distance
        [K] the distances (Å).
    """
    import torch

    with torch.no_grad():
        return _close_pairs(positions.detach(), lattice.detach(), dmin_matrix)


def _close_pairs(
    pos: torch.Tensor, lat: torch.Tensor, dmin_matrix: np.ndarray | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    import torch

    nb, n, _ = pos.shape
    dmin = _as_dmin(dmin_matrix, pos, n)
    dmin2 = dmin**2
    cutoff = float(dmin.max()) if n else 0.0
    shifts = _image_shifts(lat, cutoff)  # [S, 3]
    zero = int((shifts.abs().sum(-1) == 0).nonzero()[0, 0])
    eye = torch.eye(n, dtype=torch.bool, device=pos.device)
    chunk = max(1, _SCAN_BUDGET // max(1, n * n * len(shifts)))
    out: list[tuple[torch.Tensor, ...]] = []
    for start in range(0, nb, chunk):
        p, latc = pos[start : start + chunk], lat[start : start + chunk]
        frac = p @ torch.linalg.inv(latc)
        df = frac[:, None, :, :] - frac[:, :, None, :]  # [b, i, j, 3] = f_j - f_i
        rounded = torch.round(df)
        cart = (df - rounded) @ latc[:, None]  # [b, N, N, 3]
        scart = shifts @ latc  # [b, S, 3]
        # |c + s|^2 = |c|^2 + 2 c.s + |s|^2 without materialising [b, N, N, S, 3]
        d2 = (
            (cart**2).sum(-1)[..., None]
            + 2 * torch.einsum("bijx,bsx->bijs", cart, scart)
            + (scart**2).sum(-1)[:, None, None, :]
        )
        d2[:, eye, zero] = torch.inf
        hit = (d2 < dmin2[None, :, :, None]).nonzero()
        if len(hit):
            b, i, j, s = hit.unbind(-1)
            image = shifts[s] - rounded[b, i, j]
            # recompute directly (the expanded form above loses precision for nearly coincident atoms)
            vec = p[b, j] - p[b, i] + torch.einsum("kx,kxy->ky", image, latc[b])
            out.append((b + start, i, j, image, torch.linalg.norm(vec, dim=-1)))
    if not out:
        empty = torch.zeros(0, dtype=torch.long, device=pos.device)
        return empty, empty, empty, torch.zeros(0, 3, dtype=pos.dtype, device=pos.device), pos.new_zeros(0)
    return tuple(torch.cat(parts) for parts in zip(*out, strict=True))  # type: ignore[return-value]


def violations(
    positions: torch.Tensor, lattice: torch.Tensor, dmin_matrix: np.ndarray | torch.Tensor
) -> torch.Tensor:
    """BoolTensor [B]: True where a structure has a pair (periodic images included) closer than allowed.

    Exact: every periodic image within the largest minimum distance is checked. Pass float64 tensors for
    the final hard check of candidates.
    """
    import torch

    b, i, j, _, d = close_pairs(positions, lattice, dmin_matrix)
    dmin = _as_dmin(dmin_matrix, positions, positions.shape[1])
    real = d < dmin[i, j]  # the scan's expanded form may flag borderline pairs; confirm with direct distances
    out = torch.zeros(positions.shape[0], dtype=torch.bool, device=positions.device)
    out[b[real]] = True
    return out


def min_distance_penalty(
    positions: torch.Tensor,
    lattice: torch.Tensor,
    dmin_matrix: np.ndarray | torch.Tensor,
    contacts: SkinNeighborList | None = None,
) -> torch.Tensor:
    """Differentiable constraint penalty [B]: Σ over close pairs and images of (d_min − d)² (Å²).

    Zero for a structure that satisfies every minimum distance; its gradient pushes too-close atoms apart
    (and, through the lattice, stretches a cell whose periodic images are too close). Which pairs are
    close is found without gradient (:func:`close_pairs`); their distances are then recomputed with
    gradient w.r.t. ``positions`` and ``lattice``. With ``contacts``, a
    :class:`~aso_workflows.surrogate.neighbors.SkinNeighborList` reaching at least the largest minimum
    distance, its pairs are used instead of a new scan (the proposal optimiser keeps one across its
    steps); the value is the same.
    """
    import torch

    dmin = _as_dmin(dmin_matrix, positions, positions.shape[1])
    if contacts is None:
        b, i, j, image, _ = close_pairs(positions, lattice, dmin_matrix)
        vec = positions[b, j] - positions[b, i] + torch.einsum("kx,kxy->ky", image, lattice[b])
        d = torch.sqrt((vec**2).sum(-1).clamp(min=1e-12))  # clamp: finite gradient for coincident atoms
        weight = 0.5  # ordered pairs: each unordered pair/image is counted twice
    else:
        d = contacts.distances(positions, lattice)  # (finite gradient for coincident atoms too)
        contacts.derived("reaches-dmin", lambda _: _check_reach(contacts.cutoff, dmin))  # once per scan
        pairs, n = contacts.pairs, positions.shape[1]
        assert pairs is not None  # distances() built it
        b, i, j = pairs.batch, pairs.src - pairs.batch * n, pairs.dst - pairs.batch * n
        weight = 1.0  # a half list: each pair/image once
    excess = torch.relu(dmin[i, j] - d) ** 2
    return positions.new_zeros(positions.shape[0]).index_add(0, b, weight * excess)


def _check_reach(cutoff: float, dmin: torch.Tensor) -> None:
    if cutoff < float(dmin.max()):
        raise InputError(
            "contacts", f"the list reaches {cutoff} Å, the largest minimum distance {float(dmin.max())} Å"
        )


# ---- the sampler ---------------------------------------------------------------------------------


def _strained_lattice(matrix: np.ndarray, dabc: np.ndarray, dangles: np.ndarray) -> np.ndarray:
    """Lattice with lengths scaled by ``1 + dabc`` and angles shifted by ``dangles`` (deg), same orientation.

    ``Lattice.from_parameters`` returns a standard orientation; the deformation it implies is carried
    back to the original frame (L1 = S1 S0⁻¹ L0), so positions stay comparable with the start.
    """
    lat = Lattice(matrix)
    s0 = Lattice.from_parameters(*lat.abc, *lat.angles).matrix
    abc = np.asarray(lat.abc) * (1.0 + dabc)
    angles = np.asarray(lat.angles) + dangles
    s1 = Lattice.from_parameters(*abc, *angles).matrix
    return s1 @ np.linalg.solve(s0, matrix)


def _random_directions(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    v = rng.normal(size=(*shape, 3))
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(norm == 0, 1.0, norm)


@dataclass
class _Neighbours:
    """Every ordered pair (i, j, image) of sites that can come closer than its minimum distance.

    Built once from the unperturbed sites with the cutoff ``dmin + 2 × (largest displacement)``: two atoms
    that each move at most ``L`` can only come within ``dmin`` if their unperturbed vector is shorter than
    ``dmin + 2L``. The vector of a pair after displacements ``u`` is ``vec + u[j] − u[i]`` (the image is
    kept explicitly, so no wrapping is needed). Self-image pairs (``i == j``) do not depend on the
    displacements and are kept apart.
    """

    i: np.ndarray  # [P] sorted
    j: np.ndarray  # [P]
    vec: np.ndarray  # [P, 3] unperturbed vector from i to the image of j (Å)
    dmin: np.ndarray  # [P] minimum distance of the pair
    start: np.ndarray  # [N + 1] pairs of atom a are start[a]:start[a + 1]
    self_too_close: np.ndarray  # [M] atoms closer than allowed to their own periodic image

    @classmethod
    def build(cls, base: np.ndarray, lattice: np.ndarray, dmin: np.ndarray, reach: float) -> _Neighbours:
        import torch

        b, i, j, image, _ = close_pairs(
            torch.from_numpy(base[None]), torch.from_numpy(lattice[None]), dmin + 2.0 * reach
        )
        i, j, image = i.numpy(), j.numpy(), image.numpy()
        vec = base[j] - base[i] + image @ lattice
        same = i == j
        self_close = i[same & (np.linalg.norm(vec, axis=-1) < dmin[i, j])]
        i, j, vec = i[~same], j[~same], vec[~same]
        order = np.argsort(i, kind="stable")
        i, j, vec = i[order], j[order], vec[order]
        start = np.searchsorted(i, np.arange(len(base) + 1))
        return cls(i=i, j=j, vec=vec, dmin=dmin[i, j], start=start, self_too_close=np.unique(self_close))

    def violating(self, disp: np.ndarray) -> np.ndarray:
        """[N] number of pairs of each atom closer than allowed after displacements ``disp`` [N, 3]."""
        d = np.linalg.norm(self.vec + disp[self.j] - disp[self.i], axis=-1)
        return np.bincount(self.i[d < self.dmin], minlength=len(disp))

    def conflicts(self, atom: int, cands: np.ndarray, disp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For displacements ``cands`` [K, 3] of ``atom`` (others at ``disp``): BoolArray [K, P_atom] of
        pairs too close, and the partner atoms [P_atom]."""
        sl = slice(self.start[atom], self.start[atom + 1])
        j = self.j[sl]
        v = self.vec[sl][None] + disp[j][None] - cands[:, None, :]
        return np.linalg.norm(v, axis=-1) < self.dmin[sl][None], j


@dataclass
class SampleReport:
    """How one sampled structure was made (see :meth:`PerturbationSampler.sample_with_report`).

    Attributes
    ----------
    amplitude
        The displacement (Å) of every atom of the structure (its last draw when it was restarted).
    violating_atoms
        Atoms of the first draw involved in a pair closer than its minimum distance.
    redrawn_atoms
        Atoms whose direction was drawn again (each one at a time, the others held).
    direction_draws
        Candidate directions tried for the re-drawn atoms.
    restarts
        Whole-structure draws abandoned because an atom found no valid direction (rare; bounded by
        ``max_tries``).
    seconds
        Wall time spent on this structure.
    """

    amplitude: float
    violating_atoms: int = 0
    redrawn_atoms: int = 0
    direction_draws: int = 0
    restarts: int = 0
    seconds: float = 0.0


@settings_dataclass
class PerturbationSampler:
    """Random perturbations of a structure that respect pair-specific minimum distances.

    As the reference (pymatgen ``Structure.perturb`` with one distance per structure): each structure
    draws one displacement amplitude ``A`` uniformly in ``[min_displacement, max_displacement]`` and
    every atom moves by ``A`` along its own random direction, so a set of samples spans near and far
    structures. Atoms that end up closer to another atom than the pair's minimum distance (periodic
    images included) are re-drawn one at a time — a new direction, same amplitude, checked against the
    current positions of all other atoms, up to ``max_atom_tries`` directions — instead of rejecting the
    whole structure, whose acceptance falls exponentially with the number of atoms (a 40-atom SrTiO3
    2×2×2 had no valid structure in 30,000 whole-structure draws at 0.1–1.0 Å; ``benchmarks/sampler.py``).
    Only when an atom finds no valid direction is the structure drawn again (``max_tries`` times).

    Attributes
    ----------
    min_displacement, max_displacement
        Range (Å) of the per-structure amplitude (reference 0.1–1.0).
    amplitude
        ``"structure"`` (default, reference): one amplitude per structure, every atom moved by it;
        ``"atom"``: every atom draws its own length in the range (narrower spread of the data set).
    perturb_lattice
        Also strain the lattice (the reference keeps it fixed by default).
    max_strain
        Relative change of each lattice length, uniform in ``±max_strain``.
    max_angle_change
        Change of each lattice angle, uniform in ``±max_angle_change`` degrees.
    min_distances
        Overrides of the minimum-distance table, e.g. ``{"Ni-O": 1.7}`` (Å).
    min_distance_scale
        Default minimum distance is ``scale × (r_a + r_b)`` (pymatgen atomic radii).
    max_atom_tries
        Directions tried for one atom that violates a minimum distance before its structure is drawn
        again.
    max_tries
        Whole-structure draws per requested structure before giving up (one-line error naming the pair).
    seed
        Seed of the random generator; ``None`` for a fresh one each call. Structure k of a call is drawn
        from its own stream (``SeedSequence(seed, spawn_key=(k,))``), so the first k structures of a longer
        draw are the same.
    constraint
        Set by the campaign from its ``symmetry`` and ``restraints`` (never in a file): a
        :class:`~aso_workflows.optimizers.constraint.SearchConstraint`. With a symmetry every structure
        moves the free coordinates of the group together (RMS displacement = the amplitude) and is
        drawn again whole when it breaks a minimum distance; a structure that breaks a restraint is
        drawn again.
    """

    min_displacement: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.1
    max_displacement: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 1.0
    amplitude: Literal["structure", "atom"] = "structure"
    perturb_lattice: bool = False
    max_strain: Annotated[float, Field(ge=0, lt=0.5)] = 0.03
    max_angle_change: Annotated[float, Field(ge=0, lt=30)] = 2.0
    min_distances: dict[str, float] | None = None
    min_distance_scale: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 0.7
    max_atom_tries: Annotated[int, Field(ge=1)] = 200
    max_tries: Annotated[int, Field(ge=1)] = 100
    seed: int | None = 0
    constraint: Any = None

    @model_validator(mode="after")
    def _range(self) -> PerturbationSampler:
        if self.min_displacement > self.max_displacement:
            raise ValueError(
                f"min_displacement ({self.min_displacement}) must not exceed max_displacement "
                f"({self.max_displacement})"
            )
        return self

    def dmin_matrix(self, structure: Structure) -> np.ndarray:
        """The (N, N) minimum-distance matrix of ``structure`` under this sampler's settings.

        The defaults are capped by ``structure``'s own shortest pair distances (it is the structure
        perturbed, taken as physical), as a campaign caps them by its start.
        """
        return min_distance_matrix(
            structure, self.min_distances, self.min_distance_scale, reference=structure
        )

    def sample(
        self,
        structure: Structure,
        n: int,
        *,
        seed: int | None = None,
        dmin_matrix: np.ndarray | None = None,
    ) -> list[Structure]:
        """``n`` valid perturbations of ``structure`` (same species and site order).

        Parameters
        ----------
        structure
            The structure to perturb.
        n
            Number of structures wanted.
        seed
            Overrides ``self.seed`` for this call (e.g. the iteration number of a campaign).
        dmin_matrix
            Use this (N, N) minimum-distance matrix instead of the sampler's table.

        Raises
        ------
        InputError
            If a structure could not be made in ``max_tries`` draws; the message names the element pair
            whose minimum distance blocked most atoms.
        """
        return self.sample_with_report(structure, n, seed=seed, dmin_matrix=dmin_matrix)[0]

    def sample_with_report(
        self,
        structure: Structure,
        n: int,
        *,
        seed: int | None = None,
        dmin_matrix: np.ndarray | None = None,
    ) -> tuple[list[Structure], list[SampleReport]]:
        """As :meth:`sample`, with a :class:`SampleReport` per structure (amplitude, re-draws, time)."""
        if n < 0:
            raise InputError("sampler.sample", f"expected n >= 0 structures, got {n}")
        root = np.random.SeedSequence(self.seed if seed is None else seed)
        dmin = self.dmin_matrix(structure) if dmin_matrix is None else np.asarray(dmin_matrix, dtype=float)
        nat = len(structure)
        if dmin.shape != (nat, nat):
            raise InputError(
                "dmin_matrix", f"expected shape ({nat}, {nat}) for {nat} atoms, got {dmin.shape}"
            )
        species = [site.specie.symbol for site in structure]
        blocked: Counter[tuple[str, str]] = Counter()
        out: list[Structure] = []
        reports: list[SampleReport] = []
        cache: dict = {}  # the neighbour pairs, shared by every draw in a fixed cell
        for k in range(n):
            t0 = time.perf_counter()
            rng = np.random.default_rng(np.random.SeedSequence(root.entropy, spawn_key=(*root.spawn_key, k)))
            report = SampleReport(amplitude=float("nan"))
            made = None
            for attempt in range(self.max_tries):
                report.restarts = attempt
                made = self._draw(structure, rng, dmin, species, report, blocked, cache)
                if made is not None:
                    break
            if made is None:
                raise self._exhausted(structure, dmin, species, self.max_tries, blocked)
            report.seconds = time.perf_counter() - t0
            out.append(made)
            reports.append(report)
        return out, reports

    def _draw(
        self,
        structure: Structure,
        rng: np.random.Generator,
        dmin: np.ndarray,
        species: list[str],
        report: SampleReport,
        blocked: Counter[tuple[str, str]],
        cache: dict,
    ) -> Structure | None:
        """One structure: draw, then re-draw the directions of violating atoms one at a time.

        An atom that finds no free direction among ``max_atom_tries`` takes the one with the fewest
        conflicts and the atoms it conflicts with are queued for a re-draw in turn (a local repair,
        every atom keeping the structure's amplitude); after ``4 N + 100`` re-draws, or when the
        (strained) cell brings an atom within its minimum distance of its own image, ``None`` (the caller
        draws the structure again); ``blocked`` counts the element pairs that stopped it.
        """
        nat = len(structure)
        lat = np.array(structure.lattice.matrix, dtype=float)
        if self.perturb_lattice:
            dabc = rng.uniform(-self.max_strain, self.max_strain, size=3)
            dang = rng.uniform(-self.max_angle_change, self.max_angle_change, size=3)
            lat = _strained_lattice(lat, dabc, dang)
        if self.constraint is not None and self.constraint.symmetry is not None:
            return self._constrained(structure, rng, dmin, lat, report)
        base = structure.frac_coords @ lat  # the unperturbed sites in this cell
        if self.perturb_lattice or "nb" not in cache:
            cache["nb"] = _Neighbours.build(base, lat, dmin, self.max_displacement)
        nb: _Neighbours = cache["nb"]
        if len(nb.self_too_close):  # closer than allowed to its own image: only a new cell helps
            a = species[int(nb.self_too_close[0])]
            blocked[(a, a)] += 1
            return None
        amp = float(rng.uniform(self.min_displacement, self.max_displacement))
        report.amplitude = amp

        def lengths(shape: tuple[int, ...]) -> np.ndarray | float:
            if self.amplitude == "structure":
                return amp
            return rng.uniform(self.min_displacement, self.max_displacement, size=(*shape, 1))

        disp = lengths((nat,)) * _random_directions(rng, (nat,))
        counts = nb.violating(disp)
        queue = deque(int(a) for a in np.argsort(-counts, kind="stable") if counts[a] > 0)
        report.violating_atoms = max(report.violating_atoms, len(queue))
        queued = set(queue)
        limit = 4 * nat + 100
        while queue:
            atom = queue.popleft()
            queued.discard(atom)
            if not nb.conflicts(atom, disp[atom][None], disp)[0].any():
                continue  # a partner was re-drawn already
            if report.redrawn_atoms >= limit:
                return None
            report.redrawn_atoms += 1
            cands = lengths((self.max_atom_tries,)) * _random_directions(rng, (self.max_atom_tries,))
            hit, partners = nb.conflicts(atom, cands, disp)
            n_hit = hit.sum(1)
            k = int(np.argmin(n_hit))  # the first free direction, else the least conflicting
            report.direction_draws += k + 1 if n_hit[k] == 0 else self.max_atom_tries
            disp[atom] = cands[k]
            if n_hit[k]:
                for other in np.unique(partners[hit[k]]):
                    blocked[tuple(sorted((species[atom], species[int(other)])))] += 1  # type: ignore[index]
                    if int(other) not in queued:
                        queue.append(int(other))
                        queued.add(int(other))
        made = Structure(
            Lattice(lat),
            structure.species,
            base + disp,
            coords_are_cartesian=True,
            to_unit_cell=True,
            site_properties=structure.site_properties or None,
        )
        if self.constraint is not None and not self.constraint.ok(made):
            return None  # a restraint broken: the whole structure is drawn again
        return made

    def _constrained(
        self,
        structure: Structure,
        rng: np.random.Generator,
        dmin: np.ndarray,
        lat: np.ndarray,
        report: SampleReport,
    ) -> Structure | None:
        """One draw under the campaign's constraint: in its group (whole structure), restraints kept;
        ``None`` when it breaks a minimum distance or a restraint (the caller draws again)."""
        import torch

        amp = float(rng.uniform(self.min_displacement, self.max_displacement))
        report.amplitude = amp
        made = self.constraint.draw(structure, rng, amp, lat)
        pos = torch.tensor(made.cart_coords)[None]
        if bool(violations(pos, torch.tensor(made.lattice.matrix)[None], dmin)[0]):
            return None
        return made if self.constraint.ok(made) else None

    def _exhausted(
        self,
        structure: Structure,
        dmin: np.ndarray,
        species: list[str],
        tries: int,
        blocked: Counter[tuple[str, str]],
    ) -> InputError:
        import torch

        start_bad = bool(
            violations(
                torch.tensor(structure.cart_coords)[None],
                torch.tensor(structure.lattice.matrix)[None],
                dmin,
            )[0]
        )
        if not blocked:
            return InputError(
                "sampler", f"no valid structure after {tries} tries (max_tries={self.max_tries})"
            )
        (a, b), count = blocked.most_common(1)[0]
        ia, ib = species.index(a), species.index(b)
        msg = (
            f"no valid perturbation after {tries} draws: the {a}-{b} minimum distance "
            f"{dmin[ia, ib]:.2f} Å left an atom without a valid direction in {count} of them"
        )
        others = [f"{x}-{y}" for (x, y), _ in blocked.most_common()[1:3]]
        if others:
            msg += f" (also {', '.join(others)})"
        if start_bad:
            msg += "; the unperturbed structure already violates it"
        msg += f"; lower max_displacement ({self.max_displacement} Å) or min_distances['{a}-{b}']"
        return InputError("sampler", msg)
