"""Random perturbations of a structure and periodic minimum-distance constraints (numpy and torch).

The initial data of a campaign are perturbations of the starting structure: every atom is moved along a
random direction by a length drawn uniformly from ``[min_displacement, max_displacement]`` Å (reference
0.1–1.0 Å), the lattice optionally strained, and any structure with two atoms closer than the pair-specific
minimum distance (periodic images included) is rejected.

The same constraint is needed inside the gradient proposal optimiser, for a batch of structures at once
and differentiably, so this module also provides :func:`min_distance_penalty` (sum of squared violations)
and :func:`violations` (exact hard check) on torch tensors.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from pymatgen.core import Lattice, Structure

from aso_workflows.errors import InputError
from aso_workflows.structures import min_distance_table, pair_min_distance_matrix

__all__ = [
    "PerturbationSampler",
    "min_distance_matrix",
    "min_distance_penalty",
    "violations",
    "close_pairs",
]

# Candidates drawn per vectorised rejection round. Fixed, so that ``sample(s, 5)`` is the first five of
# ``sample(s, 10)`` for the same seed.
_CHUNK = 64
# Upper bound on B·N·N·S distances held at once by the periodic scan (memory ~ 8 bytes each, a few times).
_SCAN_BUDGET = 4_000_000


def min_distance_matrix(
    structure: Structure, overrides: Mapping[str, float] | None = None, scale: float = 0.7
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
    """
    species = [site.specie.symbol for site in structure]
    table = min_distance_table(species, overrides, scale)
    return pair_min_distance_matrix(species, table)


# ---- periodic pair scan (torch) ------------------------------------------------------------------
# Hand-written: torch-geometric's radius_graph needs torch-cluster / pyg-lib, which are not available
# here (STACK.md), and neither handles periodic images nor stays differentiable w.r.t. the lattice.
# Only pairs closer than max(dmin) matter, so a small block of image shifts suffices: after wrapping the
# fractional difference f into [-0.5, 0.5], an image n can be within d of the origin only if
# |f_k + n_k| <= d / h_k on every axis k, with h_k the spacing of the lattice planes normal to the
# reciprocal vector k (the fractional coordinate k of a vector of length d is at most d / h_k).


