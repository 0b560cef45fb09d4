"""pdffit2's PDF model in torch: the same G(r), differentiable in positions and lattice, batched.

Why our own code: pdffit2 has exact derivatives, but only of its own refinable parameters, one structure
at a time, from C++ (no gradient reaches a torch acquisition); diffpy.srreal does not import here, and
``debyecalculator`` computes a different quantity (a Debye sum, no Qmax termination as pdffit2 applies
it). So this module re-implements pdffit2's ``DataSet::determine`` (``libpdffit2/pdf.cc``, read with the
search tool from diffpy/diffpy.pdffit2) step by step, to equal its G(r) to ~1e-9 relative:

1. **Pair sum.** Every pair ``(i, j)`` and periodic image with ``0.1 Å ≤ d ≤ rcmax + 1`` contributes a
   Gaussian ``w_i w_j / (√(2π) σ) · exp(−(r − d)² / 2σ²)`` evaluated on the grid points
   ``nint((max(rcmin, d − 5σ) − rmin)/Δr) … nint((min(rcmax, d + 5σ) − rmin)/Δr)`` only (pdffit2 cuts
   every peak at 5σ; the cut is reproduced, not smoothed). ``w`` are the engine's scattering weights,
   ``sf / ⟨sf⟩`` with pdffit2's own table (X-ray: Z; neutron: coherent lengths), read from pdffit2.
2. **Width.** ``σ² = (U_i + U_j) · (1 − δ2/d² − δ1/d + Qbroad² d²)`` (pdffit2's ``NEW_SHARP``); a pair
   whose factor is ≤ 0 is left out, as in pdffit2.
3. **G(r)** ``= ppp(r) / (N r) − 4π ρ0 r`` on the calculation range, times the Qdamp envelope
   ``exp(−(r Qdamp)² / 2)``.
4. **Qmax termination** exactly as ``DataSet::applyQmaxCutoff``: the calculation range (the fit range
   extended by 6 ripples, ``6 · 2π / Qmax``) zero-padded to the next power of two of twice its length,
   FFT, every frequency from ``ceil(Qmax / dQ)`` with ``dQ = 2π / ((n_pad − 1) Δr)`` zeroed, inverse FFT.
5. **The structure as pdffit2 reads it.** The simulator passes the structure to pdffit2 as text
   (``diffpy.structure``'s pdffit writer): cell lengths and angles with 6 decimals, fractional
   coordinates and U with 8. The model rounds the same way (values rounded, gradients passed straight
   through), otherwise the two differ by ~1e-6 relative.

Per-atom rows (``rows=True``): ``G_k(r) = Σ_j w_k w_j g(r; d_kj) / r − 4π ρ0 r w_k`` (then the same
envelope and termination), whose mean over atoms is ``G(r)``: each pair split half-half between its two
atoms, the same split :mod:`~aso_workflows.spectra.pdf_partials` gets from pdffit2's pair selection.

The pair sum is the cost: a custom autograd function evaluates the Gaussian windows in chunks and
recomputes them in the backward pass, so memory stays proportional to the number of pairs.
"""

from __future__ import annotations

import functools
import io
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from aso_workflows.errors import InputError
from aso_workflows.surrogate.neighbors import edge_lengths
from aso_workflows.surrogate.priors.pdf_sum import GaussianWindows, Grid, binned_gaussians, nint

if TYPE_CHECKING:
    from aso_workflows.spectra.pdf import PDFSimulator

__all__ = ["PDFModel", "scattering_weights"]

#: pdffit2's ``double_eps``: metric-tensor entries below it are set to zero
_DOUBLE_EPS = (1.0 + math.sqrt(np.finfo(float).eps)) - 1.0
#: pair × image distances screened at once when building the pair list
_CHUNK_PAIRS = 3_000_000
#: Å added to the largest pair distance when a pair list is built, so it can be reused while atoms move
SKIN = 0.5


