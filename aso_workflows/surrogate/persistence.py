"""Saving and loading a surrogate ensemble's state (one file).

The ensemble (:mod:`~aso_workflows.surrogate.ensemble`) hands its state over as a plain dictionary and
rebuilds itself from one; this module knows the file, not the class. One ``torch.save`` dictionary:
format tag and version, settings, species, level, normalisers, calibration, metrics and the weights on
the CPU. Loading reads it with ``weights_only=True`` (no code
runs from the file) and rebuilds the model with the saved settings; a model trained on a GPU worker
loads on a CPU-only machine.
"""

from __future__ import annotations

import dataclasses
from typing import IO, Any

import torch

from aso_workflows.errors import InputError
from aso_workflows.surrogate.settings import SurrogateSettings, resolve_device

__all__ = ["FORMAT", "VERSION", "write_surrogate_file", "read_surrogate_file", "settings_from_file"]

FORMAT = "aso-workflows/ensemble-surrogate"
VERSION = 1


def write_surrogate_file(state: dict[str, Any], path: str | IO[bytes]) -> None:
    """Write a surrogate's ``state`` (settings as a dataclass, species, output_dim, level, absorber,
    state_dict, y_mean, y_scale, calibration, metrics, fitted) to a file name or binary stream, tensors
    on the CPU."""
    plain = {"format": FORMAT, "version": VERSION, **state}
    plain["settings"] = dataclasses.asdict(state["settings"])
    plain["state_dict"] = {key: v.detach().cpu() for key, v in state["state_dict"].items()}
    plain["y_mean"] = state["y_mean"].detach().cpu()
    plain["y_scale"] = float(state["y_scale"])
    plain["calibration"] = float(state["calibration"])
    torch.save(plain, path)


def read_surrogate_file(path: str | IO[bytes]) -> dict[str, Any]:
    """The saved dictionary; :class:`InputError` naming the file if it is not a saved surrogate."""
    name = getattr(path, "name", path) if not isinstance(path, str) else path
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or damaged files
        raise InputError(str(name), f"not a saved surrogate ({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise InputError(str(name), "not a saved EnsembleSurrogate file")
    return state


def settings_from_file(state: dict[str, Any], device: str | None) -> SurrogateSettings:
    """The saved settings, with ``device`` (default: the saved one if it exists here, else ``"auto"``).

    Fields this version does not know are dropped; fields added since the file was written take the
    value that reproduces the saved model (see the ``setdefault`` lines).
    """
    known = {f.name for f in dataclasses.fields(SurrogateSettings)}
    stored = {key: v for key, v in state["settings"].items() if key in known}
    if device is None:
        device = stored.get("device", "auto")
        if device != "auto" and resolve_device(device).type == "cuda" and not torch.cuda.is_available():
            device = "auto"
    stored["device"] = device
    stored.setdefault("linear_readout", False)  # saved before the linear readout existed
    stored.setdefault("readout_cutoff", None)  # saved before the readout had its own basis
    stored.setdefault("linear_init", "zero")  # training-only; the saved weights are what count
    return SurrogateSettings(**stored)
