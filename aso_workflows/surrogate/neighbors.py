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

from dataclasses import dataclass

import torch

from aso_workflows.errors import InputError

__all__ = ["NeighborList", "image_shifts", "periodic_neighbor_list", "perpendicular_widths"]

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
    # Recompute with gradient, as r_j − r_i + m·L with the integer translation m = shift − wrap, from
    # dense per-pair and per-shift parts (cheaper than gathering a lattice per edge).
    pair = (b * n + i) * n + j
    wrapped = positions[:, None, :, :] - positions[:, :, None, :] - wrap @ lattice[:, None]  # [B, N, N, 3]
    translation = shifts @ lattice  # [B, S, 3]
    vec = wrapped.reshape(-1, 3)[pair] + translation.reshape(-1, 3)[b * n_shift + s]
    # the clamp keeps the gradient finite for (degenerate) coincident atoms
    dist = torch.sqrt((vec * vec).sum(-1).clamp(min=1e-20))
    inside = dist.detach() < cutoff
    if not bool(inside.all()):
        keep = inside.nonzero().squeeze(1)
        b, i, j, s, pair, vec, dist = (t.index_select(0, keep) for t in (b, i, j, s, pair, vec, dist))
    image = shifts[s] - wrap.reshape(-1, 3)[pair]
    return NeighborList(batch=b, src=b * n + i, dst=b * n + j, image=image, vec=vec, dist=dist)