@functools.lru_cache(maxsize=64)
def scattering_weights(elements: tuple[str, ...], radiation: str) -> tuple[float, ...]:
    """pdffit2's scattering factor of each element (``"X"``: X-ray, ``"N"``: neutron), from its table.

    Raises
    ------
    InputError
        On ``structure`` if pdffit2 has no scattering factor for an element.
    """
    import diffpy.pdffit2 as pdffit2

    stype = "N" if radiation == "neutron" else "X"
    pdffit2.redirect_stdout(io.StringIO())
    try:
        pf = pdffit2.PdfFit()
        out = []
        for el in elements:
            try:
                out.append(float(pf.get_scat(stype, el)))
            except Exception:  # pdffit2 raises its own exception types
                raise InputError("structure", f"pdffit2 has no scattering factor for {el!r}") from None
        return tuple(out)
    finally:
        pdffit2.redirect_stdout(io.StringIO())


def _straight_through(x: torch.Tensor, decimals: int) -> torch.Tensor:
    """``x`` rounded to ``decimals`` in value, with the gradient of the identity."""
    scale = 10.0**decimals
    return x + (torch.round(x * scale) / scale - x).detach()


def _grid_of(sim: PDFSimulator) -> Grid:
    """The grid pdffit2 computes on for ``sim`` (as :meth:`PDFSimulator.pdffit2_load` allocates it)."""
    n = sim.npoints
    m = max(0, int(math.ceil(sim.rmin / sim.rstep - 1e-9)) - 1)
    rmin = sim.rmin - m * sim.rstep
    rmax = rmin + (m + n - 1) * sim.rstep
    bins = m + n
    deltar = (rmax - rmin) / float(bins - 1)
    rcmin, rcmax = rmin, rmax  # extendCalculationRange: the fit range is the whole data range
    if sim.qmax > 0:
        rext = 6 * 2 * math.pi / sim.qmax
        rcmin, rcmax = max(rmin, rmin - rext), rmax + rext
    ncmin = int(math.floor((rcmin - rmin) / deltar + 0.5))
    ncmax = int(math.floor((rcmax - rmin) / deltar + 0.5))
    return Grid(rmin, deltar, rcmin, rcmax, ncmin, ncmax, m, n, float(sim.qmax))


def _reciprocal_cosines(cos: torch.Tensor) -> torch.Tensor:
    """diffpy.structure's ``isotropicunit`` ``[B, 3, 3]`` from the direct cosines ``[B, 3]`` (α, β, γ):
    ones on the diagonal, the cosines of the reciprocal angles off it."""
    sin = torch.sqrt(1.0 - cos * cos)
    ca, cb, cg = cos.unbind(-1)
    sa, sb, sg = sin.unbind(-1)
    car = (cb * cg - ca) / (sb * sg)
    cbr = (ca * cg - cb) / (sa * sg)
    cgr = (ca * cb - cg) / (sa * sb)
    one = torch.ones_like(ca)
    return torch.stack(
        [
            torch.stack([one, cgr, cbr], -1),
            torch.stack([cgr, one, car], -1),
            torch.stack([cbr, car, one], -1),
        ],
        -2,
    )


