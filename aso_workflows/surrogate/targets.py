"""Training targets of the surrogate as standardised rows (one per structure, or one per listed node).

Graph level: ``spectrum.values``, one row per structure. Node level: the per-site rows ``site_values`` at
``absorber_sites`` when present (a loss term per listed site), otherwise ``values`` against the mean of
the predictions over all node sites. Targets are standardised with a mean per output point and one common
scale (the RMS deviation from that mean), so points that never vary (e.g. the −4πρr baseline of G(r)
below the first peak) do not get blown up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from aso_workflows.errors import InputError
from aso_workflows.spectra.spectrum import Spectrum

__all__ = ["Targets", "build_targets"]


@dataclass
class Targets:
    """Standardised training targets.

    Attributes
    ----------
    y
        ``[n, R, M]`` rows (zero where not valid).
    mask
        ``[n, R]`` valid rows.
    weights
        Node level: ``[n, R, A]`` maps the ``A`` node predictions onto each row (``None`` at graph level).
    calib
        Node level: ``[n, A]`` maps the node predictions onto the structure-level quantity.
    target
        ``[n, M]`` the structure-level quantity (mean over its rows) used for calibration and scores.
    mean, scale
        The standardisation: ``original = standardised · scale + mean`` (``mean`` ``[M]``).
    """

    y: torch.Tensor
    mask: torch.Tensor
    weights: torch.Tensor | None
    calib: torch.Tensor | None
    target: torch.Tensor
    mean: torch.Tensor
    scale: float


def build_targets(
    spectra: Sequence[Spectrum],
    n: int,
    output_dim: int,
    node_sites: Sequence[int] | None,
    node_name: str | None,
    device: torch.device,
    dtype: torch.dtype,
) -> Targets:
    """Rows, masks and standardisation of ``spectra`` (one per training structure).

    Parameters
    ----------
    spectra
        One spectrum per structure, on the surrogate's grid of ``output_dim`` points.
    n
        Number of structures.
    output_dim
        ``M``.
    node_sites
        ``None`` at graph level; at node level the sites the model predicts a row for.
    node_name
        What the node sites are, for error messages (e.g. the absorbing element).
    device, dtype
        Where the tensors go.
    """
    if len(spectra) != n:
        raise InputError("spectra", f"expected one spectrum per structure ({n}), got {len(spectra)}")
    m = output_dim
    rows, weights = _rows(spectra, m, node_sites, node_name)
    n_abs = len(node_sites or [])
    n_rows = max(len(r) for r in rows)
    y = np.zeros((n, n_rows, m))
    mask = np.zeros((n, n_rows))
    for k, r in enumerate(rows):
        y[k, : len(r)] = r
        mask[k, : len(r)] = 1.0
    valid = mask.astype(bool)
    mean = y[valid].mean(0)
    scale = float(np.sqrt(np.mean((y[valid] - mean) ** 2)))
    scale = scale if scale > 1e-12 else 1.0
    ys = (y - mean) / scale * mask[..., None]

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.tensor(a, device=device, dtype=dtype)

    counts = mask.sum(1, keepdims=True)
    target = ys.sum(1) / counts  # the structure-level quantity (mean over its rows)
    w_t = c_t = None
    if node_sites is not None:
        w = np.zeros((n, n_rows, n_abs))
        for k, wk in enumerate(weights):
            w[k, : len(wk)] = wk
        w_t = tensor(w)
        c_t = tensor(w.sum(1) / counts)
    return Targets(
        y=tensor(ys),
        mask=tensor(mask),
        weights=w_t,
        calib=c_t,
        target=tensor(target),
        mean=tensor(mean),
        scale=scale,
    )


def _rows(
    spectra: Sequence[Spectrum], m: int, node_sites: Sequence[int] | None, node_name: str | None
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each spectrum's rows (``[R_k, M]``) and, at node level, the weights mapping the node predictions
    onto them (``[R_k, A]``): its per-site rows at its absorber sites, else its values against the mean
    over all node sites."""
    rows: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    sites = list(node_sites or [])
    n_abs = len(sites)
    where = {site: a for a, site in enumerate(sites)}
    for k, sp in enumerate(spectra):
        values = np.asarray(sp.values, dtype=float)
        if values.shape != (m,):
            raise InputError(
                f"spectra[{k}].values",
                f"has {values.size} points, expected {m} (the surrogate's output grid)",
            )
        if node_sites is None:
            rows.append(values[None])
        elif sp.site_values is not None and sp.absorber_sites:
            rows.append(_site_values(k, sp, m))
            weights.append(_site_weights(k, sp, where, node_name))
        else:
            rows.append(values[None])
            weights.append(np.full((1, n_abs), 1.0 / n_abs))
    return rows, weights


def _site_values(k: int, sp: Spectrum, m: int) -> np.ndarray:
    """The per-site rows of spectrum ``k`` (one per absorber site)."""
    assert sp.site_values is not None and sp.absorber_sites  # checked by the caller
    y = np.asarray(sp.site_values, dtype=float)
    if y.shape != (len(sp.absorber_sites), m):
        raise InputError(
            f"spectra[{k}].site_values",
            f"expected {len(sp.absorber_sites)} rows of {m} points (one per absorber site), "
            f"got shape {y.shape}",
        )
    return y


def _site_weights(k: int, sp: Spectrum, where: dict[int, int], node_name: str | None) -> np.ndarray:
    """``[rows, A]``: row r of spectrum ``k`` is the prediction of node site ``absorber_sites[r]``."""
    assert sp.absorber_sites  # checked by the caller
    w = np.zeros((len(sp.absorber_sites), len(where)))
    for r, site in enumerate(sp.absorber_sites):
        if site not in where:
            raise InputError(
                f"spectra[{k}].absorber_sites",
                f"site {site} is not a {node_name} site of the structure ({node_name} sites: {list(where)})",
            )
        w[r, where[site]] = 1.0
    return w
