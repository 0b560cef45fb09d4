"""Physics prior + GNN residual: the surrogate learns only what the cheap physics misses.

:class:`PriorResidualSurrogate` has the interface of the GNN ensemble (``fit``, ``predict``,
``predict_torch``, ``save``/``load``), so the proposer and the acquisition use it unchanged:

* ``predict_torch(X) = prior(X) + residual(X)``, differentiable through both; the spread is the residual
  ensemble's (calibrated on its held-out structures).
* ``fit`` computes the prior of every training structure and trains the ensemble on
  ``spectrum − prior`` (per-site rows minus the prior's rows where both exist, else the structure-level
  residual against the mean of the node predictions). Where the prior already explains every training
  spectrum to ``settings.residual_min`` (relative; a simulated PDF target: ~1e-13), no ensemble is
  trained: there is nothing to learn, and the spread is the prior's RMS error (tiny).
* With ``settings.residual`` off the prior stands alone; its spread is its RMS error per grid point
  over the training structures.

Metrics (stored in the model document) keep the ensemble's names for comparison with a GNN-alone
surrogate: ``heldout_mae`` is the error of prior + residual on held-out structures (of the prior alone on
all structures when no ensemble is trained) and ``target_mad`` the spread of the *full* spectra; ``prior``
holds the prior's own numbers (``max_rel_error``, ``explained`` = 1 − RMS(residual)/RMS(spectrum −
mean), ``seconds``).
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from typing import IO, Any

import numpy as np
import torch
from pymatgen.core import Structure

from aso_workflows.errors import InputError
from aso_workflows.spectra.spectrum import Spectrum
from aso_workflows.surrogate.base import Surrogate
from aso_workflows.surrogate.ensemble import EnsembleSurrogate
from aso_workflows.surrogate.priors import prior_from_state
from aso_workflows.surrogate.priors.base import PhysicsPrior
from aso_workflows.surrogate.settings import SurrogateSettings

__all__ = ["PriorResidualSurrogate", "FORMAT", "load_surrogate"]

FORMAT = "aso-workflows/prior-residual-surrogate"
VERSION = 1


class PriorResidualSurrogate(Surrogate):
    """A physics prior plus a GNN ensemble trained on its residual.

    Parameters
    ----------
    prior
        The technique's physics prior (e.g. pdffit2's G(r) in torch).
    residual
        The GNN ensemble that learns ``spectrum − prior`` (untrained), or ``None`` for the prior alone.
    settings
        The campaign's surrogate settings (``residual_min``).
    """

    def __init__(self, prior: PhysicsPrior, residual: EnsembleSurrogate | None, settings: SurrogateSettings):
        if residual is not None and residual.output_dim != prior.output_dim:
            raise InputError(
                "surrogate", f"prior has {prior.output_dim} points, residual ensemble {residual.output_dim}"
            )
        self.prior, self.residual, self.settings = prior, residual, settings
        self.output_dim = prior.output_dim
        self.residual_trained = False
        self.std: torch.Tensor = torch.zeros(self.output_dim, dtype=torch.float64)
        self.metrics: dict[str, Any] = {}
        self.fitted = False

    # ---- training ------------------------------------------------------------------------------------
    def fit(
        self,
        structures: Sequence[Structure],
        spectra: Sequence[Spectrum],
        progress: bool | None = None,
        objectives: Sequence[float] | None = None,
    ) -> dict[str, Any]:
        """Prior of every structure, then the ensemble on the residual where there is one to learn.

        ``objectives`` (the structures' mismatches, when known) let a prior choose its reference (EXAFS:
        the paths of a structure near the best)."""
        if len(structures) != len(spectra) or not structures:
            raise InputError(
                "spectra", f"expected one spectrum per structure ({len(structures)}), got {len(spectra)}"
            )
        t0 = time.perf_counter()
        y = np.stack([np.asarray(sp.values, dtype=float) for sp in spectra])
        if y.shape[1] != self.output_dim:
            raise InputError("spectra", f"have {y.shape[1]} points, the surrogate's grid {self.output_dim}")
        from aso_workflows.progress import phase

        show = bool(self.settings.progress if progress is None else progress)
        with phase(f"surrogate ({self.prior.kind} prior on {len(structures)} structures)", 1, show) as bar:
            self.prior.prepare(structures, spectra, objectives)
            base = self.prior.predict(structures)
            bar.update(1)
        resid = y - base
        rel = np.max(np.abs(resid), 1) / np.maximum(np.max(np.abs(y), 1), 1e-300)
        spread = float(np.sqrt(np.mean((y - y.mean(0)) ** 2))) or 1.0
        prior_metrics = {
            "kind": self.prior.kind,
            "max_rel_error": float(rel.max()),
            "median_rel_error": float(np.median(rel)),
            "explained": float(1.0 - np.sqrt(np.mean(resid**2)) / spread),
            "seconds": round(time.perf_counter() - t0, 3),
            **self.prior.summary(),
        }
        target_mad = float(np.mean(np.abs(y - y.mean(0))))
        learn = self.residual is not None and float(rel.max()) > self.settings.residual_min
        if learn:
            assert self.residual is not None
            metrics = dict(
                self.residual.fit(structures, self._residual_spectra(structures, spectra, resid), progress)
            )
            metrics["residual"] = "trained"
            self.residual_trained = True
        else:
            self.residual_trained = False
            self.std = torch.tensor(np.maximum(np.sqrt(np.mean(resid**2, 0)), 1e-12 * spread))
            why = "off" if self.residual is None else f"skipped: prior within {self.settings.residual_min:g}"
            metrics = {"residual": why, "heldout_mae": float(np.mean(np.abs(resid))), "n_structures": len(y)}
        metrics.update(target_mad=target_mad, prior=prior_metrics, seconds=round(time.perf_counter() - t0, 3))
        self.metrics, self.fitted = metrics, True
        return metrics

    def _residual_spectra(
        self, structures: Sequence[Structure], spectra: Sequence[Spectrum], resid: np.ndarray
    ) -> list[Spectrum]:
        """The spectra minus the prior; per-site rows minus the prior's rows where both exist."""
        rows = None
        if any(sp.site_values is not None for sp in spectra):
            rows = self.prior.rows(structures)
        out = []
        for k, sp in enumerate(spectra):
            update: dict[str, Any] = {"values": resid[k].tolist()}
            if sp.site_values is not None and rows is not None and sp.absorber_sites:
                site = np.asarray(sp.site_values, dtype=float) - rows[k][list(sp.absorber_sites)]
                update["site_values"] = site.tolist()
            else:
                update.update(site_values=None, absorber_sites=None)
            out.append(sp.model_copy(update=update))
        return out

    # ---- prediction ----------------------------------------------------------------------------------
    def predict_torch(
        self, positions: torch.Tensor, lattice: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(prior + residual mean, residual spread)`` ``[B, M]``, differentiable in both inputs."""
        mean = self.prior.predict_torch(positions, lattice)
        if self.residual_trained:
            assert self.residual is not None
            m, s = self.residual.predict_torch(positions, lattice)
            return mean + m.to(mean.dtype), s.to(mean.dtype)
        std = self.std.to(mean.device, mean.dtype).expand_as(mean)
        return mean, std

    def predict(self, structures: Sequence[Structure]) -> tuple[np.ndarray, np.ndarray]:
        """``(mean [n, M], std [n, M])`` as float64 numpy arrays."""
        pos, lat = self.prior.tensors(structures)
        with torch.no_grad():
            mean, std = self.predict_torch(pos, lat)
        return mean.double().numpy(), std.double().numpy()

    # ---- persistence ---------------------------------------------------------------------------------
    def save(self, path: str | IO[bytes]) -> None:
        """One ``torch.save`` file: the prior's state, the spread, metrics and the ensemble's own file."""
        inner = None
        if self.residual is not None:
            buf = io.BytesIO()
            self.residual.save(buf)
            inner = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
        torch.save(
            {
                "format": FORMAT,
                "version": VERSION,
                "prior_kind": self.prior.kind,
                "prior_state": self.prior.state(),
                "residual_min": float(self.settings.residual_min),
                "residual_trained": self.residual_trained,
                "std": self.std.detach().cpu().double(),
                "metrics": self.metrics,
                "fitted": self.fitted,
                "residual": inner,
            },
            path,
        )

    @classmethod
    def load(cls, path: str | IO[bytes], device: str | None = None) -> PriorResidualSurrogate:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise InputError(str(getattr(path, "name", path)), "not a saved PriorResidualSurrogate file")
        return cls._from_state(state, device)

    @classmethod
    def _from_state(cls, state: dict[str, Any], device: str | None) -> PriorResidualSurrogate:
        residual = None
        if state["residual"] is not None:
            residual = EnsembleSurrogate.load(io.BytesIO(state["residual"].numpy().tobytes()), device=device)
        settings = residual.settings if residual is not None else SurrogateSettings(residual=False)
        obj = cls(prior_from_state(state["prior_kind"], state["prior_state"]), residual, settings)
        obj.residual_trained = bool(state["residual_trained"])
        obj.std = state["std"]
        obj.metrics = state.get("metrics", {})
        obj.fitted = bool(state.get("fitted", True))
        return obj


def load_surrogate(path: str | IO[bytes] | bytes, device: str | None = None) -> Surrogate:
    """A saved surrogate of either kind (GNN ensemble, or prior + residual), told apart by its format tag."""
    if isinstance(path, bytes):
        data = path
    elif isinstance(path, str):
        with open(path, "rb") as fh:
            data = fh.read()
    else:
        data = path.read()
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and state.get("format") == FORMAT:
        return PriorResidualSurrogate._from_state(state, device)
    return EnsembleSurrogate.load(io.BytesIO(data), device=device)
