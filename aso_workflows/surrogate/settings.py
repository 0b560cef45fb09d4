"""Settings of the GNN-ensemble surrogate (the ``surrogate:`` section of a campaign file).

A :func:`~aso_workflows.settings.settings_dataclass`: pydantic checks every field on construction (a
wrong value is one error naming the field).

This module imports no torch: reading a campaign file (``aso status``, ``aso results``) must stay light.
:func:`resolve_device` imports torch when it is called.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, field_validator

from aso_workflows.errors import InputError
from aso_workflows.settings import settings_dataclass

if TYPE_CHECKING:
    import torch

__all__ = ["SurrogateSettings", "SurrogateLevel", "check_device_name", "resolve_device"]

SurrogateLevel = Literal["graph", "node"]
"""What a surrogate learns: one spectrum per structure (graph) or one row per node atom (node)."""

_DEVICE = re.compile(r"^(auto|cpu|mps|(cuda|xpu)(:\d+)?)$")


def check_device_name(device: str) -> None:
    """Refuse a device name that is not ``auto``, ``cpu``, ``cuda[:n]`` (or ``mps``, ``xpu[:n]``)."""
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise InputError("surrogate.device", f"expected 'auto', 'cpu' or 'cuda[:n]', got {device!r}")


def resolve_device(device: str) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; anything else as torch spells it."""
    import torch

    check_device_name(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@settings_dataclass
class SurrogateSettings:
    """Settings of the GNN ensemble and its training (the ``surrogate:`` section of a campaign).

    Attributes
    ----------
    n_models
        Ensemble members ``K`` (reference 5).
    hidden
        Channels per atom.
    n_layers
        Interaction blocks.
    n_rbf
        Radial basis functions on ``[0, cutoff]`` (spacing ``cutoff / (n_rbf − 1)``).
    n_radial
        Learned radial channels per member (linear combinations of the basis); the cost of a message
        pass grows linearly with it. 4 and 8 fitted the LiNiO2 PDF benchmark equally well (the readout
        carries the pair distribution); 8 doubles the cost of a proposal step.
    cutoff
        Neighbour cutoff (Å); the reference uses 8 Å. Messages pass ``n_layers`` times, so information
        travels up to ``n_layers × cutoff``.
    basis
        ``"bspline"`` (cubic B-splines, 4 non-zero per distance: fast) or ``"gaussian"`` (SchNet's
        Gaussian expansion, dense: ~10× slower on CPU).
    pool
        Graph-level pooling of atom features, ``"mean"`` or ``"sum"``.
    readout
        Give the head the pair distribution in the radial basis too (partial RDFs per structure at graph
        level, each absorber's neighbour distribution at node level); see
        :class:`~aso_workflows.surrogate.model.EnsembleGNN`.
    linear_readout
        Also map the pair distribution linearly, straight to the outputs (with ``readout``). A PDF is a
        linear functional of the partial RDFs, so this path fits it from a handful of structures.
        Measured on the reduced structure-determination benchmark's data (train on the first 11 or 21
        structures of an ASO run, predict the rest; 4 cases × 2 sizes): spectrum error lower in 7 of 8,
        rank correlation of predicted vs true mismatch higher in 7 of 8 (e.g. LiNiO2 JT, 21 structures:
        Spearman −0.22 → 0.74). Models saved without it load with it off.
    linear_init
        How the linear path starts: ``"ridge"`` (each member's ridge regression of its training rows on the
        readout, the penalty chosen on its held-out structures; see
        :func:`~aso_workflows.surrogate.training.fit_linear_path`) or ``"zero"`` (as before issue 12).
        Models saved before it existed load with ``"zero"``.
    readout_cutoff
        Range (Å) of the readout's own radial basis (same spacing as the message-passing basis, centres
        up to this distance); ``None``: the readout uses the message-passing basis and ``cutoff``. For a
        PDF the campaign uses the target's ``rmax`` + 1 Å when this is ``None`` (see
        :func:`~aso_workflows.surrogate.factory.surrogate_for_target`), so the surrogate sees every pair
        distance that shapes G(r).
    skin
        Extra reach (Å) of the neighbour list kept across the steps of a proposal search
        (:class:`~aso_workflows.surrogate.neighbors.SkinNeighborList`): a structure's list is rebuilt
        only after one of its atoms has moved about half of it. Larger: fewer rebuilds, more pairs per
        step. Does not change a prediction.
    prior
        Use the technique's physics prior where the project has one (PDF from pdffit2: its G(r) in torch,
        equal to the engine; ``docs/surrogate.md``): the surrogate predicts prior + GNN residual.
        ``False``: the GNN ensemble learns the whole spectrum (as before issue 20).
    residual
        With a prior: train the GNN ensemble on what the prior misses (``False``: the prior alone, its
        spread its RMS error on the training structures).
    residual_min
        The ensemble is trained only when the prior misses some training spectrum by more than this
        (largest absolute residual over largest absolute value, per spectrum); below it, nothing is
        learnable and the prior stands alone. 0: always train.
    pdf_level
        ``"node"``: the PDF surrogate learns each atom's contribution G_i(r) (one row per atom, from
        :mod:`~aso_workflows.spectra.pdf_partials`; the reference's way) and predicts their mean;
        ``"graph"``: it learns G(r) per structure. See ``docs/surrogate.md`` for the measurement that
        chose the default.
    epochs
        Maximum training epochs.
    lr, weight_decay
        AdamW learning rate and weight decay. The reference's 1e-3 reached the same held-out error on
        the LiNiO2 PDF benchmark but needed more than 300 epochs; 3e-3 stops early after ~230.
    batch_size
        Structures per member per step.
    holdout_fraction
        Share of the structures each member holds out (early stopping, calibration, metrics).
    patience
        Epochs without improvement of a member's held-out loss before it stops (best weights kept).
    loss
        ``"l1"`` (reference), ``"mse"`` or ``"huber"`` on standardised targets.
    lr_factor, lr_patience, min_lr
        ``ReduceLROnPlateau`` settings.
    calibration_floor
        ``ε`` of the calibration (standardised units).
    device
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
    dtype
        ``"float32"`` or ``"float64"``.
    seed
        Seed of the initial weights, splits and minibatch order (same seed → same weights on CPU).
    num_threads
        Intra-op CPU threads while training (``torch.set_num_threads``, restored afterwards); 0 leaves
        torch's setting. On a node shared with other jobs, match it to the cores the job owns:
        oversubscribed threads slow training several-fold.
    progress
        Show a tqdm progress bar while training.
    """

    n_models: Annotated[int, Field(gt=0)] = 5
    hidden: Annotated[int, Field(gt=0)] = 64
    n_layers: Annotated[int, Field(ge=0)] = 3
    n_rbf: Annotated[int, Field(ge=4)] = 50
    n_radial: Annotated[int, Field(gt=0)] = 4
    cutoff: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 6.0
    basis: Literal["bspline", "gaussian"] = "bspline"
    pool: Literal["mean", "sum"] = "mean"
    readout: bool = True
    linear_readout: bool = True
    readout_cutoff: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    linear_init: Literal["ridge", "zero"] = "ridge"
    skin: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.5
    pdf_level: SurrogateLevel = "node"
    prior: bool = True
    residual: bool = True
    residual_min: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 1e-6
    epochs: Annotated[int, Field(gt=0)] = 300
    lr: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 3e-3
    weight_decay: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 1e-4
    batch_size: Annotated[int, Field(gt=0)] = 16
    holdout_fraction: Annotated[float, Field(ge=0, lt=1)] = 1 / 3
    patience: Annotated[int, Field(gt=0)] = 50
    loss: Literal["l1", "mse", "huber"] = "l1"
    lr_factor: Annotated[float, Field(gt=0, lt=1)] = 0.5
    lr_patience: Annotated[int, Field(gt=0)] = 15
    min_lr: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 1e-5
    calibration_floor: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.01
    device: str = "auto"
    dtype: Literal["float32", "float64"] = "float32"
    seed: int = 0
    num_threads: Annotated[int, Field(ge=0)] = 0
    progress: bool = True

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not _DEVICE.match(v):
            raise ValueError(f"expected 'auto', 'cpu' or 'cuda[:n]', got {v!r}")
        return v
