"""The pair sum of pdffit2's PDF (``ppp`` in ``DataSet::determine``) in torch, two exact ways.

pdffit2 adds, for every pair and periodic image, a Gaussian ``amp · N(r; d, σ)`` on the grid points
``nint((d − 5σ − rmin)/Δr) … nint((d + 5σ − rmin)/Δr)`` (clamped to the calculation range). Both
functions here reproduce that sum, window cut included:

* :class:`GaussianWindows` evaluates every window (one exponential per pair and grid point), in
  chunks, with its own backward pass (recomputing the windows, so memory stays proportional to the
  number of pairs). Any width per pair (delta1, delta2, Qbroad).
* :func:`binned_gaussians` sums pairs of (nearly) one width ``σ0`` by a series: moments histogrammed
  on the grid and convolved with fixed kernels by FFT (~10 numbers per pair instead of ~230), exact to
  ~1e-13; the proposal's hot path.

See :mod:`~aso_workflows.surrogate.priors.pdf_model` for the model around it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Grid", "GaussianWindows", "binned_gaussians", "nint"]

#: grid points × pairs evaluated at once by :class:`GaussianWindows` (memory bound, not a result setting)
_CHUNK_POINTS = 4_000_000


@dataclass(frozen=True)
class Grid:
    """pdffit2's calculation grid: ``r_i = rmin + i Δr``, ``i = 0 … ncmax``."""

    rmin: float
    deltar: float
    rcmin: float
    rcmax: float
    ncmin: int
    ncmax: int
    first: int  # index of the first reported point
    count: int  # number of reported points
    qmax: float

    @property
    def length(self) -> int:
        return self.ncmax + 1

    def fft_sizes(self) -> tuple[int, int, int]:
        """``(n, n_pad, first zeroed frequency)`` of the Qmax cutoff (``applyQmaxCutoff``)."""
        n = self.ncmax - self.ncmin + 1
        pad = int(2.0 ** math.ceil(math.log2(2 * n)))
        dq = 2 * math.pi / ((pad - 1) * self.deltar)
        lo = int(math.ceil(self.qmax / dq))
        return n, pad, lo


def nint(x: torch.Tensor) -> torch.Tensor:
    """pdffit2's ``nint`` (C ``round``: half away from zero) as a long tensor."""
    return (torch.sign(x) * torch.floor(x.abs() + 0.5)).long()


class GaussianWindows(torch.autograd.Function):
    """``out[row, ig] += amp · N(r_ig; d, σ)`` over each pair's window ``ib … ie`` (inclusive).

    Forward and backward both loop over chunks of pairs and recompute the window values, so only
    per-pair tensors are kept for the backward pass. Each output row is padded by the window width so
    that no index needs clamping (the padding is dropped).
    """

    @staticmethod
    def forward(
        ctx: Any,
        dist: torch.Tensor,
        sigma: torch.Tensor,
        amp: torch.Tensor,
        row: torch.Tensor,
        ib: torch.Tensor,
        ie: torch.Tensor,
        n_rows: int,
        grid: Grid,
    ) -> torch.Tensor:
        width = int((ie - ib).max()) + 1 if len(dist) else 1
        stride = grid.length + width
        out = dist.new_zeros(n_rows * stride)
        k = torch.arange(width, device=dist.device)
        for sl in _chunks(len(dist), width):
            g, _ = _window(dist[sl], sigma[sl], ib[sl], ie[sl], k, grid)
            g.mul_(amp[sl, None])
            out.index_add_(0, (row[sl, None] * stride + ib[sl, None] + k).reshape(-1), g.reshape(-1))
        ctx.save_for_backward(dist, sigma, amp, row, ib, ie)
        ctx.grid, ctx.stride = grid, stride
        return out.view(n_rows, stride)[:, : grid.length]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        dist, sigma, amp, row, ib, ie = ctx.saved_tensors
        grid, stride = ctx.grid, ctx.stride
        width = stride - grid.length
        padded = grad.new_zeros(grad.shape[0], stride)
        padded[:, : grid.length] = grad
        flat = padded.reshape(-1)
        k = torch.arange(width, device=dist.device)
        d_dist, d_sigma, d_amp = torch.zeros_like(dist), torch.zeros_like(sigma), torch.zeros_like(amp)
        for sl in _chunks(len(dist), width):
            g, x = _window(dist[sl], sigma[sl], ib[sl], ie[sl], k, grid)
            go = flat[row[sl, None] * stride + ib[sl, None] + k].mul_(g)  # zero outside the window
            s = sigma[sl]
            d_amp[sl] = go.sum(1)
            gx = go.mul_(x)
            d_dist[sl] = gx.sum(1) * amp[sl] / s
            d_sigma[sl] = ((gx * x).sum(1) - d_amp[sl]) * amp[sl] / s
        return d_dist, d_sigma, d_amp, None, None, None, None, None


