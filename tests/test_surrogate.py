"""The GNN-ensemble surrogate on tiny real learning problems.

Targets are Gaussian-smeared radial distributions of perturbed 8-atom NiO cells computed in numpy with
pymatgen's neighbour list: a smooth function of the structure (total RDF for the graph level, the RDF
around each Ni for the node level).
"""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from pymatgen.core import Structure

import aso_workflows
from aso_workflows.errors import InputError
from aso_workflows.spectra.spectrum import Grid, Spectrum
from aso_workflows.surrogate.base import Surrogate
from aso_workflows.surrogate.ensemble import EnsembleSurrogate
from aso_workflows.surrogate.settings import SurrogateSettings
from aso_workflows.surrogate.training import member_splits

DATA = Path(aso_workflows.__file__).parent / "data"
R = np.linspace(1.6, 3.8, 23)
GRID = Grid(name="r", unit="Å", values=R.tolist())
SIGMA = 0.15

TINY = SurrogateSettings(
    n_models=3,
    hidden=16,
    n_layers=2,
    n_rbf=32,
    n_radial=4,
    cutoff=4.0,
    epochs=150,
    lr=1e-2,
    batch_size=8,
    patience=40,
    progress=False,
    device="cpu",
    seed=0,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Tiny problems: run them on one torch thread (fixture in conftest)."""


@pytest.fixture(scope="module")
def nio() -> Structure:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Structure.from_file(str(DATA / "NiO.cif"))


def _perturbed(s: Structure, n: int, seed: int, amplitude: float = 0.25) -> list[Structure]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        d = rng.normal(size=(len(s), 3))
        d *= rng.uniform(0.05, amplitude, size=(len(s), 1)) / np.linalg.norm(d, axis=1, keepdims=True)
        out.append(Structure(s.lattice, s.species, s.cart_coords + d, coords_are_cartesian=True))
    return out


def _site_rdf(s: Structure) -> np.ndarray:
    """``[N, len(R)]`` Gaussian-smeared radial distribution around each site."""
    i, _, _, d = s.get_neighbor_list(R[-1] + 4 * SIGMA)
    g = np.exp(-((R[None] - d[:, None]) ** 2) / (2 * SIGMA**2))
    out = np.zeros((len(s), len(R)))
    np.add.at(out, i, g)
    return out


def _graph_spectrum(s: Structure) -> Spectrum:
    return Spectrum(technique="pdf", grid=GRID, values=_site_rdf(s).mean(0).tolist())


def _node_spectrum(s: Structure, sites: list[int]) -> Spectrum:
    per_site = _site_rdf(s)[sites]
    return Spectrum(
        technique="exafs",
        grid=GRID,
        values=per_site.mean(0).tolist(),
        absorber="Ni",
        absorber_sites=sites,
        site_values=per_site.tolist(),
    )


def _species(s: Structure) -> list[str]:
    return [site.specie.symbol for site in s]


@pytest.fixture(scope="module")
def graph_data(nio):
    train = _perturbed(nio, 40, seed=0)
    test = _perturbed(nio, 12, seed=1)
    return (
        train,
        [_graph_spectrum(s) for s in train],
        test,
        np.array([_graph_spectrum(s).values for s in test]),
    )


@pytest.fixture(scope="module")
def fitted(graph_data) -> tuple[EnsembleSurrogate, dict]:
    train, spectra, _, _ = graph_data
    model = EnsembleSurrogate(_species(train[0]), len(R), "graph", settings=TINY)
    return model, model.fit(train, spectra)


def test_graph_level_learns_a_smooth_target(fitted, graph_data):
    model, metrics = fitted
    _, spectra, test, y_test = graph_data
    assert isinstance(model, Surrogate)
    # held-out error (members that did not see the structure) well below predicting the mean
    assert metrics["heldout_mae"] < 0.35 * metrics["target_mad"]
    mean, std = model.predict(test)
    assert mean.shape == std.shape == (len(test), len(R))
    train_mean = np.mean([s.values for s in spectra], axis=0)
    assert np.abs(mean - y_test).mean() < 0.35 * np.abs(y_test - train_mean).mean()
    # calibrated spread: positive, and of the size of the errors (not orders of magnitude off)
    assert np.all(std > 0)
    ratio = np.sqrt(np.mean((mean - y_test) ** 2)) / np.sqrt(np.mean(std**2))
    assert 0.2 < ratio < 5
    assert metrics["calibration_scale"] > 0 and 0 <= metrics["coverage_1sigma"] <= 1
    assert len(metrics["members"]) == TINY.n_models
    assert metrics["n_heldout"] == round(40 / 3) and metrics["n_train"] == 40 - metrics["n_heldout"]
    for m in metrics["members"]:
        assert m["heldout_mae"] is not None and m["train_mae"] < m["heldout_mae"] * 2


def test_members_hold_out_different_structures(fitted, graph_data):
    model, _ = fitted
    gen = torch.Generator().manual_seed(1)
    train, hold = member_splits(40, model.n_models, model.settings.holdout_fraction, gen)
    assert [set(h.tolist()) for h in hold] != [set(hold[0].tolist())] * len(hold)
    for t, h in zip(train, hold, strict=True):
        assert not set(t.tolist()) & set(h.tolist()) and len(t) + len(h) == 40
    # three members, a third each: the k-fold case, disjoint hold-outs covering everything once
    flat = torch.cat(list(hold)).tolist()
    assert len(flat) == len(set(flat)) == 13 * 3


def test_save_load_round_trip(fitted, graph_data, tmp_path):
    model, _ = fitted
    test = graph_data[2]
    mean, std = model.predict(test)
    buf = io.BytesIO()
    model.save(buf)
    buf.seek(0)
    again = EnsembleSurrogate.load(buf)
    m2, s2 = again.predict(test)
    np.testing.assert_array_equal(mean, m2)
    np.testing.assert_array_equal(std, s2)
    assert again.settings == model.settings and again.metrics == model.metrics
    model.save(tmp_path / "model.pt")
    m3, _ = EnsembleSurrogate.load(str(tmp_path / "model.pt"), device="cpu").predict(test)
    np.testing.assert_array_equal(mean, m3)


def test_load_rejects_other_files(tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"weights": torch.zeros(3)}, bad)
    with pytest.raises(InputError, match="not a saved EnsembleSurrogate"):
        EnsembleSurrogate.load(str(bad))
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(InputError, match="not a saved surrogate"):
        EnsembleSurrogate.load(str(tmp_path / "text.pt"))


def _float64_copy(model: EnsembleSurrogate) -> EnsembleSurrogate:
    buf = io.BytesIO()
    model.save(buf)
    buf.seek(0)
    return EnsembleSurrogate.load(buf).to(dtype=torch.float64)


def test_predict_torch_gradients_match_finite_differences(fitted, graph_data):
    model = _float64_copy(fitted[0])
    test = graph_data[2][:2]
    pos = torch.tensor(np.stack([s.cart_coords for s in test])).requires_grad_()
    lat = torch.tensor(np.stack([s.lattice.matrix for s in test])).requires_grad_()
    weights = torch.randn(2, len(R), dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def f(p, lt):
        mean, std = model.predict_torch(p, lt)
        return (weights * mean).sum() + (weights * std).sum()

    assert torch.autograd.gradcheck(f, (pos, lat), eps=1e-6, atol=1e-5, rtol=1e-3)


def test_predict_torch_is_batched_and_keeps_dtype(fitted, graph_data):
    model, _ = fitted
    test = graph_data[2]
    pos = torch.tensor(np.stack([s.cart_coords for s in test]))
    lat = torch.tensor(np.stack([s.lattice.matrix for s in test]))
    mean, std = model.predict_torch(pos, lat)
    assert mean.dtype == std.dtype == torch.float64 and mean.shape == (len(test), len(R))
    one, _ = model.predict_torch(pos[3:4], lat[3:4])
    torch.testing.assert_close(one[0], mean[3], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.predict(test)[0], mean.numpy(), rtol=1e-6, atol=1e-6)
    with pytest.raises(InputError, match="positions"):
        model.predict_torch(pos[:, :3], lat)


def test_invariances(fitted, graph_data, nio):
    """Translation of all atoms, rotation of atoms and lattice together, and swapping two atoms of the
    same element leave the prediction unchanged."""
    model = _float64_copy(fitted[0])
    s = graph_data[2][0]
    pos = torch.tensor(s.cart_coords)[None]
    lat = torch.tensor(s.lattice.matrix)[None]
    ref, ref_std = model.predict_torch(pos, lat)
    moved, _ = model.predict_torch(pos + torch.tensor([0.3, -2.1, 5.7], dtype=torch.float64), lat)
    torch.testing.assert_close(moved, ref)
    c, sn = np.cos(0.7), np.sin(0.7)
    rot = torch.tensor([[c, -sn, 0.0], [sn, c, 0.0], [0.0, 0.0, 1.0]]) @ torch.tensor(
        [[1.0, 0.0, 0.0], [0.0, np.cos(0.4), -np.sin(0.4)], [0.0, np.sin(0.4), np.cos(0.4)]]
    )
    rotated, rotated_std = model.predict_torch(pos @ rot.T, lat @ rot.T)
    torch.testing.assert_close(rotated, ref)
    torch.testing.assert_close(rotated_std, ref_std)
    ni = [k for k, sp in enumerate(_species(s)) if sp == "Ni"][:2]
    perm = list(range(len(s)))
    perm[ni[0]], perm[ni[1]] = perm[ni[1]], perm[ni[0]]
    swapped, _ = model.predict_torch(pos[:, perm], lat)
    torch.testing.assert_close(swapped, ref)


def test_same_seed_same_weights(graph_data):
    train, spectra, _, _ = graph_data
    quick = dataclasses.replace(TINY, epochs=3)
    a = EnsembleSurrogate(_species(train[0]), len(R), settings=quick)
    b = EnsembleSurrogate(_species(train[0]), len(R), settings=quick)
    a.fit(train[:12], spectra[:12])
    b.fit(train[:12], spectra[:12])
    for (name, pa), pb in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    c = EnsembleSurrogate(_species(train[0]), len(R), settings=dataclasses.replace(quick, seed=1))
    c.fit(train[:12], spectra[:12])
    assert not torch.equal(a.model.embedding, c.model.embedding)


def test_node_level_with_site_subsets(nio):
    """XAS-like: per-Ni spectra for a different subset of Ni sites per structure (and a few structures
    with only the averaged spectrum); the prediction is the average over all Ni sites."""
    rng = np.random.default_rng(3)
    ni = [k for k, s in enumerate(nio) if s.specie.symbol == "Ni"]
    train = _perturbed(nio, 40, seed=4)
    spectra = []
    for k, s in enumerate(train):
        sites = sorted(rng.choice(ni, size=2, replace=False).tolist())
        spec = _node_spectrum(s, sites)
        if k % 10 == 0:  # only the average over all absorbers is known
            spec = Spectrum(
                technique="exafs", grid=GRID, values=_site_rdf(s)[ni].mean(0).tolist(), absorber="Ni"
            )
        spectra.append(spec)
    model = EnsembleSurrogate(_species(nio), len(R), "node", absorber="Ni", settings=TINY)
    metrics = model.fit(train, spectra)
    assert metrics["heldout_mae"] < 0.5 * metrics["target_mad"]
    test = _perturbed(nio, 10, seed=5)
    truth = np.array([_site_rdf(s)[ni].mean(0) for s in test])
    mean, std = model.predict(test)
    assert mean.shape == (10, len(R)) and np.all(std > 0)
    assert np.abs(mean - truth).mean() < 0.5 * np.abs(truth - truth.mean(0)).mean()


def test_bad_inputs(nio, graph_data):
    train, spectra, _, _ = graph_data
    model = EnsembleSurrogate(_species(nio), len(R), settings=dataclasses.replace(TINY, epochs=1))
    with pytest.raises(InputError, match=r"structures\[1\]"):
        model.fit([train[0], nio.copy().replace_species({"Ni": "Co"})], spectra[:2])
    with pytest.raises(InputError, match="one spectrum per structure"):
        model.fit(train[:3], spectra[:2])
    short = Spectrum(technique="pdf", grid=Grid(name="r", unit="Å", values=[1.0, 2.0]), values=[0.0, 1.0])
    with pytest.raises(InputError, match=r"spectra\[1\].values"):
        model.fit(train[:2], [spectra[0], short])
    with pytest.raises(InputError, match="absorber"):
        EnsembleSurrogate(_species(nio), len(R), "node", absorber="Fe", settings=TINY)
    node = EnsembleSurrogate(_species(nio), len(R), "node", absorber="Ni", settings=TINY)
    o_site = [k for k, s in enumerate(nio) if s.specie.symbol == "O"][:1]
    with pytest.raises(InputError, match="absorber_sites"):
        node.fit(train[:2], [_node_spectrum(train[0], o_site), _node_spectrum(train[1], o_site)])


@pytest.mark.parametrize(
    "field, value",
    [
        ("epochs", 0),
        ("holdout_fraction", 1.0),
        ("loss", "l3"),
        ("device", "tpu!"),
        ("n_rbf", 2),
        ("readout_cutoff", -1.0),
        ("pdf_level", "atom"),
        ("linear_init", "random"),
    ],
)
def test_settings_are_validated(field, value):
    with pytest.raises(ValidationError, match=field):
        SurrogateSettings(**{field: value})


def test_settings_import_no_torch():
    """A campaign file is read without importing torch (the settings module is light)."""
    code = (
        "import sys; from aso_workflows.surrogate.settings import SurrogateSettings; "
        "SurrogateSettings(device='cuda:1'); import aso_workflows.surrogate; "
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_node_level_gradients_match_finite_differences(nio):
    """Untrained float64 node-level model (random weights): the absorber readout and messages."""
    settings = dataclasses.replace(TINY, dtype="float64", n_models=2)
    model = EnsembleSurrogate(_species(nio), 5, "node", absorber="Ni", settings=settings)
    s = _perturbed(nio, 1, seed=9)[0]
    pos = torch.tensor(s.cart_coords)[None].requires_grad_()
    lat = torch.tensor(s.lattice.matrix)[None].requires_grad_()

    def f(p, lt):
        mean, std = model.predict_torch(p, lt)
        return torch.cat([mean, std], dim=-1)

    assert torch.autograd.gradcheck(f, (pos, lat), eps=1e-6, atol=1e-5, rtol=1e-3)


@pytest.mark.parametrize("basis", ["bspline", "gaussian"])
@pytest.mark.parametrize("level", ["graph", "node"])
def test_sparse_and_dense_inputs_agree(nio, basis, level):
    """Prediction (sparse, differentiable geometry) and training (dense basis) paths give one model."""
    settings = dataclasses.replace(TINY, basis=basis, dtype="float64")
    model = EnsembleSurrogate(
        _species(nio), 7, level, absorber="Ni" if level == "node" else None, settings=settings
    )
    net = model.model
    structures = _perturbed(nio, 3, seed=11)
    pos, lat = model._tensors(structures)
    graph = net.geometry(pos, lat)
    dense = graph.dense()
    assert dense.shape == (3, len(nio), len(nio), settings.n_rbf)
    torch.testing.assert_close(net.pair_distribution(graph), net.pair_distribution(dense))
    torch.testing.assert_close(net(graph), net(dense))
    ids = torch.tensor([[2, 0], [1, 1], [0, 2]])  # per member
    per_member = net(dense, ids=ids)
    for k in range(3):
        torch.testing.assert_close(per_member[k], net(dense)[k, ids[k]])


def test_kept_neighbour_list_gives_fresh_predictions(nio, monkeypatch):
    """predict_torch keeps the batch's neighbour list (the proposal search calls it at every step): after
    small moves, a large move of one structure and a new batch it predicts, with gradients, what a fresh
    list gives; the pair-basis gradient is the same when computed in several blocks."""
    from aso_workflows.surrogate import graph

    settings = dataclasses.replace(TINY, dtype="float64", readout_cutoff=5.0, skin=0.3)
    model = EnsembleSurrogate(_species(nio), 7, "node", settings=settings)
    net = model.model
    assert net.head_skip is not None
    with torch.no_grad():  # a linear readout path that is not zero, so that it is tested too
        net.head_skip.weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
    pos, lat = model._tensors(_perturbed(nio, 3, seed=12))

    def both(p: torch.Tensor, lt: torch.Tensor = lat) -> tuple[torch.Tensor, ...]:
        out = []
        for neighbors in (model.neighbors, None):
            q = p.clone().requires_grad_()
            mean, std = model._predict(q, lt, neighbors)
            (grad,) = torch.autograd.grad((mean.sin() + std).sum(), q)
            out.append(torch.cat([mean.flatten(), std.flatten(), grad.flatten()]))
        return tuple(out)

    moves = [0.0, 0.05, 0.1]
    for k, step in enumerate(moves):
        torch.testing.assert_close(*both(pos + step * (k + 1) / 10))
    assert model.neighbors.scans == 3
    far = pos.clone()
    far[2] += 0.2 * torch.randn(far[2].shape, generator=torch.Generator().manual_seed(2), dtype=far.dtype)
    torch.testing.assert_close(*both(far))
    assert model.neighbors.scans == 4
    monkeypatch.setattr(graph, "BAG_CHUNK", 40)  # pairs × basis functions per block: several blocks
    model.neighbors = type(model.neighbors)(net.reach, settings.skin)
    torch.testing.assert_close(*both(far[:2], lat[:2]))
