"""Periodic neighbour list for a batch of structures, in torch, differentiable w.r.t. positions and lattice.

Hand-written because graph libraries' radius graphs (torch-geometric's ``radius_graph`` needs the compiled
``torch-cluster`` or ``pyg-lib``, which the project does not depend on) handle no periodic images and
let no gradient reach the lattice; TorchMD-Net's periodic list needs a cutoff below half the cell width.
The method:

1. Fractional differences ``f_j − f_i`` are wrapped into ``[−½, ½]`` (no gradient: only the integer
   wrap is kept).
2. An image ``n`` of the wrapped difference can lie within the cutoff ``r_c`` only if
   ``|f_k + n_k| ≤ r_c / h_k`` on every axis ``k``, where ``h_k`` is the perpendicular width of the cell
   across the lattice planes spanned by the two other vectors (``h_k = 1 / |column k of L⁻¹|``). So
   ``|n_k| ≤ ½ + r_c / h_k``: several images per direction for small or skewed cells, self-images
   included. One shift set (the largest reach over the batch) serves the whole batch.
3. All candidate (structure, i, j, shift) vectors are built in chunks of structures (bounded memory),
   masked by the cutoff without gradient, and the kept ones recomputed *with* gradient as
   ``r_j − r_i + m·L`` (``m`` the integer lattice translation, ``L`` the lattice rows), so distances are
   differentiable w.r.t. Cartesian positions and the lattice.

The pair (i, i) with zero translation is excluded; an atom's own periodic images are kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from aso_workflows.errors import InputError

__all__ = [
    "NeighborList",
    "SkinNeighborList",
    "edge_lengths",
    "image_shifts",
    "periodic_neighbor_list",
    "perpendicular_widths",
]

T = TypeVar("T")

#: Upper bound on the number of candidate (i, j, shift) vectors held at once per chunk of structures.
CANDIDATE_BUDGET = 4_000_000


@dataclass
class NeighborList:
    """Directed edges of a batch of periodic structures (both directions of every pair are present).

    Attributes
    ----------
    batch
        ``[E]`` structure index of each edge.
    src, dst
        ``[E]`` batch-flattened atom indices ``b·N + i`` and ``b·N + j``.
    image
        ``[E, 3]`` integer lattice translation ``m`` (as floats) of the neighbour.
    vec
        ``[E, 3]`` ``r_j − r_i + m·L`` (Å), differentiable.
    dist
        ``[E]`` its length (Å), differentiable.
    """

    batch: torch.Tensor
    src: torch.Tensor
    dst: torch.Tensor
    image: torch.Tensor
    vec: torch.Tensor
    dist: torch.Tensor

    def __len__(self) -> int:
        return int(self.src.shape[0])


def perpendicular_widths(lattice: torch.Tensor) -> torch.Tensor:
    """Widths ``[B, 3]`` (Å) of each cell across its three families of lattice planes.

    ``h_k`` is the distance between the planes spanned by the two lattice vectors other than ``a_k``:
    the volume divided by the area ``|a_l × a_m|``, equivalently ``1 / |column k of L⁻¹|``.
    """
    inv = torch.linalg.inv(lattice.detach().double())  # frac = cart @ inv; column k = reciprocal vector k
    return 1.0 / torch.linalg.norm(inv, dim=-2)


def image_shifts(lattice: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Integer image shifts ``[S, 3]`` (float64) that cover every image within ``cutoff`` of a wrapped
    fractional difference, for every lattice of the batch ``[B, 3, 3]``."""
    widths = perpendicular_widths(lattice).min(dim=0).values  # narrowest over the batch, per axis
    reach = torch.floor(cutoff / widths + 0.5 + 1e-6).long().tolist()
    axes = [torch.arange(-k, k + 1, dtype=torch.float64) for k in reach]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)


def _check(positions: torch.Tensor, lattice: torch.Tensor, cutoff: float) -> None:
    if positions.ndim != 3 or positions.shape[-1] != 3:
        raise InputError("positions", f"expected shape [B, N, 3], got {tuple(positions.shape)}")
    if lattice.shape != (positions.shape[0], 3, 3):
        raise InputError(
            "lattice", f"expected shape [{positions.shape[0]}, 3, 3], got {tuple(lattice.shape)}"
        )
    if not cutoff > 0:
        raise InputError("cutoff", f"expected > 0, got {cutoff}")
    det = torch.linalg.det(lattice.detach().double())
    if not bool(torch.all(det.abs() > 1e-6)):
        raise InputError("lattice", "a cell has (nearly) zero volume")