def _chunks(n: int, width: int) -> list[slice]:
    step = max(1, _CHUNK_POINTS // max(1, width))
    return [slice(s, s + step) for s in range(0, n, step)]


def _window(
    d: torch.Tensor, s: torch.Tensor, ib: torch.Tensor, ie: torch.Tensor, k: torch.Tensor, grid: Grid
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-amplitude Gaussians ``[p, width]`` (zero outside each window) and ``x = (r − d)/σ``."""
    x0 = (grid.rmin + ib.to(d.dtype) * grid.deltar - d) / s
    x = torch.addcmul(x0[:, None], k.to(d.dtype)[None, :], (grid.deltar / s)[:, None])
    g = torch.exp(x.square().mul_(-0.5))
    g.mul_(((k[None, :] <= (ie - ib)[:, None]).to(d.dtype)) / (math.sqrt(2.0 * math.pi) * s)[:, None])
    return g, x


def _series_terms(x_max: float, tolerance: float = 1e-15) -> int:
    """Terms ``T`` of ``exp(x) = Σ_{n<T} xⁿ/n!`` with a remainder below ``tolerance`` relative for
    |x| ≤ x_max."""
    term, n = 1.0, 0
    while term * math.exp(x_max) > tolerance and n < 60:
        n += 1
        term *= x_max / n
    return n + 1


#: relative remainder of the series per floating type: below the type's resolution
_SERIES_TOLERANCE = {torch.float64: 1e-15, torch.float32: 1e-8}


class _SeriesMoments(torch.autograd.Function):
    """``moments[n, dest] += amp · exp(−f²h²/2) · fⁿ`` for ``n < terms``: ``[terms, n_dest]``,
    differentiable w.r.t. ``f`` (``amp`` and ``dest`` are constants; the ``1/n!`` is in the kernels).

    Forward and backward are written out (the autograd graph of the same products kept and re-added
    ``[pairs, terms]`` intermediates, the largest part of a proposal step with the prior), everything laid
    out term by term (contiguous rows: 2–3× faster than pair by pair on the CPU; the FFTs then run
    along the last axis too), the backward's polynomials in ``f`` evaluated by Horner's rule on the
    gathered gradient."""

    @staticmethod
    def forward(
        ctx: Any, f: torch.Tensor, amp: torch.Tensor, dest: torch.Tensor, n_dest: int, terms: int, h: float
    ) -> torch.Tensor:
        ctx.save_for_backward(f, amp, dest)
        ctx.terms, ctx.h = terms, h
        powers = f.new_empty(terms, f.shape[0])  # [T, E]: base fⁿ
        torch.mul(amp, torch.exp(-0.5 * (f * h) ** 2), out=powers[0])
        for n in range(1, terms):
            torch.mul(powers[n - 1], f, out=powers[n])
        return f.new_zeros(terms, n_dest).index_add_(1, dest, powers)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        f, amp, dest = ctx.saved_tensors
        terms, h = ctx.terms, ctx.h
        # d/df (base fⁿ) = base (n f^(n−1) − f h² fⁿ): the factors n go on the (small) gradient
        n = torch.arange(1, terms, device=f.device, dtype=f.dtype)[:, None]
        g = torch.cat([grad, grad[1:] * n]).index_select(1, dest)  # [2T − 1, E]
        plain, shifted = g[terms - 1].clone(), g[2 * terms - 2].clone()
        for k in range(terms - 2, -1, -1):
            plain.mul_(f).add_(g[k])  # Σ g_n fⁿ
        for k in range(2 * terms - 3, terms - 1, -1):
            shifted.mul_(f).add_(g[k])  # Σ n g_n f^(n−1)
        base = amp * torch.exp(-0.5 * (f * h) ** 2)
        return base * (shifted - f * (h * h) * plain), None, None, None, None, None


def binned_gaussians(
    dist: torch.Tensor,
    sigma: torch.Tensor,
    amp: torch.Tensor,
    row: torch.Tensor,
    n_rows: int,
    sigma0: float,
    grid: Grid,
) -> torch.Tensor:
    """``Σ amp · N(r_ig; d, σ)`` over pdffit2's windows, ``[n_rows, length]``, for pairs whose widths
    ``σ`` lie within ~1e-5 of one ``σ0``.

    Exact (to ~1e-13), by a series instead of one exponential per pair and grid point: with
    ``d = r_{j0} + f Δr`` (``0 ≤ f < 1``) and ``h = Δr/σ0``, ``exp(−(k − f)² h²/2) = exp(−k²h²/2) ·
    exp(−f²h²/2) · Σ_n (k f h²)ⁿ / n!``, so the sum over pairs is ``Σ_n kernel_n ⊛ moment_n``, each
    moment a histogram over ``j0`` of ``amp · exp(−f²h²/2) · fⁿ``, each kernel
    ``exp(−k²h²/2) (k h²)ⁿ / (n! √(2π) σ0)``, convolved by FFT. The series is cut where its remainder
    falls below the floating type's resolution (1e-15 in float64, 1e-8 in float32). A pair's own width
    ``σ = σ0 + Δσ`` (pdffit2 projects each pair's U tensors, rounded in the text it reads, on the pair
    direction) enters to first order, ``Δσ ∂N/∂σ`` with ``∂N/∂σ = N (x² − 1)/σ0`` and
    ``x² = h²(k² − 2kf + f²)``: three more sets of moments (float64 only: below float32's resolution).
    pdffit2's window edges (``nint`` of ``d ± 5σ``) leave out a point on either side for some ``f``:
    those points are subtracted per pair. Gradients reach ``dist`` (and ``sigma`` through the edges);
    a pair of zero ``amp`` contributes nothing, wherever it lies (a search masks pairs that way, keeping
    its arrays' shapes from step to step).
    """
    if len(dist) == 0:
        return dist.new_zeros(n_rows, grid.length)
    dr = grid.deltar
    h = dr / sigma0
    with torch.no_grad():
        u = (dist - grid.rmin) / dr
        j0 = torch.floor(u).long().clamp(min=0)
        lo = nint(u - 5.0 * sigma / dr) - j0  # each pair's window relative to j0 (clamps: see below)
        hi = nint(u + 5.0 * sigma / dr) - j0
        # one read from the device: the windows' extent, and the number of distinct window bounds
        bounds = torch.stack([-lo.min(), hi.max(), j0.max(), lo.max(), -hi.min()]).tolist()
    kmin, kmax, span = -bounds[0], bounds[1], bounds[2] + 1
    n_lo, n_hi = bounds[3] - kmin + 1, kmax + bounds[4] + 1
    tolerance = _SERIES_TOLERANCE.get(dist.dtype, 1e-15)
    terms = _series_terms((max(abs(kmin), abs(kmax)) + 1) * h * h, tolerance)
    f = (dist - grid.rmin) / dr - j0.to(dist.dtype)
    n = torch.arange(terms, device=dist.device, dtype=dist.dtype)
    k = torch.arange(kmin, kmax + 1, device=dist.device, dtype=dist.dtype)[:, None]
    factorial = torch.exp(torch.lgamma(n + 1))  # fⁿ/n!: the 1/n! goes on the kernel
    kern = torch.exp(-0.5 * (k * h) ** 2) * (k * h * h) ** n / (factorial * math.sqrt(2.0 * math.pi) * sigma0)
    # pairs are histogrammed per class of window (lo, hi), so that pdffit2's cut of each window is
    # reproduced without any per-pair term
    cls = (lo - kmin) * n_hi + (kmax - hi)
    n_cls = n_lo * n_hi
    dest = (cls * n_rows + row) * span + j0
    moments = _SeriesMoments.apply(f, amp.detach(), dest, n_cls * n_rows * span, terms, h)
    kernel = kern
    rel = (sigma.detach() - sigma0) / sigma0  # ~1e-7 where U's rounded components matter, else ~1e-16
    if dist.dtype == torch.float64 and float(rel.abs().max()) > 1e-12:  # below float32's resolution
        moments, kernel = _with_width_terms(moments, kern, f, amp, dest, rel, h, k)
    width = moments.shape[0]
    per_class = moments.view(width, n_cls, n_rows, span)
    size = int(2 ** math.ceil(math.log2(max(span + len(k) - 1, grid.length - kmin))))
    spec = torch.fft.rfft(per_class.sum(1), n=size, dim=-1)  # [W, n_rows, F]
    kspec = torch.fft.rfft(kernel.T, n=size, dim=-1)  # [W, F]
    conv = torch.fft.irfft((spec * kspec[:, None, :]).sum(0), n=size, dim=-1)
    _cut_windows(conv, kernel, per_class, kmin, kmax, n_hi, size)
    out = dist.new_zeros(n_rows, grid.length)
    first = max(0, kmin)
    # the clamps of the window to [rcmin, rcmax] are the same as dropping points outside the array
    out[:, first:] = conv[:, first - kmin : grid.length - kmin]
    return out


def _with_width_terms(
    moments: torch.Tensor,
    kern: torch.Tensor,
    f: torch.Tensor,
    amp: torch.Tensor,
    dest: torch.Tensor,
    rel: torch.Tensor,
    h: float,
    k: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The moments and kernels with the three sets of first-order width terms appended (float64 only:
    not the search's hot path): ``Δσ/σ0 · amp · exp(−f²h²/2) · fⁿ`` (times 1, f, f²), the base without
    its gradient (of order 1e-7 of the whole)."""
    terms = kern.shape[1]
    powers = torch.stack([f**m for m in range(terms)])
    slope = (amp.detach() * torch.exp(-0.5 * (f.detach() * h) ** 2) * rel) * powers  # [T, E]
    extra = torch.cat([slope, slope * f, slope * (f * f)])
    extra = moments.new_zeros(3 * terms, moments.shape[1]).index_add(1, dest, extra)
    kernel = torch.cat([kern, kern * ((k * h) ** 2 - 1.0), -2.0 * h * h * k * kern, h * h * kern], 1)
    return torch.cat([moments, extra]), kernel


def _cut_windows(
    conv: torch.Tensor,
    kernel: torch.Tensor,
    per_class: torch.Tensor,
    kmin: int,
    kmax: int,
    n_hi: int,
    size: int,
) -> None:
    """Take pdffit2's window cuts out of ``conv`` in place.

    ``conv[:, t]`` is the value at grid index ``t + kmin`` with the whole kernel for every pair; each
    class of window takes back the points of ``[kmin, kmax]`` outside its own (one or two, as shifted
    products of its moments ``per_class[:, class]``, ``[W, n_rows, span]``)."""
    span = per_class.shape[-1]
    for cl in range(per_class.shape[1]):
        outside = [*range(kmin, kmin + cl // n_hi), *range(kmax - cl % n_hi + 1, kmax + 1)]
        for point in outside:
            # [n_rows, span]: bin j0 gives grid index j0 + point
            part = torch.tensordot(kernel[point - kmin], per_class[:, cl], dims=1)
            lo_t, hi_t = max(0, point), min(span + point, size + kmin)  # grid indices covered
            conv[:, lo_t - kmin : hi_t - kmin] -= part[:, lo_t - point : hi_t - point]