@dataclass
class _Pairs:
    """A pair list of a batch and the index work of an evaluation, done once per list.

    ``frac``, ``lat``: the coordinates and lattices it was built at; ``offset`` ``[B, N, 3]``: the whole
    cells subtracted from each atom's fractional coordinates; ``shifts`` ``[S, 3]``: the image
    translations; per pair ``[E]``: ``b``, ``i ≤ j``, ``pair`` (row of ``(b, i, j)`` in ``[B·N·N]``),
    ``image`` (row of ``(b, shift)`` in ``[B·S]``), ``kinds`` (row of ``(b, U of i, U of j)``),
    ``u_sum`` (the rounded ``U_i + U_j``) and ``amp`` (``w_i w_j``); ``weights`` ``[N]``: each atom's
    ``w`` (on the list's device, so that no step copies them there).
    """

    frac: torch.Tensor
    lat: torch.Tensor
    offset: torch.Tensor
    shifts: torch.Tensor
    b: torch.Tensor
    i: torch.Tensor
    j: torch.Tensor
    pair: torch.Tensor
    image: torch.Tensor
    kinds: torch.Tensor
    u_sum: torch.Tensor
    amp: torch.Tensor
    weights: torch.Tensor
    _entries: dict[bool, tuple] = field(default_factory=dict)

    def entries(
        self, rows: bool, n_atoms: int
    ) -> tuple[
        torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor, list[tuple[float, torch.Tensor | None]]
    ]:
        """What the pair sum adds up: the pair of each entry (``None``: one entry per pair), its row
        (``b``, or ``b·N + atom`` per atom with ``rows``), amplitude and nominal width, and the entries
        of each distinct nominal width (``None``: all). G(r) counts a pair ``i ≠ j`` twice; per-atom
        rows give each pair (image) to both of its atoms, a self-image pair to its atom once."""
        if rows not in self._entries:
            cross = self.i != self.j
            if rows:
                ent: torch.Tensor | None = torch.cat(
                    [torch.arange(len(self.b), device=self.b.device), cross.nonzero().squeeze(1)]
                )
                assert ent is not None
                b, i, j = self.b[ent], self.i[ent], self.j[ent]
                row = b * n_atoms + torch.where(torch.arange(len(ent), device=ent.device) < len(self.b), i, j)
                amp, u_sum = self.amp[ent], self.u_sum[ent]
            else:
                ent, row = None, self.b
                amp, u_sum = torch.where(cross, 2.0 * self.amp, self.amp), self.u_sum
            nominal = torch.sqrt(u_sum)  # σ without the rounding of U's components in the text
            values = torch.unique(nominal).tolist()
            groups: list[tuple[float, torch.Tensor | None]] = (
                [(values[0], None)]
                if len(values) == 1
                else [(v, (nominal == v).nonzero().squeeze(1)) for v in values]
            )
            self._entries[rows] = (ent, row, amp, nominal, groups)
        return self._entries[rows]