def periodic_neighbor_list(
    positions: torch.Tensor,
    lattice: torch.Tensor,
    cutoff: float,
    *,
    candidate_budget: int = CANDIDATE_BUDGET,
    half: bool = False,
) -> NeighborList:
    """Every (i, j, periodic image) with ``|r_j − r_i + m·L| < cutoff``, for a batch of structures.

    Parameters
    ----------
    positions
        Cartesian positions ``[B, N, 3]`` (Å); atoms may lie outside the cell.
    lattice
        Lattice vectors as rows ``[B, 3, 3]`` (Å).
    cutoff
        Radius (Å).
    candidate_budget
        Bound on candidate vectors per chunk of structures (memory ~ 12 bytes × dtype size each).
    half
        Keep each unordered pair once: ``i < j``, and of an atom's own images ``m`` and ``−m`` the one
        whose first non-zero component is positive. Functions of the pair distances that are symmetric
        in ``(i, j)`` then cost half.

    Returns
    -------
    NeighborList
        Edges in structure order; ``vec`` and ``dist`` carry gradients to ``positions`` and ``lattice``.
    """
    _check(positions, lattice, cutoff)
    nb, n, _ = positions.shape
    device, dtype = positions.device, positions.dtype
    shifts = image_shifts(lattice, cutoff).to(device=device, dtype=dtype)  # [S, 3]
    n_shift = shifts.shape[0]
    zero = int(torch.nonzero(shifts.abs().sum(-1) == 0)[0, 0])
    not_self = ~torch.eye(n, dtype=torch.bool, device=device)
    chunk = max(1, candidate_budget // max(1, n * n * n_shift))
    parts: list[tuple[torch.Tensor, ...]] = []
    wraps = []
    with torch.no_grad():
        pos, lat = positions.detach(), lattice.detach()
        for start in range(0, nb, chunk):
            p, latc = pos[start : start + chunk], lat[start : start + chunk]
            frac = p @ torch.linalg.inv(latc)
            df = frac[:, None, :, :] - frac[:, :, None, :]  # [b, i, j, 3] = f_j − f_i
            wrap = torch.round(df)
            cart = (df - wrap) @ latc[:, None]  # [b, i, j, 3] wrapped difference
            scart = shifts @ latc  # [b, S, 3]
            # |c + s|² = |c|² + 2 c·s + |s|² without materialising [b, i, j, S, 3]; a small margin here,
            # the exact test is made on the recomputed vectors below
            d2 = (
                (cart * cart).sum(-1)[..., None]
                + 2 * torch.einsum("bijx,bsx->bijs", cart, scart)
                + (scart * scart).sum(-1)[:, None, None, :]
            )
            keep = d2 < cutoff * cutoff * (1 + 1e-4) + 1e-6
            keep[:, :, :, zero] &= not_self
            b, i, j, s = keep.nonzero(as_tuple=True)
            parts.append((b + start, i, j, s))
            wraps.append(wrap)
    b, i, j, s = (torch.cat(t) for t in zip(*parts, strict=True))
    wrap = torch.cat(wraps)  # [B, N, N, 3]
    pair = (b * n + i) * n + j
    image = shifts[s] - wrap.reshape(-1, 3)[pair]
    if half:
        keep = ((i < j) | ((i == j) & _positive(image))).nonzero().squeeze(1)
        b, i, j, s, pair, image = (t.index_select(0, keep) for t in (b, i, j, s, pair, image))
    # Recompute with gradient, as r_j − r_i + m·L with the integer translation m = shift − wrap, from
    # dense per-pair and per-shift parts (cheaper than gathering a lattice per edge).
    wrapped = positions[:, None, :, :] - positions[:, :, None, :] - wrap @ lattice[:, None]  # [B, N, N, 3]
    translation = shifts @ lattice  # [B, S, 3]
    vec = wrapped.reshape(-1, 3)[pair] + translation.reshape(-1, 3)[b * n_shift + s]
    # the clamp keeps the gradient finite for (degenerate) coincident atoms
    dist = torch.sqrt((vec * vec).sum(-1).clamp(min=1e-20))
    inside = dist.detach() < cutoff
    if not bool(inside.all()):
        keep = inside.nonzero().squeeze(1)
        b, i, j, image, vec, dist = (t.index_select(0, keep) for t in (b, i, j, image, vec, dist))
    return NeighborList(batch=b, src=b * n + i, dst=b * n + j, image=image, vec=vec, dist=dist)


def _positive(image: torch.Tensor) -> torch.Tensor:
    """Whether the first non-zero component of each integer translation ``[E, 3]`` is positive (of an
    atom's images ``m`` and ``−m``, exactly one is)."""
    m0, m1, m2 = image.unbind(-1)
    return (m0 > 0) | ((m0 == 0) & ((m1 > 0) | ((m1 == 0) & (m2 > 0))))


class _EdgeLengths(torch.autograd.Function):
    """``|a[ia] + b[ib]|`` per edge from two tables of vectors (see :func:`edge_lengths`)."""

    @staticmethod
    def forward(
        ctx: Any, a: torch.Tensor, ia: torch.Tensor, b: torch.Tensor, ib: torch.Tensor
    ) -> torch.Tensor:
        vec = a.index_select(0, ia).add_(b.index_select(0, ib))
        dist = torch.linalg.vector_norm(vec, dim=1)
        ctx.save_for_backward(vec, dist, ia, ib)
        ctx.rows = (a.shape[0], b.shape[0])
        return dist

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        vec, dist, ia, ib = ctx.saved_tensors
        # d|v|/dv = v/|v| (coincident points: a finite zero-ish gradient instead of NaN)
        u = vec * (grad / dist.clamp(min=1e-10))[:, None]
        ga = u.new_zeros(ctx.rows[0], 3).index_add_(0, ia, u) if ctx.needs_input_grad[0] else None
        gb = u.new_zeros(ctx.rows[1], 3).index_add_(0, ib, u) if ctx.needs_input_grad[2] else None
        return ga, None, gb, None


def edge_lengths(a: torch.Tensor, ia: torch.Tensor, b: torch.Tensor, ib: torch.Tensor) -> torch.Tensor:
    """``[E]`` lengths ``|a[ia] + b[ib]|`` of edge vectors made of two table rows (e.g. the pair
    difference ``r_j − r_i`` and the periodic translation), differentiable w.r.t. both tables.

    Written out because it is a search's innermost step: the autograd graph of the same expression kept
    ``[E, 3]`` intermediates and took three times as long; here the backward is two ``index_add``.
    """
    return _EdgeLengths.apply(a, ia, b, ib)


class SkinNeighborList:
    """A half neighbour list of a batch within ``cutoff + skin``, kept across calls while it stays exact.

    The proposal optimiser evaluates the same batch of starts at every step, each atom moving ~1e-3 Å
    per step, and a full periodic scan per step (:func:`periodic_neighbor_list`: all ``N² × images``
    candidates) was a third of a step's time. This list scans once per structure at ``cutoff + skin``
    and, at each later call, recomputes only the distances of the edges it holds (differentiable
    w.r.t. positions and lattice). A structure is scanned again only when one of its pairs could have
    come within ``cutoff`` from outside ``cutoff + skin``: with ``u`` the largest displacement of an
    atom since the scan (measured in the scan's cell, so that a strain is not counted as a
    displacement) and ``σ`` the smallest singular value of the cell's deformation ``F = L₀⁻¹ L``, every
    pair left out is still at least ``min(σ, 1)·(cutoff + skin − 2u)`` long; the structure is rescanned
    when that falls below ``cutoff`` (for a fixed cell: when an atom has moved more than half the skin).
    The same bound holds for every shorter reach ``c' ≤ cutoff`` and its subset of edges within
    ``c' + skin`` at the scan, so callers may cut sub-lists by the scan distances (:attr:`pairs`).

    A call with another batch size, atom count, device or dtype rescans everything, so the list is exact
    for any input; it is fast when consecutive calls see nearby geometries.

    Parameters
    ----------
    cutoff
        Largest distance (Å) whose pairs must be present.
    skin
        Extra reach (Å) of the scan.
    candidate_budget
        See :func:`periodic_neighbor_list`.
    """

    def __init__(self, cutoff: float, skin: float = 0.5, candidate_budget: int = CANDIDATE_BUDGET):
        if not cutoff > 0 or not skin >= 0:
            raise InputError("neighbors", f"expected cutoff > 0 and skin >= 0, got {cutoff} and {skin}")
        self.cutoff, self.skin, self.candidate_budget = float(cutoff), float(skin), candidate_budget
        #: the half list at the scan geometry of each structure (``dist``: the scan distances), edges
        #: grouped by structure
        self.pairs: NeighborList | None = None
        #: structures scanned so far (for statistics) and a counter bumped by every rescan
        self.scans = 0
        self.version = 0
        self._ref: tuple[torch.Tensor, torch.Tensor] | None = None  # scan positions, scan lattices
        # the distinct integer translations [U, 3] and each edge's row in ``[B·U]`` (structure, translation)
        self._images: tuple[torch.Tensor, torch.Tensor] | None = None
        self._derived: dict[str, object] = {}
        self._pair = torch.zeros(0, dtype=torch.long)  # each edge's (structure, i, j) in [B·N·N]

    def update(self, positions: torch.Tensor, lattice: torch.Tensor) -> NeighborList:
        """Rescan the structures for which the list may be incomplete; returns :attr:`pairs`."""
        pos, lat = positions.detach(), lattice.detach()
        ref = self._ref
        if (
            ref is None
            or ref[0].shape != pos.shape
            or ref[0].device != pos.device
            or ref[0].dtype != pos.dtype
        ):
            self._scan(pos, lat, None)
        else:
            stale = self._stale(pos, lat)
            if bool(stale.any()):  # the one host read per call
                self._scan(pos, lat, stale.nonzero().squeeze(1))
        assert self.pairs is not None
        return self.pairs

    def distances(self, positions: torch.Tensor, lattice: torch.Tensor) -> torch.Tensor:
        """:meth:`update`, then the lengths ``[E]`` of the edges at this geometry (differentiable)."""
        self.update(positions, lattice)
        assert self._images is not None
        images, slot = self._images
        translation = (images @ lattice).reshape(-1, 3)  # [B·U, 3]: every translation in every cell
        # r_j − r_i from the dense [B, N, N] differences (one gather per edge instead of two) plus the
        # translation
        diff = (positions[:, None, :, :] - positions[:, :, None, :]).reshape(-1, 3)
        return edge_lengths(diff, self._pair, translation, slot)

    def derived(self, key: str, make: Callable[[NeighborList], T]) -> T:
        """``make(pairs)``, computed once per scan (index work that depends on the edges only)."""
        if key not in self._derived:
            assert self.pairs is not None, "update() first"
            self._derived[key] = make(self.pairs)
        return self._derived[key]  # type: ignore[return-value]

    def _stale(self, pos: torch.Tensor, lat: torch.Tensor) -> torch.Tensor:
        """``[B]`` whether a structure's list may miss a pair within ``cutoff`` (see the class)."""
        assert self._ref is not None
        ref_pos, ref_lat = self._ref
        deform = torch.linalg.solve(ref_lat, lat)  # F: L = L₀ F (rows)
        moved = pos @ torch.linalg.inv(deform) - ref_pos  # displacement in the scan's cell
        u = torch.linalg.vector_norm(moved, dim=-1).amax(-1)
        sigma = torch.linalg.svdvals(deform)[:, -1].clamp(max=1.0)
        return sigma * (self.cutoff + self.skin - 2 * u) < self.cutoff

    def _scan(self, pos: torch.Tensor, lat: torch.Tensor, which: torch.Tensor | None) -> None:
        """Scan every structure (``which`` None) or those in ``which``, keeping the others' edges."""
        reach = self.cutoff + self.skin
        n = pos.shape[1]
        if which is None:
            new = periodic_neighbor_list(pos, lat, reach, candidate_budget=self.candidate_budget, half=True)
            self._ref = (pos.clone(), lat.clone())
            self.scans += pos.shape[0]
        else:
            assert self.pairs is not None and self._ref is not None
            part = periodic_neighbor_list(
                pos[which], lat[which], reach, candidate_budget=self.candidate_budget, half=True
            )
            b = which[part.batch]
            shift = (b - part.batch) * n  # batch-flattened atom indices of the subset → of the batch
            fresh = (b, part.src + shift, part.dst + shift, part.image, part.vec, part.dist)
            old = self.pairs
            keep = (~torch.isin(old.batch, which)).nonzero().squeeze(1)
            olds = (old.batch, old.src, old.dst, old.image, old.vec, old.dist)
            cat = [torch.cat([t.index_select(0, keep), f]) for t, f in zip(olds, fresh, strict=True)]
            order = torch.sort(cat[0], stable=True).indices
            new = NeighborList(*(t[order] for t in cat))
            self._ref[0][which] = pos[which]
            self._ref[1][which] = lat[which]
            self.scans += int(which.shape[0])
        self.pairs = NeighborList(new.batch, new.src, new.dst, new.image, new.vec.detach(), new.dist.detach())
        # the distinct translations, through one integer key per edge (``unique(dim=0)`` sorts rows: 100×
        # slower)
        m = self.pairs.image.round().long()
        low = m.amin(0) if m.shape[0] else m.new_zeros(3)
        span = (m.amax(0) - low + 1) if m.shape[0] else m.new_ones(3)
        key = ((m[:, 0] - low[0]) * span[1] + (m[:, 1] - low[1])) * span[2] + (m[:, 2] - low[2])
        keys, which = torch.unique(key, return_inverse=True)
        images = torch.stack([keys // (span[1] * span[2]), (keys // span[2]) % span[1], keys % span[2]], 1)
        images = (images + low).to(self.pairs.image.dtype)
        self._images = (images, self.pairs.batch * images.shape[0] + which)
        self._pair = self.pairs.src * n + (self.pairs.dst - self.pairs.batch * n)  # (b·N + i)·N + j
        self._derived = {}
        self.version += 1