def _image_shifts(lattice: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Integer image shifts [S, 3] covering all images within ``cutoff`` of a wrapped difference.

    The range per axis is the maximum over the batch, so one shift set serves every structure.
    """
    inv = torch.linalg.inv(lattice.detach().double())  # frac = cart @ inv; column k = reciprocal vector k
    spacing = 1.0 / torch.linalg.norm(inv, dim=-2)  # [B, 3] interplanar spacings h_k
    # |f_k + n_k| <= cutoff / h_k with |f_k| <= 1/2 needs |n_k| <= 1/2 + cutoff / h_k (tiny margin for
    # rounding); a cutoff below half of every spacing leaves only the wrapped difference itself (n = 0).
    reach = (cutoff / spacing.min(dim=0).values + 0.5 + 1e-6).floor().long().tolist()
    axes = [torch.arange(-k, k + 1, dtype=torch.float64) for k in reach]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
    return grid.to(device=lattice.device, dtype=lattice.dtype)


def _as_dmin(dmin_matrix: np.ndarray | torch.Tensor, like: torch.Tensor, n: int) -> torch.Tensor:
    d = torch.as_tensor(dmin_matrix, dtype=like.dtype, device=like.device)
    if d.shape != (n, n):
        raise InputError("dmin_matrix", f"expected shape ({n}, {n}) for {n} atoms, got {tuple(d.shape)}")
    return d


@torch.no_grad()
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
    pos, lat = positions.detach(), lattice.detach()
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
    b, i, j, _, d = close_pairs(positions, lattice, dmin_matrix)
    dmin = _as_dmin(dmin_matrix, positions, positions.shape[1])
    real = d < dmin[i, j]  # the scan's expanded form may flag borderline pairs; confirm with direct distances
    out = torch.zeros(positions.shape[0], dtype=torch.bool, device=positions.device)
    out[b[real]] = True
    return out


def min_distance_penalty(
    positions: torch.Tensor, lattice: torch.Tensor, dmin_matrix: np.ndarray | torch.Tensor
) -> torch.Tensor:
    """Differentiable constraint penalty [B]: Σ over close pairs and images of (d_min − d)² (Å²).

    Zero for a structure that satisfies every minimum distance; its gradient pushes too-close atoms apart
    (and, through the lattice, stretches a cell whose periodic images are too close). Which pairs are
    close is found without gradient (:func:`close_pairs`); their distances are then recomputed with
    gradient w.r.t. ``positions`` and ``lattice``.
    """
    b, i, j, image, _ = close_pairs(positions, lattice, dmin_matrix)
    dmin = _as_dmin(dmin_matrix, positions, positions.shape[1])
    vec = positions[b, j] - positions[b, i] + torch.einsum("kx,kxy->ky", image, lattice[b])
    d = torch.sqrt((vec**2).sum(-1).clamp(min=1e-12))  # clamp: finite gradient even for coincident atoms
    excess = torch.relu(dmin[i, j] - d) ** 2
    # ordered pairs: each unordered pair/image is counted twice
    return positions.new_zeros(positions.shape[0]).index_add(0, b, 0.5 * excess)


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
class PerturbationSampler:
    """Random perturbations of a structure that respect pair-specific minimum distances.

    Attributes
    ----------
    min_displacement, max_displacement
        Each atom moves along a random direction by a length uniform in this range (Å; reference 0.1–1.0).
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
    max_tries
        Candidates drawn per requested structure before giving up (rejection sampling).
    seed
        Seed of the random generator; ``None`` for a fresh one each call.
    """

    min_displacement: float = 0.1
    max_displacement: float = 1.0
    perturb_lattice: bool = False
    max_strain: float = 0.03
    max_angle_change: float = 2.0
    min_distances: dict[str, float] | None = None
    min_distance_scale: float = 0.7
    max_tries: int = 1000
    seed: int | None = 0

    def __post_init__(self) -> None:
        if not 0 <= self.min_displacement <= self.max_displacement:
            raise InputError(
                "sampler.min_displacement",
                f"expected 0 <= min_displacement <= max_displacement, got {self.min_displacement} and "
                f"{self.max_displacement}",
            )
        if not 0 <= self.max_strain < 0.5:
            raise InputError("sampler.max_strain", f"expected a fraction in [0, 0.5), got {self.max_strain}")
        if not 0 <= self.max_angle_change < 30:
            raise InputError(
                "sampler.max_angle_change", f"expected degrees in [0, 30), got {self.max_angle_change}"
            )
        if self.min_distance_scale <= 0:
            raise InputError("sampler.min_distance_scale", f"expected > 0, got {self.min_distance_scale}")
        if self.max_tries < 1:
            raise InputError("sampler.max_tries", f"expected >= 1, got {self.max_tries}")

    def dmin_matrix(self, structure: Structure) -> np.ndarray:
        """The (N, N) minimum-distance matrix of ``structure`` under this sampler's settings."""
        return min_distance_matrix(structure, self.min_distances, self.min_distance_scale)

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
            If ``n * max_tries`` candidates were drawn without finding ``n`` valid ones; the message names
            the element pair whose minimum distance rejects most candidates.
        """
        if n < 0:
            raise InputError("sampler.sample", f"expected n >= 0 structures, got {n}")
        rng = np.random.default_rng(self.seed if seed is None else seed)
        dmin = self.dmin_matrix(structure) if dmin_matrix is None else np.asarray(dmin_matrix, dtype=float)
        nat = len(structure)
        lat0 = structure.lattice.matrix
        frac0 = structure.frac_coords
        species = [site.specie.symbol for site in structure]
        out: list[Structure] = []
        limit = n * self.max_tries
        tries = 0
        blocked: Counter[tuple[str, str]] = Counter()
        while len(out) < n:
            if tries >= limit:
                raise self._exhausted(structure, dmin, species, tries, blocked)
            c = min(_CHUNK, limit - tries)
            tries += c
            dirs = _random_directions(rng, (c, nat))
            lengths = rng.uniform(self.min_displacement, self.max_displacement, size=(c, nat, 1))
            if self.perturb_lattice:
                dabc = rng.uniform(-self.max_strain, self.max_strain, size=(c, 3))
                dang = rng.uniform(-self.max_angle_change, self.max_angle_change, size=(c, 3))
                lats = np.stack([_strained_lattice(lat0, dabc[k], dang[k]) for k in range(c)])
            else:
                lats = np.broadcast_to(lat0, (c, 3, 3)).copy()
            pos = frac0[None] @ lats + lengths * dirs
            pos_t, lat_t = torch.from_numpy(pos), torch.from_numpy(lats)
            b, i, j, _, d = close_pairs(pos_t, lat_t, dmin)
            real = d.numpy() < dmin[i.numpy(), j.numpy()]
            bad = np.zeros(c, dtype=bool)
            bad[b.numpy()[real]] = True
            pairs = {
                (int(bb), *sorted((species[ii], species[jj])))
                for bb, ii, jj in zip(b.numpy()[real], i.numpy()[real], j.numpy()[real], strict=True)
            }
            blocked.update((x, y) for _, x, y in pairs)  # candidates rejected by each element pair
            for k in np.flatnonzero(~bad):
                if len(out) == n:
                    break
                out.append(
                    Structure(
                        Lattice(lats[k]),
                        structure.species,
                        pos[k],
                        coords_are_cartesian=True,
                        to_unit_cell=True,
                        site_properties=structure.site_properties or None,
                    )
                )
        return out

    def _exhausted(
        self,
        structure: Structure,
        dmin: np.ndarray,
        species: list[str],
        tries: int,
        blocked: Counter[tuple[str, str]],
    ) -> InputError:
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
            f"no valid perturbation after {tries} tries: the {a}-{b} minimum distance "
            f"{dmin[ia, ib]:.2f} Å is violated in {count} of them"
        )
        others = [f"{x}-{y}" for (x, y), _ in blocked.most_common()[1:3]]
        if others:
            msg += f" (also {', '.join(others)})"
        if start_bad:
            msg += "; the unperturbed structure already violates it"
        msg += f"; lower max_displacement ({self.max_displacement} Å) or min_distances['{a}-{b}']"
        return InputError("sampler", msg)
