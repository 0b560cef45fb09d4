"""From geometry to the GNN's input: radial bases and the image-summed pair graph of a batch.

The model (:mod:`~aso_workflows.surrogate.model`) sees a batch of structures as

* the **message-passing basis**: per atom pair ``(i, j)`` the sum over the periodic images of ``j`` of
  the radial basis ``φ_r(d)`` (within the message-passing ``cutoff``), in the sparse "bag" form that
  ``embedding_bag`` reads (:class:`RadialGraph`: ``index``, ``value``, ``offsets``);
* the **readout's pair distribution** ``rho``: per structure the partial radial distributions
  (graph level) or per node its neighbour distribution in the block of its element (node level), in
  the readout's basis (:meth:`EnsembleGNN.pair_distribution
  <aso_workflows.surrogate.model.EnsembleGNN.pair_distribution>`).

Both are sums over the edges of a neighbour list, and both are symmetric in the pair, so they are
built from a *half* list (each unordered pair once, :func:`~aso_workflows.surrogate.neighbors.periodic_neighbor_list`
with ``half=True``) whose every edge contributes to its two ends. The index work — which edges are
within which reach, where each end's values go, the bag order — depends on the edges only, so it is
done once per neighbour list (:func:`plan_graph`) and reused at every step of a proposal search while
the list is kept (:class:`~aso_workflows.surrogate.neighbors.SkinNeighborList`); a step then costs the
distances, the basis values and two scatters (:func:`build_graph`).

The cubic B-spline values are a custom autograd function with the analytic derivative: the same
numbers as the polynomial written out in torch, with one backward node instead of ~15 on tensors of
``4 × edges`` values (a third of a proposal step's time before).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from aso_workflows.errors import InputError
from aso_workflows.surrogate.neighbors import NeighborList

__all__ = [
    "CubicBSplineBasis",
    "GaussianBasis",
    "RadialBasis",
    "make_basis",
    "cosine_cutoff",
    "RadialGraph",
    "bag_sum",
    "GraphSpec",
    "GraphPlan",
    "plan_graph",
    "build_graph",
]


def cosine_cutoff(d: torch.Tensor, cutoff: float) -> torch.Tensor:
    """``½(cos(πd/r_c) + 1)`` below the cutoff, 0 beyond (C¹ at the cutoff)."""
    return torch.where(d < cutoff, 0.5 * (torch.cos(d * (math.pi / cutoff)) + 1.0), torch.zeros_like(d))


# ---- radial bases: (index [E, q], value [E, q]) per distance ---------------------------------------
def _spline_pieces(d: torch.Tensor, spacing: float, n: int) -> tuple[torch.Tensor, ...]:
    """``t`` (position within the knot interval), ``s = 1 − t`` and whether each of the 4 functions
    touching ``d`` exists (index in ``[0, n)``)."""
    u = d / spacing
    g = torch.floor(u)
    t = (u - g)[:, None]
    first = g.long()[:, None] - 1 + torch.arange(4, device=d.device)
    return t, 1.0 - t, (first >= 0) & (first < n)


#: the cubic B-splines on a knot interval as polynomials in ``t``: ``B(t+1−q) = Σ_p C[q, p] t^p`` for the
#: functions ``g−1+q``, ``q = 0 … 3`` (rows: s³/6, 2/3 − t² + t³/2, 2/3 − s² + s³/2, t³/6 with s = 1 − t)
_SPLINE_COEFFICIENTS = (
    torch.tensor([[1, -3, 3, -1], [4, 0, -6, 3], [1, 3, 3, -3], [0, 0, 0, 1]], dtype=torch.float64) / 6
)


@functools.lru_cache(maxsize=8)
def _coefficients(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """:data:`_SPLINE_COEFFICIENTS` on ``device``, copied there once (not at every step of a search)."""
    return _SPLINE_COEFFICIENTS.to(device=device, dtype=dtype)


class _SplineWeights(torch.autograd.Function):
    """Values ``[E, 4]`` of the 4 cubic B-splines that touch each distance (times the cosine envelope
    when ``envelope`` is a cutoff), differentiable w.r.t. the distances with the analytic derivative."""

    @staticmethod
    def forward(ctx: Any, d: torch.Tensor, spacing: float, n: int, envelope: float | None) -> torch.Tensor:
        t, s, inside = _spline_pieces(d, spacing, n)
        w = torch.cat([s**3 / 6, 2 / 3 - t * t * (1 - t / 2), 2 / 3 - s * s * (1 - s / 2), t**3 / 6], dim=1)
        w = w * inside  # B(t+1), B(t), B(t−1), B(t−2)
        if envelope is not None:
            w = w * cosine_cutoff(d, envelope)[:, None]
        ctx.save_for_backward(d)
        ctx.spacing, ctx.n, ctx.envelope = spacing, n, envelope
        return w

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        (d,) = ctx.saved_tensors
        t, s, inside = _spline_pieces(d, ctx.spacing, ctx.n)
        dw = torch.cat([-s * s / 2, t * (1.5 * t - 2), s * (2 - 1.5 * s), t * t / 2], dim=1)
        dw = dw * inside / ctx.spacing  # d/dd = (d/dt) / spacing
        if ctx.envelope is not None:
            c = ctx.envelope
            fc = cosine_cutoff(d, c)[:, None]
            dfc = torch.where(d < c, -0.5 * math.pi / c * torch.sin(d * (math.pi / c)), torch.zeros_like(d))
            w = torch.cat(
                [s**3 / 6, 2 / 3 - t * t * (1 - t / 2), 2 / 3 - s * s * (1 - s / 2), t**3 / 6], dim=1
            )
            dw = dw * fc + w * inside * dfc[:, None]
        return (grad * dw).sum(1), None, None, None


class _MomentHistogram(torch.autograd.Function):
    """Per row and knot interval ``g`` the sums of ``[1, t, t², t³]`` (times the envelope) of the
    distances in it, ``t = d/Δ − g``: ``[4, n_rows, n + 2]``.

    The 4 B-splines on an interval are cubics in ``t`` (:data:`_SPLINE_COEFFICIENTS`), so these sums give
    the basis sums (:meth:`CubicBSplineBasis.bins`) with one destination per distance and end instead
    of four. Forward and backward are written out (the autograd graph of the same expressions was
    twice as slow: it keeps and re-adds ``[E, 4]`` intermediates), laid out power by power (contiguous
    rows: the scatter and the gather run along them)."""

    @staticmethod
    def forward(
        ctx: Any,
        d: torch.Tensor,
        rows: torch.Tensor,
        n_rows: int,
        spacing: float,
        n: int,
        envelope: float | None,
    ) -> torch.Tensor:
        size = n + 2  # intervals 0 … n touch a function; n + 1 collects everything beyond
        u = d / spacing
        g = torch.floor(u)
        mom = d.new_empty(4, d.shape[0])  # [1, t, t², t³] (× envelope)
        if envelope is not None:
            mom[0] = cosine_cutoff(d, envelope)
        else:
            mom[0] = 1.0
        t = torch.sub(u, g, out=mom[3])  # (a scratch row until the last power)
        torch.mul(mom[0], t, out=mom[1])
        torch.mul(mom[1], t, out=mom[2])
        torch.mul(mom[2], t, out=mom[3])
        dest = rows * size + g.long().clamp(0, n + 1)[:, None]  # [E, 2]
        hist = mom.new_zeros(4, (n_rows + 1) * size)
        hist.index_add_(1, dest[:, 0], mom).index_add_(1, dest[:, 1], mom)
        ctx.save_for_backward(d, dest)
        ctx.spacing, ctx.envelope, ctx.size = spacing, envelope, size
        return hist[:, : n_rows * size].view(4, n_rows, size)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        d, dest = ctx.saved_tensors
        flat = torch.cat([grad.reshape(4, -1), grad.new_zeros(4, ctx.size)], 1)  # the discarded row: 0
        g0, g1, g2, g3 = flat.index_select(1, dest[:, 0]).add_(flat.index_select(1, dest[:, 1]))  # [4, E]
        u = d / ctx.spacing
        t = u - torch.floor(u)
        # d/dd of [1, t, t², t³] = [0, 1, 2t, 3t²] / Δ
        out = (g1 + t * (2 * g2 + 3 * t * g3)) / ctx.spacing
        if ctx.envelope is not None:
            c = ctx.envelope
            fc = cosine_cutoff(d, c)
            dfc = torch.where(d < c, -0.5 * math.pi / c * torch.sin(d * (math.pi / c)), torch.zeros_like(d))
            out = out * fc + dfc * (g0 + t * (g1 + t * (g2 + t * g3)))
        return out, None, None, None, None, None


class CubicBSplineBasis:
    """``n`` cubic B-splines with uniformly spaced centres ``0, Δ, …, cutoff`` (``Δ = cutoff / (n − 1)``).

    Each distance touches exactly 4 of them (partition of unity), so the basis is stored sparsely.
    """

    def __init__(self, n: int, cutoff: float, envelope: bool = True):
        if n < 4:
            raise InputError("surrogate.n_rbf", f"the B-spline basis needs at least 4 functions, got {n}")
        self.n, self.centre_max, self.envelope = n, cutoff, envelope
        self.spacing = cutoff / (n - 1)
        # with the cosine envelope every function vanishes at ``cutoff``; without it the last ones reach
        # 2 spacings further (and vanish there, C² smooth): the neighbour list must reach that far
        self.cutoff = cutoff if envelope else cutoff + 2 * self.spacing

    @property
    def per_distance(self) -> int:
        """Basis entries stored per distance."""
        return 4

    @property
    def intervals(self) -> int:
        """Knot intervals ``[gΔ, (g+1)Δ)`` that touch a function, ``g = 0 … n``, plus one for everything beyond."""
        return self.n + 2

    def histogram(self, d: torch.Tensor, rows: torch.Tensor, n_rows: int) -> torch.Tensor:
        """Per row the sum of the basis values of the distances ``d [E]`` whose two ends point to it
        (``rows [E, 2]``; row ``n_rows`` is discarded): ``[n_rows, n]``, differentiable w.r.t. ``d``."""
        envelope = self.cutoff if self.envelope else None
        moments = _MomentHistogram.apply(d, rows, n_rows, self.spacing, self.n, envelope)
        return self.bins(moments)

    def bins(self, moments: torch.Tensor) -> torch.Tensor:
        """Basis sums ``[R, n]`` from per-interval moment sums ``[4, R, intervals]`` (:class:`_MomentHistogram`)."""
        # y[q, g]: what interval g gives function g−1+q (Σ_p C[q, p] t^p summed); function k collects
        # y[q, k+1−q] (four shifted slices; a conv1d was 5× slower on the CPU)
        y = torch.tensordot(
            _coefficients(moments.device, moments.dtype), moments, dims=1
        )  # [4, R, intervals]
        n = self.n
        out = y[0, :, 1 : n + 1] + y[1, :, 0:n]
        return out + F.pad(y[2, :, : n - 1], (1, 0)) + F.pad(y[3, :, : n - 2], (2, 0))

    def __call__(self, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first = torch.floor(d.detach() / self.spacing).long()[:, None] - 1
        idx = (first + torch.arange(4, device=d.device)).clamp(0, self.n - 1)  # absent ones carry 0
        w = _SplineWeights.apply(d, self.spacing, self.n, self.cutoff if self.envelope else None)
        return idx, w


class GaussianBasis:
    """SchNet's ``n`` Gaussians on ``[0, cutoff]``, dense: centres ``μ_r`` uniformly spaced by ``Δ``,
    ``exp(−(d − μ_r)² / (2Δ²))`` (the expansion of SchNet and torch-geometric's ``GaussianSmearing``)."""

    def __init__(self, n: int, cutoff: float):
        self.n, self.cutoff = n, cutoff
        self.spacing = cutoff / (n - 1)

    @property
    def per_distance(self) -> int:
        """Basis entries stored per distance."""
        return self.n

    def __call__(self, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        centres = torch.linspace(0.0, self.cutoff, self.n, device=d.device, dtype=d.dtype)
        w = torch.exp(-0.5 * ((d[:, None] - centres) / self.spacing) ** 2)
        w = w * cosine_cutoff(d, self.cutoff)[:, None]
        idx = torch.arange(self.n, device=d.device).expand(d.shape[0], self.n)
        return idx, w


RadialBasis = CubicBSplineBasis | GaussianBasis


def make_basis(kind: str, n: int, cutoff: float) -> RadialBasis:
    if kind == "bspline":
        return CubicBSplineBasis(n, cutoff)
    if kind == "gaussian":
        return GaussianBasis(n, cutoff)
    raise InputError("surrogate.basis", f"expected 'bspline' or 'gaussian', got {kind!r}")


# ---- the model's input ----------------------------------------------------------------------------
@dataclass
class RadialGraph:
    """The model's input for a batch: the image-summed message-passing basis of every atom pair in
    sparse "bag" form, and the readout's pair distribution.

    Pair ``(b, i, j)`` (row ``(b·N + i)·N + j``) owns the entries ``offsets[row]`` up to the next row's
    offset; its image-summed basis vector is ``Σ value · e_index`` over them.

    Attributes
    ----------
    index
        ``[T]`` basis function of each entry.
    value
        ``[T]`` basis value × cosine cutoff (differentiable w.r.t. positions and lattice).
    offsets
        ``[B·N·N]`` start of each pair's entries.
    n_structures, n_atoms, n_basis
        ``B``, ``N`` and the number of basis functions.
    neighbors
        ``[B]`` mean over atoms of ``Σ_j,images f_c(d)`` (the smooth neighbour count; for normalisation).
    rho
        The readout's pair distribution (unscaled; see :class:`GraphSpec`), ``None`` without readout.
    entry_rows, chunks
        ``[T]`` the pair of each entry and ``(first pair, end pair, first entry, end entry)`` blocks of
        at most :data:`BAG_CHUNK` values: what :func:`bag_sum`'s backward needs (from the plan).
    """

    index: torch.Tensor
    value: torch.Tensor
    offsets: torch.Tensor
    n_structures: int
    n_atoms: int
    n_basis: int
    neighbors: torch.Tensor
    rho: torch.Tensor | None = None
    entry_rows: torch.Tensor | None = None
    chunks: list[tuple[int, int, int, int]] | None = None

    def dense(self) -> torch.Tensor:
        """The image-summed basis as a dense ``[B, N, N, n_basis]`` tensor."""
        eye = torch.eye(self.n_basis, dtype=self.value.dtype, device=self.value.device)
        out = F.embedding_bag(self.index, eye, self.offsets, mode="sum", per_sample_weights=self.value)
        return out.view(self.n_structures, self.n_atoms, self.n_atoms, self.n_basis)


#: values held at once by :func:`bag_sum`'s backward (pairs × basis functions per block)
BAG_CHUNK = 1 << 23


def bag_sum(graph: RadialGraph, table: torch.Tensor) -> torch.Tensor:
    """``[B·N·N, C]``: per atom pair the image-summed basis times ``table [n_basis, C]``
    (``embedding_bag``), differentiable w.r.t. ``graph.value`` (and ``table``)."""
    if table.requires_grad or graph.entry_rows is None or graph.chunks is None:
        return F.embedding_bag(graph.index, table, graph.offsets, mode="sum", per_sample_weights=graph.value)
    return _BagSum.apply(graph.value, graph.index, graph.offsets, graph.entry_rows, graph.chunks, table)


class _BagSum(torch.autograd.Function):
    """``embedding_bag`` with a backward w.r.t. the per-entry weights through the dense pair gradient
    (``grad @ tableᵀ``, then one gather): ``embedding_bag``'s own took a sixth of a proposal step."""

    @staticmethod
    def forward(
        ctx: Any,
        value: torch.Tensor,
        index: torch.Tensor,
        offsets: torch.Tensor,
        rows: torch.Tensor,
        chunks: list[tuple[int, int, int, int]],
        table: torch.Tensor,
    ) -> torch.Tensor:
        ctx.save_for_backward(index, rows, table)
        ctx.chunks = chunks
        return F.embedding_bag(index, table, offsets, mode="sum", per_sample_weights=value)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        index, rows, table = ctx.saved_tensors
        n_basis = table.shape[0]
        out = grad.new_empty(index.shape[0])
        for p0, p1, e0, e1 in ctx.chunks:
            dense = (grad[p0:p1] @ table.T).reshape(-1)  # [pairs · n_basis]
            out[e0:e1] = dense.index_select(0, (rows[e0:e1] - p0) * n_basis + index[e0:e1])
        return out, None, None, None, None, None


@dataclass
class GraphSpec:
    """What :func:`plan_graph` and :func:`build_graph` need to know of a model.

    The readout's layout: graph level ``[B, S·S·n_read]``, column block ``(species_i, species_j)``,
    divided by ``N``; node level ``[B, n_nodes, S·n_read]``, row ``node_position[i]``, column block
    ``species_j`` (the model places each row in the block of its element).

    Attributes
    ----------
    basis
        The message-passing basis (with its cutoff).
    readout_basis
        The readout's own basis, or ``None``: the readout uses ``basis``.
    readout
        Whether the model has a readout.
    level
        ``"graph"`` or ``"node"``.
    species_index
        ``[N]`` species of every site.
    n_species
        ``S``.
    node_position
        ``[N]`` row of each site among the nodes, −1 where a site is not a node.
    n_nodes
        Rows of the node-level readout.
    """

    basis: RadialBasis
    readout_basis: CubicBSplineBasis | None
    readout: bool
    level: str
    species_index: torch.Tensor
    n_species: int
    node_position: torch.Tensor
    n_nodes: int

    @property
    def reach(self) -> float:
        """The longest distance (Å) any input depends on."""
        other = self.readout_basis.cutoff if self.readout_basis is not None else 0.0
        return max(self.basis.cutoff, other)

    @property
    def n_read(self) -> int:
        return (self.readout_basis or self.basis).n


@dataclass
class GraphPlan:
    """The index work of :func:`build_graph` for one half neighbour list (see :func:`plan_graph`).

    Attributes
    ----------
    n_structures
        ``B``.
    mp_edges
        Edges of the list within the message-passing reach (at the scan).
    mp_batch
        Their structures.
    bag_edges
        ``[2·E_mp]`` for each directed entry in bag (destination pair) order, its row in ``mp_edges``.
    offsets
        ``[B·N·N]`` start of each pair's entries.
    entry_rows, chunks
        See :class:`RadialGraph`.
    read_edges
        Edges of the readout (``None``: all of them, or with ``read_shared`` those of the message passing).
    read_shared
        The readout uses the message-passing basis and edges.
    read_rows
        ``[E_r, 2]`` the readout row each end of an edge adds to (``n_rows`` where that end is no node).
    n_rows
        Rows of the readout: ``B·S·S`` (graph level) or ``B·n_nodes·S`` (node level), each one
        distribution of ``n_read`` basis values.
    """

    n_structures: int
    mp_edges: torch.Tensor
    mp_batch: torch.Tensor
    bag_edges: torch.Tensor
    offsets: torch.Tensor
    entry_rows: torch.Tensor
    chunks: list[tuple[int, int, int, int]]
    read_edges: torch.Tensor | None
    read_shared: bool
    read_rows: torch.Tensor | None
    n_rows: int


def plan_graph(spec: GraphSpec, pairs: NeighborList, n_structures: int, skin: float = 0.0) -> GraphPlan:
    """The index work for a half list ``pairs`` (``dist``: the distances it was built at, valid for
    geometries within ``skin`` of that, see :class:`~aso_workflows.surrogate.neighbors.SkinNeighborList`)."""
    n, nb = int(spec.species_index.shape[0]), n_structures
    i, j = pairs.src - pairs.batch * n, pairs.dst - pairs.batch * n
    mp = (pairs.dist < spec.basis.cutoff + skin).nonzero().squeeze(1)
    b_mp, i_mp, j_mp = pairs.batch[mp], i[mp], j[mp]
    keys = torch.cat([(b_mp * n + i_mp) * n + j_mp, (b_mp * n + j_mp) * n + i_mp])  # both directions
    keys, order = torch.sort(keys, stable=True)
    q, n_pairs = spec.basis.per_distance, nb * n * n
    counts = torch.bincount(keys, minlength=n_pairs) * q
    offsets = counts.cumsum(0) - counts
    step = max(1, BAG_CHUNK // spec.basis.n)
    starts = list(range(0, n_pairs, step))
    firsts = torch.cat([offsets[starts], offsets.new_tensor([keys.shape[0] * q])]).tolist()
    plan = GraphPlan(
        n_structures=nb,
        mp_edges=mp,
        mp_batch=b_mp,
        bag_edges=order % max(1, mp.shape[0]),
        offsets=offsets,
        entry_rows=keys.repeat_interleave(q),
        chunks=[
            (p, min(p + step, n_pairs), e0, e1) for p, e0, e1 in zip(starts, firsts, firsts[1:], strict=False)
        ],
        read_edges=None,
        read_shared=spec.readout_basis is None,
        read_rows=None,
        n_rows=0,
    )
    if not spec.readout:
        return plan
    if spec.readout_basis is not None:
        plan.read_edges = (pairs.dist < spec.readout_basis.cutoff + skin).nonzero().squeeze(1)
        if plan.read_edges.shape[0] == pairs.dist.shape[0]:
            plan.read_edges = None  # every edge (the list reaches the readout's range): no gather
        b, i, j = (t if plan.read_edges is None else t[plan.read_edges] for t in (pairs.batch, i, j))
    else:
        b, i, j = b_mp, i_mp, j_mp
    s, sp = spec.n_species, spec.species_index
    ends = []
    for a, o in ((i, j), (j, i)):  # each edge's two ends: (its atom, the other one's species)
        if spec.level == "graph":
            ends.append((b * s + sp[a]) * s + sp[o])  # row (structure, species_a, species_o)
        else:
            node = spec.node_position[a]
            dump = nb * spec.n_nodes * s
            ends.append(torch.where(node >= 0, (b * spec.n_nodes + node) * s + sp[o], dump))
    plan.read_rows = torch.stack(ends, dim=1)
    plan.n_rows = nb * s * s if spec.level == "graph" else nb * spec.n_nodes * s
    return plan


def build_graph(spec: GraphSpec, plan: GraphPlan, dist: torch.Tensor) -> RadialGraph:
    """The model's input from the current distances ``dist`` of the planned list's edges."""
    n, nb = int(spec.species_index.shape[0]), plan.n_structures
    d_mp = dist.index_select(0, plan.mp_edges)  # (index_select: its backward is an index_add)
    idx, w = spec.basis(d_mp)  # [E_mp, q]
    fc = cosine_cutoff(d_mp.detach(), spec.basis.cutoff)
    # each half-list edge counts for both of its atoms
    neighbors = fc.new_zeros(nb).index_add_(0, plan.mp_batch, fc) * (2.0 / max(n, 1))
    graph = RadialGraph(
        idx.index_select(0, plan.bag_edges).reshape(-1),
        w.index_select(0, plan.bag_edges).reshape(-1),
        plan.offsets,
        nb,
        n,
        spec.basis.n,
        neighbors,
        entry_rows=plan.entry_rows,
        chunks=plan.chunks,
    )
    if plan.read_rows is None:
        return graph
    basis = spec.readout_basis or spec.basis
    if plan.read_shared:
        d_read = d_mp
    else:
        d_read = dist if plan.read_edges is None else dist.index_select(0, plan.read_edges)
    rho = _histogram(basis, d_read, plan.read_rows, plan.n_rows)
    if spec.level == "graph":
        graph.rho = rho.reshape(nb, -1) / n
    else:
        graph.rho = rho.reshape(nb, spec.n_nodes, -1)
    return graph


def _histogram(basis: RadialBasis, d: torch.Tensor, rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    """``[n_rows, n]``: per row the sum of the basis values of the distances whose ends point to it
    (``rows [E, 2]``; row ``n_rows`` is discarded)."""
    if isinstance(basis, CubicBSplineBasis):
        return basis.histogram(d, rows, n_rows)
    idx, w = basis(d)  # dense Gaussian basis: every entry scattered
    dest = rows[:, :, None] * basis.n + idx[:, None, :]
    flat = w.new_zeros((n_rows + 1) * basis.n)
    flat = flat.index_add(0, dest.reshape(-1), w[:, None, :].expand(-1, 2, -1).reshape(-1))
    return flat[: n_rows * basis.n].view(n_rows, basis.n)
