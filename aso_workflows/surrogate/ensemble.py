"""The GNN-ensemble surrogate: :class:`EnsembleSurrogate` ties the model, training, calibration and I/O.

The parts live in their own modules: :mod:`~aso_workflows.surrogate.settings` (the settings, no torch),
:mod:`~aso_workflows.surrogate.model` (the stacked GNN), :mod:`~aso_workflows.surrogate.targets`
(standardised rows), :mod:`~aso_workflows.surrogate.training` (splits and the training loop),
:mod:`~aso_workflows.surrogate.calibration` (spread calibration and metrics) and
:mod:`~aso_workflows.surrogate.persistence` (save/load).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import IO, Any

import numpy as np
import torch
from pymatgen.core import Structure

from aso_workflows.errors import InputError
from aso_workflows.spectra.spectrum import Spectrum
from aso_workflows.surrogate.base import Surrogate
from aso_workflows.surrogate.calibration import calibrate_and_score
from aso_workflows.surrogate.model import EnsembleGNN
from aso_workflows.surrogate.neighbors import SkinNeighborList
from aso_workflows.surrogate.persistence import read_surrogate_file, settings_from_file, write_surrogate_file
from aso_workflows.surrogate.settings import SurrogateLevel, SurrogateSettings, resolve_device
from aso_workflows.surrogate.targets import Targets, build_targets
from aso_workflows.surrogate.training import fit_linear_path, member_splits, train_members

__all__ = ["SurrogateSettings", "EnsembleSurrogate", "resolve_device"]

#: structures per forward pass when predicting outside the training loop
_CHUNK = 64


class EnsembleSurrogate(Surrogate):
    """An ensemble of message-passing GNNs mapping structures of fixed composition to a spectrum.

    Parameters
    ----------
    species
        Element symbol of every site, in the campaign's site order.
    output_dim
        Points ``M`` of the spectrum grid (900 for the reference PDF).
    level
        ``"graph"`` (one spectrum per structure) or ``"node"`` (one row per node atom, averaged over the
        nodes: the absorbers of ``absorber`` for XAS, every atom for per-atom PDF contributions).
    absorber
        Absorbing element: the node-level rows are its sites; ``None`` at node level: every site.
    settings
        Model and training settings.
    """

    def __init__(
        self,
        species: Sequence[str],
        output_dim: int,
        level: SurrogateLevel = "graph",
        absorber: str | None = None,
        settings: SurrogateSettings | None = None,
    ):
        self.settings = settings if settings is not None else SurrogateSettings()
        self.species = [str(s) for s in species]
        if not self.species:
            raise InputError("species", "expected at least one site")
        if not int(output_dim) > 0:
            raise InputError("output_dim", f"expected > 0, got {output_dim}")
        if level not in ("graph", "node"):
            raise InputError("level", f"expected 'graph' or 'node', got {level!r}")
        self.output_dim, self.level, self.absorber = int(output_dim), level, absorber
        self.absorber_sites: list[int] = []
        if level == "node":
            self.absorber_sites = [i for i, s in enumerate(self.species) if absorber is None or s == absorber]
            if not self.absorber_sites:
                raise InputError(
                    "absorber", f"no {absorber} site among the species {sorted(set(self.species))}"
                )
        self.kinds = sorted(set(self.species))
        s = self.settings
        self.device = resolve_device(s.device)
        self.model = EnsembleGNN(
            species_index=[self.kinds.index(x) for x in self.species],
            n_species=len(self.kinds),
            output_dim=self.output_dim,
            level=level,
            node_sites=self.absorber_sites,
            n_models=s.n_models,
            hidden=s.hidden,
            n_layers=s.n_layers,
            n_rbf=s.n_rbf,
            n_radial=s.n_radial,
            cutoff=s.cutoff,
            basis=s.basis,
            pool=s.pool,
            readout=s.readout,
            seed=s.seed,
            linear_readout=s.linear_readout,
            readout_cutoff=s.readout_cutoff,
        ).to(self.device, getattr(torch, s.dtype))
        self.model.requires_grad_(False)
        self.y_mean = torch.zeros(self.output_dim, device=self.device, dtype=self.dtype)
        self.y_scale = 1.0
        self.calibration = 1.0
        self.metrics: dict[str, Any] = {}
        self.fitted = False
        #: the neighbour list of the last batch given to :meth:`predict_torch`, kept while exact
        self.neighbors = SkinNeighborList(self.model.reach, s.skin)

    # ---- properties and conversion -----------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.model.embedding.dtype

    @property
    def n_models(self) -> int:
        return self.model.n_models

    def to(
        self, device: str | torch.device | None = None, dtype: torch.dtype | None = None
    ) -> EnsembleSurrogate:
        """Move the model (and normalisers) to another device and/or floating type; returns ``self``."""
        if device is not None:
            self.device = resolve_device(device) if isinstance(device, str) else torch.device(device)
        self.model.to(self.device, dtype or self.dtype)
        self.y_mean = self.y_mean.to(self.device, dtype or self.dtype)
        return self

    def _tensors(
        self, structures: Sequence[Structure], field: str = "structures"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions ``[n, N, 3]`` and lattices ``[n, 3, 3]`` on the model's device and dtype."""
        if len(structures) == 0:
            raise InputError(field, "expected at least one structure")
        for k, st in enumerate(structures):
            sp = [site.specie.symbol for site in st]
            if sp != self.species:
                raise InputError(
                    f"{field}[{k}]",
                    f"species/site order {_short(sp)} differs from the surrogate's {_short(self.species)} "
                    "(a campaign keeps composition and site order fixed)",
                )
        pos = torch.tensor(np.stack([st.cart_coords for st in structures]), dtype=torch.float64)
        lat = torch.tensor(np.stack([st.lattice.matrix for st in structures]), dtype=torch.float64)
        return pos.to(self.device, self.dtype), lat.to(self.device, self.dtype)

    @torch.no_grad()
    def _basis(self, pos: torch.Tensor, lat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, float]:
        """The fixed geometry of the training structures: a dense image-summed basis ``[n, N, N, n_rbf]``
        (memory: n·N²·n_rbf numbers), the readout's pair-distribution features (unscaled; ``None``
        without readout) and the mean smooth neighbour count."""
        dense, rho, neighbors = [], [], []
        model = self.model
        for c in range(0, pos.shape[0], _CHUNK):
            g = model.geometry(pos[c : c + _CHUNK], lat[c : c + _CHUNK])
            dense.append(g.dense())
            neighbors.append(g.neighbors)
            if model.readout:
                rho.append(model.pair_distribution(g if model.readout_basis is not None else dense[-1]))
        return torch.cat(dense), torch.cat(rho) if rho else None, float(torch.cat(neighbors).mean())

    # ---- training ----------------------------------------------------------------------------------
    def fit(
        self, structures: Sequence[Structure], spectra: Sequence[Spectrum], progress: bool | None = None
    ) -> dict[str, Any]:
        """Train every member from fresh weights (seeded) on its split, then calibrate.

        Parameters
        ----------
        structures
            Campaign structures (same species and site order as ``species``).
        spectra
            Their simulated spectra on the surrogate's grid (``output_dim`` points).
        progress
            Show a progress bar (default: ``settings.progress``).

        Returns
        -------
        dict
            ``members``: per member ``train_mae``, ``heldout_mae`` (original units), ``best_epoch``,
            ``best_heldout_loss``; and overall ``train_mae`` (ensemble mean, all structures),
            ``heldout_mae`` (held-out structures against the members that did not see them),
            ``target_mad`` (mean absolute deviation of the structure-level targets from their mean:
            the error of always predicting the mean; comparable with ``heldout_mae``), ``calibration_scale``, ``coverage_1sigma`` (share of held-out
            errors within ±1 calibrated σ; ~0.68 if Gaussian), ``epochs``, ``seconds``, ``n_structures``,
            ``n_train``, ``n_heldout`` (per member), ``device``.
        """
        threads = torch.get_num_threads()
        if self.settings.num_threads:
            torch.set_num_threads(self.settings.num_threads)
        try:
            return self._fit(structures, spectra, progress)
        finally:
            torch.set_num_threads(threads)

    def _fit(
        self, structures: Sequence[Structure], spectra: Sequence[Spectrum], progress: bool | None
    ) -> dict[str, Any]:
        s = self.settings
        t0 = time.perf_counter()
        pos, lat = self._tensors(structures)
        n = pos.shape[0]
        data = self._targets(spectra, n)
        model = self.model
        model.reset_parameters(s.seed)
        model.to(self.device, self.dtype)
        basis, rho, norm = self._basis(pos, lat)  # fixed during training: computed once
        model.neighbor_norm.fill_(norm if norm > 0 else 1.0)
        if rho is not None:
            # RMS over the features the head sees: at node level the readout rows are placed in one of
            # ``n_blocks`` element blocks, the others zero
            blocks = model.n_blocks if self.level == "node" else 1
            rms = float((rho.pow(2).mean() / blocks).sqrt())
            model.readout_scale.fill_(1.0 / rms if rms > 0 else 1.0)

        gen = torch.Generator(device="cpu").manual_seed(int(s.seed) + 1)
        train, hold = member_splits(n, self.n_models, s.holdout_fraction, gen)
        penalties = None
        if model.head_skip is not None and s.linear_init == "ridge":
            assert rho is not None  # a linear readout path exists only with the readout, which gives rho
            penalties = fit_linear_path(model, rho, data, train, hold)
        result = train_members(
            model,
            basis,
            rho,
            data,
            train,
            hold,
            s,
            gen,
            self.device,
            self.dtype,
            desc=f"surrogate ({self.level}, K={self.n_models})",
            progress=s.progress if progress is None else progress,
        )
        n_hold = hold.shape[1]
        self.calibration, metrics = calibrate_and_score(
            self._all_outputs(basis, rho), data, train, hold, s.calibration_floor
        )
        metrics["members"] = [
            {
                **mm,
                "best_epoch": int(result.best_epoch[m]) + 1,
                "best_heldout_loss": float(result.best[m]) if n_hold else None,
            }
            for m, mm in enumerate(metrics["members"])
        ]
        metrics.update(
            epochs=result.epochs,
            seconds=round(time.perf_counter() - t0, 3),
            n_structures=n,
            n_train=int(train.shape[1]),
            n_heldout=int(n_hold),
            ridge_penalties=penalties,
            device=str(self.device),
        )
        self.metrics = metrics
        self.fitted = True
        return metrics

    def _targets(self, spectra: Sequence[Spectrum], n: int) -> Targets:
        """Standardised targets; sets the normalisers ``y_mean``/``y_scale`` from them."""
        data = build_targets(
            spectra,
            n,
            self.output_dim,
            self.absorber_sites if self.level == "node" else None,
            self.absorber,
            self.device,
            self.dtype,
        )
        self.y_mean, self.y_scale = data.mean, data.scale
        return data

    @torch.no_grad()
    def _all_outputs(self, basis: torch.Tensor, rho: torch.Tensor | None) -> torch.Tensor:
        """Standardised outputs of every member on every structure: ``[K, n, M]`` or ``[K, n, A, M]``."""
        chunks = range(0, basis.shape[0], _CHUNK)
        outs = [self.model(basis[c : c + _CHUNK], _take(rho, slice(c, c + _CHUNK))) for c in chunks]
        return torch.cat(outs, dim=1)

    # ---- prediction -------------------------------------------------------------------------------------
    def predict_torch(
        self, positions: torch.Tensor, lattice: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Differentiable, calibrated ``(mean [B, M], std [B, M])`` in the units of the training spectra.

        All members are evaluated in one batched pass (stacked weights). Inputs may be on any device and
        of any floating type; the computation runs on the surrogate's, and the results come back on the
        inputs'. The neighbour list of the batch is kept (:attr:`neighbors`): a later call with the
        same batch size, each structure moved less than about half of ``settings.skin``, reuses it
        (the proposal search calls this at every step); any other call rescans, so the result never
        depends on what was called before.

        Parameters
        ----------
        positions
            Cartesian positions ``[B, N, 3]`` (Å), sites in the surrogate's species order.
        lattice
            Lattice vectors as rows ``[B, 3, 3]`` (Å).
        """
        if positions.dim() != 3 or positions.shape[1:] != (len(self.species), 3):
            raise InputError(
                "positions", f"expected shape [B, {len(self.species)}, 3], got {tuple(positions.shape)}"
            )
        if lattice.shape != (positions.shape[0], 3, 3):
            raise InputError(
                "lattice", f"expected shape [{positions.shape[0]}, 3, 3], got {tuple(lattice.shape)}"
            )
        pos = positions.to(self.device, self.dtype)
        lat = lattice.to(self.device, self.dtype)
        mean, std = self._predict(pos, lat, self.neighbors)
        return mean.to(positions.device, positions.dtype), std.to(positions.device, positions.dtype)

    def _predict(
        self, pos: torch.Tensor, lat: torch.Tensor, neighbors: SkinNeighborList | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(self.model.geometry(pos, lat, neighbors), node_mean=True)  # node level: node mean
        y = out * self.y_scale + self.y_mean  # [K, B, M]
        mean = y.mean(0)
        # population standard deviation over members, with the calibration floor ε added in quadrature:
        # the calibrated predictive spread is s·sqrt(σ² + ε²), the model the scale s was fitted under
        # (it also keeps the gradient finite where all members agree exactly)
        var = (y - mean).pow(2).mean(0)
        floor = self.settings.calibration_floor * self.y_scale
        return mean, torch.sqrt(var + floor**2) * self.calibration

    def predict(self, structures: Sequence[Structure]) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated ``(mean [n, M], std [n, M])`` as float64 numpy arrays."""
        pos, lat = self._tensors(structures)
        means, stds = [], []
        with torch.no_grad():
            for c in range(0, pos.shape[0], _CHUNK):
                # a fresh list: the kept one belongs to the search that may be calling predict_torch
                m, s = self._predict(pos[c : c + _CHUNK], lat[c : c + _CHUNK], None)
                means.append(m.double().cpu().numpy())
                stds.append(s.double().cpu().numpy())
        return np.concatenate(means), np.concatenate(stds)

    # ---- persistence ---------------------------------------------------------------------------------------
    def save(self, path: str | IO[bytes]) -> None:
        """One ``torch.save`` file: settings, species, normalisers, calibration, metrics, weights (CPU)."""
        state = {
            "settings": self.settings,
            "species": self.species,
            "output_dim": self.output_dim,
            "level": self.level,
            "absorber": self.absorber,
            "state_dict": self.model.state_dict(),
            "y_mean": self.y_mean,
            "y_scale": self.y_scale,
            "calibration": self.calibration,
            "metrics": self.metrics,
            "fitted": self.fitted,
        }
        write_surrogate_file(state, path)

    @classmethod
    def load(cls, path: str | IO[bytes], device: str | None = None) -> EnsembleSurrogate:
        """Read a file written by :meth:`save`.

        Parameters
        ----------
        path
            File name or binary stream.
        device
            Where to put the model; default: the saved setting if that device exists here, else
            ``"auto"`` (a model trained on a GPU worker loads on a CPU-only machine).
        """
        state = read_surrogate_file(path)
        obj = cls(
            species=state["species"],
            output_dim=state["output_dim"],
            level=state["level"],
            absorber=state["absorber"],
            settings=settings_from_file(state, device),
        )
        obj.model.load_state_dict(state["state_dict"])
        obj.model.requires_grad_(False)
        obj.y_mean = state["y_mean"].to(obj.device, obj.dtype)
        obj.y_scale = float(state["y_scale"])
        obj.calibration = float(state["calibration"])
        obj.metrics = state.get("metrics", {})
        obj.fitted = bool(state.get("fitted", True))
        return obj


def _take(x: torch.Tensor | None, idx: slice) -> torch.Tensor | None:
    return None if x is None else x[idx]


def _short(species: Sequence[str]) -> str:
    """A compact description of a site-order species list for error messages."""
    text = ",".join(species)
    return f"[{text}]" if len(text) <= 60 else f"[{text[:57]}...] ({len(species)} sites)"