class PDFModel:
    """pdffit2's G(r) of structures of one composition, in torch (see the module docstring).

    Parameters
    ----------
    simulator
        The campaign's PDF simulator (engine pdffit2); its grid, Qmax, Qdamp, Qbroad, Biso,
        delta1/delta2 and radiation are the model's.
    species
        Element of every site, in the campaign's site order.

    Raises
    ------
    InputError
        If the simulator's engine is not pdffit2, or pdffit2 has no scattering factor for an element.
    """

    def __init__(self, simulator: PDFSimulator, species: list[str] | tuple[str, ...]):
        from aso_workflows.spectra.pdf import biso_to_uiso

        if simulator.resolved_engine != "pdffit2":
            raise InputError(
                "engine",
                f"the torch PDF model reproduces pdffit2; this simulator uses {simulator.resolved_engine!r}",
            )
        self.species = [str(s) for s in species]
        if not self.species:
            raise InputError("species", "expected at least one site")
        kinds = tuple(sorted(set(self.species)))
        sf = dict(zip(kinds, scattering_weights(kinds, simulator.radiation), strict=True))
        bavg = sum(sf[e] for e in self.species) / len(self.species)
        self.weights = np.array([sf[e] / bavg for e in self.species])
        uiso = biso_to_uiso(simulator.biso)
        u = [uiso[e] if isinstance(uiso, dict) else uiso for e in self.species]
        self.uiso_exact = np.asarray(u, dtype=float)  # diffpy's U tensor is Uiso × its unit tensor ...
        self.uiso = np.round(self.uiso_exact, 8)  # ... written with 8 decimals for pdffit2
        self.delta1, self.delta2 = float(simulator.delta1), float(simulator.delta2)
        self.qbroad, self.qdamp = float(simulator.qbroad), float(simulator.qdamp)
        self.grid = _grid_of(simulator)
        self.r = simulator.r()
        # the distinct Uiso values (exact and as written) and each atom's: the U tensors' deviations are
        # tabulated per structure and pair of values
        values, kind = np.unique(self.uiso_exact, return_inverse=True)
        self._u_values, self._u_kind = values, kind.astype(np.int64)
        self._u_rounded = np.round(values, 8)
        self._cache: _Pairs | None = None

    @property
    def n_points(self) -> int:
        """Points of the reported grid (the simulator's)."""
        return self.grid.count

    # ---- geometry ------------------------------------------------------------------------------
    @staticmethod
    def _cell(lat: torch.Tensor) -> dict[str, torch.Tensor]:
        """The cell as pdffit2 reads it: metric tensor ``[B, 3, 3]``, volume ``[B]`` and reciprocal
        lengths ``[B, 3]`` from lengths and angles rounded to 6 decimals (tiny off-diagonal metric terms
        zeroed as pdffit2 does), and diffpy's unit isotropic U tensor ``[B, 3, 3]`` of the unrounded
        cell (cosines of the reciprocal angles)."""
        lengths = lat.norm(dim=-1)  # a, b, c
        pairs = ((1, 2), (0, 2), (0, 1))  # alpha, beta, gamma
        cos = torch.stack(
            [(lat[:, i] * lat[:, j]).sum(-1) / (lengths[:, i] * lengths[:, j]) for i, j in pairs], -1
        )
        iso = _reciprocal_cosines(cos)
        angles = torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0)))
        lengths = _straight_through(lengths, 6)
        rad = torch.deg2rad(_straight_through(angles, 6))
        cos, sin = torch.cos(rad), torch.sin(rad)
        ca, cb, cg = cos.unbind(-1)
        a, b, c = lengths.unbind(-1)
        off = {(0, 1): a * b * cg, (0, 2): a * c * cb, (1, 2): b * c * ca}
        rows = []
        for i in range(3):
            row = []
            for j in range(3):
                if i == j:
                    row.append(lengths[:, i] ** 2)
                    continue
                v = off[(min(i, j), max(i, j))]
                row.append(torch.where(v.detach().abs() < _DOUBLE_EPS, torch.zeros_like(v), v))
            rows.append(torch.stack(row, -1))
        vol = torch.sqrt(1.0 - ca**2 - cb**2 - cg**2 + 2.0 * ca * cb * cg) * a * b * c
        ar = torch.stack(
            [lengths[:, (i + 1) % 3] * lengths[:, (i + 2) % 3] * sin[:, i] for i in range(3)], -1
        )
        # a basis with this metric (a along x, b in the xy plane): Cartesian distances equal pdffit2's
        zero = torch.zeros_like(a)
        cy = c * (ca - cb * cg) / sin[:, 2]
        basis = torch.stack(
            [
                torch.stack([a, zero, zero], -1),
                torch.stack([b * cg, b * sin[:, 2], zero], -1),
                torch.stack([c * cb, cy, torch.sqrt(c * c - (c * cb) ** 2 - cy * cy)], -1),
            ],
            -2,
        )
        return {
            "metric": torch.stack(rows, -2),
            "vol": vol,
            "ar": ar / vol[:, None],
            "iso": iso,
            "basis": basis,
        }

    def _pair_list(self, frac: torch.Tensor, lat: torch.Tensor) -> _Pairs:
        """Every pair ``i ≤ j`` and periodic image within pdffit2's largest distance plus
        :data:`SKIN`, with the index work of an evaluation done once (no gradient); the exact limits are
        applied by the caller. Reused while the lattices are the same and no atom moved more than half
        the skin since the list was built (a proposal moves atoms by small steps: the list is built once
        per search)."""
        with torch.no_grad():
            f = frac.detach()
            cached = self._cache
            if (
                cached is not None
                and (cached.frac.shape, cached.frac.dtype, cached.frac.device) == (f.shape, f.dtype, f.device)
                and torch.equal(cached.lat, lat.detach())
                and float((((f - cached.frac) @ lat.detach()).norm(dim=-1)).max()) < SKIN / 2
            ):
                return cached
            self._cache = self._screen(f, lat.detach())
            return self._cache

    def _screen(self, frac: torch.Tensor, lat: torch.Tensor) -> _Pairs:
        reach_max = self.grid.rcmax + 1.0 + SKIN
        offset = torch.floor(frac)
        frac0 = frac
        frac = frac - offset
        n = frac.shape[1]
        iu = torch.triu_indices(n, n, device=frac.device)
        recip = torch.linalg.inv(lat).transpose(-1, -2).norm(dim=-1).max(0).values  # 1 / plane spacing
        reach = torch.ceil(reach_max * recip + 1.0).long().tolist()  # fractional differences in (−1, 1)
        axes = [torch.arange(-k, k + 1, device=frac.device) for k in reach]
        shifts = torch.cartesian_prod(*axes).to(frac.dtype)  # [S, 3]
        cart_shifts = shifts @ lat  # [B, S, 3]
        found: list[torch.Tensor] = []
        per = max(1, _CHUNK_PAIRS // max(1, iu.shape[1] * len(shifts)))
        for b0 in range(0, frac.shape[0], per):
            cart = (frac[b0 : b0 + per, iu[0]] - frac[b0 : b0 + per, iu[1]]) @ lat[b0 : b0 + per]  # [b, P, 3]
            d2 = ((cart[:, :, None, :] - cart_shifts[b0 : b0 + per, None]) ** 2).sum(-1)  # [b, P, S]
            idx = ((d2 >= 0.005) & (d2 <= reach_max**2)).nonzero()
            idx[:, 0] += b0
            found.append(idx)
        idx = torch.cat(found)
        b, i, j = idx[:, 0], iu[0][idx[:, 1]], iu[1][idx[:, 1]]
        kind = torch.as_tensor(self._u_kind, device=frac.device)
        n_kinds = len(self._u_values)

        def per_pair(values: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(values, dtype=frac.dtype, device=frac.device)

        u, w = per_pair(self.uiso), per_pair(self.weights)
        return _Pairs(
            frac=frac0.clone(),
            lat=lat.clone(),
            offset=offset,
            shifts=shifts,
            b=b,
            i=i,
            j=j,
            pair=(b * n + i) * n + j,
            image=b * len(shifts) + idx[:, 2],
            kinds=(b * n_kinds + kind[i]) * n_kinds + kind[j],
            u_sum=u[i] + u[j],
            amp=w[i] * w[j],
            weights=w,
        )

    # ---- the model -------------------------------------------------------------------------------
    def __call__(
        self, positions: torch.Tensor, lattice: torch.Tensor, rows: bool = False, method: str = "auto"
    ) -> torch.Tensor:
        """G(r) ``[B, M]`` on the simulator's grid, or per-atom rows ``[B, N, M]`` with ``rows=True``.

        Parameters
        ----------
        positions
            Cartesian positions ``[B, N, 3]`` (Å), site order of ``species``.
        lattice
            Lattice vectors as rows ``[B, 3, 3]`` (Å).
        rows
            Return each atom's contribution ``G_k(r)`` (their mean is G(r)).
        method
            ``"auto"``: the series of :func:`~aso_workflows.surrogate.priors.pdf_sum.binned_gaussians` where every pair of two elements has one
            width (no delta1, delta2, Qbroad), else one exponential per pair and grid point
            (``"direct"``, always available; both equal pdffit2).
        """
        if positions.dim() != 3 or positions.shape[1:] != (len(self.species), 3):
            raise InputError(
                "positions", f"expected shape [B, {len(self.species)}, 3], got {tuple(positions.shape)}"
            )
        if lattice.shape != (positions.shape[0], 3, 3):
            raise InputError(
                "lattice", f"expected shape [{positions.shape[0]}, 3, 3], got {tuple(lattice.shape)}"
            )
        if method not in ("auto", "direct"):
            raise InputError("method", f"expected 'auto' or 'direct', got {method!r}")
        dtype, dev = positions.dtype, positions.device
        frac = _straight_through(positions @ torch.linalg.inv(lattice), 8)
        cell = self._cell(lattice)
        pairs = self._pair_list(frac, lattice)
        dist, sigma, live = self._pair_widths(frac, cell, pairs)
        n_b, n_at = positions.shape[0], len(self.species)
        ent, row, amp, nominal, groups = pairs.entries(rows, n_at)
        if ent is not None:
            dist, sigma, live = (
                dist.index_select(0, ent),
                sigma.index_select(0, ent),
                live.index_select(0, ent),
            )
        # pairs out of range keep their places with a zero amplitude (no boolean compaction per step)
        amp = amp * live
        if rows:
            n_rows, norm, base = n_b * n_at, 1.0, pairs.weights[None, :, None]
        else:
            n_rows, norm, base = n_b, float(n_at), torch.ones(1, 1, 1, dtype=dtype, device=dev)
        ppp = self._pair_sum(dist, sigma, amp, row, nominal, groups, live, n_rows, method)
        ppp = ppp.view(n_b, n_at if rows else 1, self.grid.length)
        out = self._finish(ppp, norm, base, n_at / cell["vol"])
        return out if rows else out[:, 0]

    def _pair_widths(
        self, frac: torch.Tensor, cell: dict[str, torch.Tensor], pairs: _Pairs
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Distance and peak width of every pair of the list ``[E]`` (differentiable), and whether it
        counts (within pdffit2's distances, width factor and U sum positive; no gradient). A pair that
        does not count gets harmless values (a distance in range, the nominal width)."""
        basis = cell["basis"]
        xyz = (frac - pairs.offset) @ basis  # [B, N, 3] in pdffit2's metric
        diff = (xyz[:, :, None, :] - xyz[:, None, :, :]).reshape(-1, 3)  # xyz_i − xyz_j
        shift = -(pairs.shifts.to(frac.dtype) @ basis).reshape(-1, 3)  # [B·S, 3]
        dist = edge_lengths(diff, pairs.pair, shift, pairs.image)
        g = self.grid
        rmin2 = max(0.01, math.copysign((g.rcmin - 1.0) ** 2, g.rcmin - 1.0))
        live = ((dist * dist >= rmin2) & (dist * dist <= (g.rcmax + 1.0) ** 2)).detach()
        dist = torch.where(live, dist, torch.full_like(dist, max(math.sqrt(rmin2), 1.0)))
        msd = self._msd(cell, pairs, diff, shift, dist)
        if self.delta1 == 0 and self.delta2 == 0 and self.qbroad == 0:  # the width factor is 1
            live = live & (msd > 0).detach()
            return dist, torch.sqrt(torch.where(live, msd, pairs.u_sum)), live
        d2 = dist * dist
        corr = 1.0 - self.delta2 / d2 - self.delta1 / dist + self.qbroad**2 * d2
        live = live & ((corr > 0) & (msd > 0)).detach()
        one = torch.ones_like(d2)
        sigma = torch.sqrt(torch.where(live, msd, pairs.u_sum)) * torch.sqrt(torch.where(live, corr, one))
        return dist, sigma, live

    def _msd(
        self,
        cell: dict[str, torch.Tensor],
        pairs: _Pairs,
        diff: torch.Tensor,
        shift: torch.Tensor,
        dist: torch.Tensor,
    ) -> torch.Tensor:
        """pdffit2's ``msdAtoms``: the pair's summed U tensors (diffpy's, written with 8 decimals)
        projected on the pair direction, ``vecᵀ Q vec / d²`` with ``Q = Bᵀ A (U_i + U_j) A B`` (``B`` the
        basis, ``A = diag(a*, b*, c*)``). Equal to ``Uiso_i + Uiso_j`` up to that rounding, which matters
        (~1e-6) in oblique cells only; the deviation is computed only where it is not zero, from a table
        per structure and pair of U values (6 numbers per pair)."""
        dtype, device = dist.dtype, dist.device
        if dtype != torch.float64:  # in float32 the deviation (~1e-7 of the width) is below the
            return pairs.u_sum  # resolution, as the width's first-order term in binned_gaussians
        u = torch.as_tensor(self._u_values, dtype=dtype, device=device)  # the distinct Uiso
        tensors = _straight_through(u[None, :, None, None] * cell["iso"][:, None], 8)  # [B, U, 3, 3]
        scaled = cell["ar"][:, None, :, None] * cell["basis"][:, None]  # A B  [B, 1, 3, 3]
        q = scaled.transpose(-1, -2) @ tensors @ scaled  # [B, U, 3, 3]
        nominal = torch.as_tensor(self._u_rounded, dtype=dtype, device=device)
        dev = q - nominal[None, :, None, None] * torch.eye(3, dtype=dtype, device=device)
        if float(dev.detach().abs().max()) <= 1e-16:
            return pairs.u_sum
        vec = diff.index_select(0, pairs.pair) + shift.index_select(0, pairs.image)
        x, y = (0, 1, 2, 0, 0, 1), (0, 1, 2, 1, 2, 2)
        six = dev[..., x, y] * torch.tensor([1.0, 1, 1, 2, 2, 2], dtype=dtype, device=device)
        table = (six[:, :, None, :] + six[:, None, :, :]).reshape(-1, 6)  # [B·U·U, 6]: D_i + D_j
        vx, vy, vz = vec.unbind(1)
        monomials = torch.stack([vx * vx, vy * vy, vz * vz, vx * vy, vx * vz, vy * vz], 1)
        return pairs.u_sum + torch.linalg.vecdot(table.index_select(0, pairs.kinds), monomials) / (
            dist * dist
        )

    def _pair_sum(
        self,
        dist: torch.Tensor,
        sigma: torch.Tensor,
        amp: torch.Tensor,
        row: torch.Tensor,
        nominal: torch.Tensor,
        groups: list[tuple[float, torch.Tensor | None]],
        live: torch.Tensor,
        n_rows: int,
        method: str,
    ) -> torch.Tensor:
        """``ppp`` of pdffit2, ``[n_rows, length]``: the Gaussians of every pair summed per row (pairs
        that do not count carry ``amp = 0``)."""
        g = self.grid
        constant = self.delta1 == 0 and self.delta2 == 0 and self.qbroad == 0
        if method == "auto" and constant:
            far = ((sigma - nominal).abs() > 1e-5 * nominal) & live
            if not bool(far.any()):
                out = dist.new_zeros(n_rows, g.length)
                for value, sel in groups:  # one per distinct nominal width (pair of elements' U)
                    part = [x if sel is None else x.index_select(0, sel) for x in (dist, sigma, amp, row)]
                    out = out + binned_gaussians(part[0], part[1], part[2], part[3], n_rows, value, g)
                return out
        keep = live.nonzero().squeeze(1)
        dist, sigma, amp, row = (x.index_select(0, keep) for x in (dist, sigma, amp, row))
        with torch.no_grad():
            ib = nint((torch.clamp(dist - 5.0 * sigma, min=g.rcmin) - g.rmin) / g.deltar)
            ie = nint((torch.clamp(dist + 5.0 * sigma, max=g.rcmax) - g.rmin) / g.deltar)
            window = ie >= ib
        args = (x[window] for x in (dist, sigma, amp, row, ib, ie))
        return GaussianWindows.apply(*args, n_rows, g)

    def _finish(self, ppp: torch.Tensor, norm: float, base: torch.Tensor, rho0: torch.Tensor) -> torch.Tensor:
        """Division by r, the baseline, the Qdamp envelope and the Qmax termination; the reported points."""
        g = self.grid
        idx = torch.arange(g.ncmin, g.ncmax + 1, device=ppp.device)
        r = g.rmin + idx.to(ppp.dtype) * g.deltar
        calc = ppp[..., g.ncmin :] / norm / r - 4.0 * math.pi * r * rho0[:, None, None] * base
        if self.qdamp > 0:
            calc = calc * torch.exp(-((r * self.qdamp) ** 2) / 2.0)
        if g.qmax > 0:
            n, pad, lo = g.fft_sizes()
            if lo < pad + 1 - lo:  # some frequencies to zero
                spec = torch.fft.rfft(calc, n=pad, dim=-1)
                keep = (torch.arange(spec.shape[-1], device=ppp.device) < lo).to(spec.real.dtype)
                calc = torch.fft.irfft(spec * keep, n=pad, dim=-1)[..., :n]
        return calc[..., g.first - g.ncmin : g.first - g.ncmin + g.count]
