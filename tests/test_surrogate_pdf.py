"""The PDF surrogate at node level: per-atom rows from pdffit2, a readout that covers rmax, training on a
tiny LiNiO2 cell (12 atoms, G(r) on 1–5 Å)."""

from __future__ import annotations

import dataclasses
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pymatgen.core import Structure

import aso_workflows
from aso_workflows.campaign.learn import load_models
from aso_workflows.spectra.pdf import PDFSimulator
from aso_workflows.spectra.pdf_partials import simulate_with_sites
from aso_workflows.surrogate.ensemble import EnsembleSurrogate
from aso_workflows.surrogate.factory import PDF_READOUT_MARGIN, needs_site_rows, surrogate_for_target
from aso_workflows.surrogate.settings import SurrogateSettings

DATA = Path(aso_workflows.__file__).parent / "data"
SIM = PDFSimulator(engine="pdffit2", rmin=1.0, rmax=5.0, rstep=0.05)

TINY = SurrogateSettings(
    n_models=3,
    hidden=16,
    n_layers=1,
    n_rbf=24,
    cutoff=3.5,
    epochs=120,
    lr=1e-2,
    batch_size=8,
    patience=40,
    progress=False,
    device="cpu",
    seed=0,
    prior=False,  # these tests are about the GNN learning the whole PDF (tests/test_pdf_prior.py: the prior)
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Tiny problems: one torch thread (fixture in conftest)."""


@pytest.fixture(scope="module")
def data():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = Structure.from_file(str(DATA / "LiNiO2.cif"))
    rng = np.random.default_rng(0)
    structures = []
    for _ in range(36):
        d = rng.normal(size=(len(start), 3)) * rng.uniform(0.03, 0.12)
        structures.append(
            Structure(start.lattice, start.species, start.cart_coords + d, coords_are_cartesian=True)
        )
    spectra = [simulate_with_sites(SIM, s) for s in structures]
    return structures, spectra


def _graph_only(spectra):
    return [s.model_copy(update={"site_values": None, "absorber_sites": None}) for s in spectra]


def test_node_level_pdf_learns_per_atom_rows(data):
    structures, spectra = data
    train, test = slice(0, 28), slice(28, 36)
    model = surrogate_for_target("pdf", SIM.grid(), [s.specie.symbol for s in structures[0]], TINY)
    assert isinstance(model, EnsembleSurrogate)  # the GNN ensemble alone (no prior in TINY)
    assert model.level == "node" and model.absorber_sites == list(range(len(structures[0])))
    # the readout reaches past the grid's rmax, beyond the 3.5 Å message-passing cutoff
    assert model.model.readout_basis is not None
    assert model.model.readout_basis.centre_max >= SIM.rmax + PDF_READOUT_MARGIN - 1e-9
    metrics = model.fit(structures[train], spectra[train])
    y = np.array([s.values for s in spectra[test]])
    mean, std = model.predict(structures[test])
    assert mean.shape == std.shape == y.shape and np.all(std > 0)
    mad = np.abs(y - np.mean([s.values for s in spectra[train]], axis=0)).mean()
    # per-atom rows + the ridge-started linear path: far below the mean spectrum (graph level: ~0.35)
    assert np.abs(mean - y).mean() < 0.2 * mad
    assert metrics["heldout_mae"] < 0.3 * metrics["target_mad"]
    assert len(metrics["ridge_penalties"]) == TINY.n_models
    # the prediction is the mean of the per-atom rows the model was trained on
    pos, lat = model._tensors(structures[test])
    with torch.no_grad():
        rows = model.model(model.model.geometry(pos, lat))  # [K, B, N, M] standardised
    per_atom = (rows * model.y_scale + model.y_mean).mean(0).mean(1).double().numpy()
    np.testing.assert_allclose(per_atom, mean, rtol=1e-4, atol=1e-4)


def test_node_level_round_trip_and_gradients(data, tmp_path):
    structures, spectra = data
    settings = dataclasses.replace(TINY, epochs=3, dtype="float64", n_models=2)
    model = surrogate_for_target("pdf", SIM.grid(), [s.specie.symbol for s in structures[0]], settings)
    assert isinstance(model, EnsembleSurrogate)
    model.fit(structures[:8], spectra[:8])
    buf = io.BytesIO()
    model.save(buf)
    buf.seek(0)
    again = EnsembleSurrogate.load(buf)
    assert again.level == "node" and again.settings.readout_cutoff == model.settings.readout_cutoff
    np.testing.assert_allclose(again.predict(structures[8:10])[0], model.predict(structures[8:10])[0])
    s = structures[10]
    pos = torch.tensor(s.cart_coords)[None].requires_grad_()
    lat = torch.tensor(s.lattice.matrix)[None].requires_grad_()

    def f(p, lt):
        m, sd = again.predict_torch(p, lt)
        return torch.cat([m, sd], dim=-1)

    assert torch.autograd.gradcheck(f, (pos, lat), eps=1e-6, atol=1e-5, rtol=1e-3)


def test_graph_level_option_and_site_rows_rule(data):
    structures, spectra = data
    settings = dataclasses.replace(TINY, pdf_level="graph", epochs=5)
    assert needs_site_rows("pdf", TINY) and not needs_site_rows("pdf", settings)
    assert not needs_site_rows("exafs", TINY)
    model = surrogate_for_target("pdf", SIM.grid(), [s.specie.symbol for s in structures[0]], settings)
    assert isinstance(model, EnsembleSurrogate)
    assert model.level == "graph" and model.model.readout_basis is not None
    metrics = model.fit(structures[:10], _graph_only(spectra[:10]))
    assert metrics["n_structures"] == 10


def test_aso_campaign_stores_per_atom_rows_and_trains_node_level(tmp_path):
    """In a campaign, PDF evaluations carry the per-atom rows (with their engine-call count) and the
    surrogate trains at node level on them; a campaign whose optimiser needs no surrogate skips them."""
    from campaign_files import TINY_SURROGATE, campaign_yaml

    from aso_workflows.campaign.local import LocalCampaignRunner
    from aso_workflows.config import load_config

    fields: dict[str, Any] = {
        "budget": 4,
        "initial_size": 2,
        "batch_size": 1,
        "proposal": {"n_starts": 4, "steps": 5},
        "surrogate": {**TINY_SURROGATE, "prior": False},  # per-atom rows are for the GNN alone
    }
    state = LocalCampaignRunner(progress=False).run(
        load_config(campaign_yaml(tmp_path / "a", "rows", **fields))
    )
    evals = state.evaluations("completed")
    assert len(evals) == 4
    n_atoms = len(state.species)
    for e in evals:
        spectrum = state.spectrum(e["spectra"]["pdf"])
        rows = np.asarray(spectrum.site_values)
        assert rows.shape == (n_atoms, len(spectrum.values)) and spectrum.absorber_sites == list(
            range(n_atoms)
        )
        np.testing.assert_allclose(rows.mean(0), spectrum.values, atol=1e-6 * np.abs(spectrum.values).max())
        assert spectrum.extra["site_contributions"]["engine_calls"] == n_atoms + len(set(state.species))
    model = next(iter(state.db.models.find({"campaign": "rows"})))
    loaded = load_models(state, {"pdf": model["_id"]})["pdf"]
    assert loaded.level == "node" and loaded.settings.readout_cutoff >= 10.0
    random = LocalCampaignRunner(progress=False).run(
        load_config(campaign_yaml(tmp_path / "b", "norows", optimizer="random", budget=3, initial_size=2))
    )
    assert all(
        random.spectrum(e["spectra"]["pdf"]).site_values is None for e in random.evaluations("completed")
    )
