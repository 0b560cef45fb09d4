"""Acquisition functions and the exploration schedule."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pytest
import torch
from pydantic import TypeAdapter

from aso_workflows.errors import InputError
from aso_workflows.optimizers.aso.acquisition import (
    AcquisitionFunction,
    ExpectedMismatch,
    LCBSchedule,
    LowerConfidenceBound,
    rms_spread,
)


@pytest.fixture
def spectra():
    rng = np.random.default_rng(0)
    grid = np.linspace(0, 6, 40)
    target = np.sin(grid) + 0.3 * np.cos(3 * grid)
    means = target[None] + rng.normal(scale=0.2, size=(5, 40))
    stds = np.abs(rng.normal(scale=0.1, size=(5, 40)))
    return target, means, stds


def _t(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


def test_lcb_matches_its_formula_for_both_metrics(spectra):
    target, means, stds = spectra
    scale = np.sqrt(np.mean((target - target.mean()) ** 2))
    metrics: tuple[tuple[Literal["mae", "mse"], int], ...] = (("mae", 1), ("mse", 2))
    for metric, power in metrics:
        acq = LowerConfidenceBound({"pdf": target}, weights={"pdf": 2.0}, lam=0.1, metric=metric)
        got = acq({"pdf": _t(means)}, {"pdf": _t(stds)}).numpy()
        d = np.mean(np.abs(means - target) ** power, axis=1)
        u = np.mean(stds**power, axis=1)
        assert np.allclose(got, 2.0 * (d - 0.1 * u) / scale**power)


def test_lcb_falls_as_uncertainty_grows(spectra):
    target, means, _ = spectra
    acq = LowerConfidenceBound({"pdf": target}, lam=0.1)
    mu = _t(np.repeat(means[:1], 4, axis=0))
    sd = _t(np.linspace(0.0, 1.0, 4)[:, None] * np.ones((4, 40)))
    values = acq({"pdf": mu}, {"pdf": sd}).numpy()
    assert np.all(np.diff(values) < 0)
    # pure exploitation ignores the uncertainty
    exploit = ExpectedMismatch({"pdf": target})({"pdf": mu}, {"pdf": sd}).numpy()
    assert np.allclose(exploit, exploit[0])
    assert np.allclose(exploit, acq.with_lam(0.0)({"pdf": mu}, {"pdf": sd}).numpy())


def test_lower_is_better_and_zero_mismatch_is_the_minimum(spectra):
    target, means, _ = spectra
    acq = ExpectedMismatch({"pdf": target})
    perfect = acq({"pdf": _t(target[None])}, {})
    assert float(perfect) == 0.0
    assert torch.all(acq({"pdf": _t(means)}, {}) > perfect)


def test_default_scales_make_techniques_unit_free(spectra):
    target, means, stds = spectra
    one = LowerConfidenceBound({"a": target, "b": target})
    # the same mismatch in different units (×1000) contributes the same amount
    two = LowerConfidenceBound({"a": target, "b": 1000 * target})
    m1 = {"a": _t(means), "b": _t(means)}
    s1 = {"a": _t(stds), "b": _t(stds)}
    m2 = {"a": _t(means), "b": _t(1000 * means)}
    s2 = {"a": _t(stds), "b": _t(1000 * stds)}
    assert torch.allclose(one(m1, s1), two(m2, s2))
    terms = two.terms(m2, s2)
    assert torch.allclose(terms["a"], terms["b"])
    assert torch.allclose(terms["a"] + terms["b"], two(m2, s2))
    assert rms_spread(1000 * target) == pytest.approx(1000 * rms_spread(target))


def test_acquisition_is_differentiable(spectra):
    target, means, stds = spectra
    mu = _t(means).requires_grad_(True)
    acq = LowerConfidenceBound({"pdf": target}, metric="mse")
    acq({"pdf": mu}, {"pdf": _t(stds)}).sum().backward()
    assert mu.grad is not None
    # descending the gradient moves the prediction towards the target
    assert torch.all(torch.sign(-mu.grad) == torch.sign(_t(target) - mu.detach()))


def test_expected_mismatch_is_the_lcb_without_exploration(spectra):
    target, means, stds = spectra
    em = ExpectedMismatch({"pdf": target})({"pdf": _t(means)}, {"pdf": _t(stds)})
    lcb0 = LowerConfidenceBound({"pdf": target}, lam=0.0)({"pdf": _t(means)}, {"pdf": _t(stds)})
    lcb = LowerConfidenceBound({"pdf": target}, lam=0.5)({"pdf": _t(means)}, {"pdf": _t(stds)})
    assert torch.equal(em, lcb0)
    assert torch.all(lcb < em)  # exploration lowers the bound where the ensemble is unsure (std > 0)
    with pytest.raises(TypeError):
        AcquisitionFunction()  # type: ignore[abstract]  # abstract: refused on purpose


def test_bad_inputs_name_the_field(spectra):
    target, means, stds = spectra
    with pytest.raises(InputError, match="acquisition.metric"):
        LowerConfidenceBound({"pdf": target}, metric="rmse")  # type: ignore[arg-type]  # a bad value on purpose
    with pytest.raises(InputError, match="acquisition.weights"):
        LowerConfidenceBound({"pdf": target}, weights={"exafs": 1.0})
    with pytest.raises(InputError, match=r"acquisition.scales\[pdf\]"):
        LowerConfidenceBound({"pdf": np.ones(10)})  # flat target: no spread to normalise by
    acq = LowerConfidenceBound({"pdf": target})
    with pytest.raises(InputError, match="no prediction for technique 'pdf'"):
        acq({"xanes": _t(means)}, {"xanes": _t(stds)})
    with pytest.raises(InputError, match="40 points but the prediction has 39"):
        acq({"pdf": _t(means[:, :39])}, {"pdf": _t(stds[:, :39])})


def test_schedule_exploits_the_last_part_of_the_budget():
    sched = LCBSchedule(lam=0.1, exploit_last=20)
    lams = [sched.lam_at(n_used, 100) for n_used in range(100)]
    # the simulation numbered n_used + 1 is exploitative exactly for the last 20 of the budget
    exploit = [n + 1 for n, lam in enumerate(lams) if lam == 0.0]
    assert exploit == list(range(81, 101))
    assert all(lam == 0.1 for lam in lams[:80])
    base = LowerConfidenceBound({"pdf": np.linspace(0, 1, 5)}, lam=0.3)
    assert sched.acquisition(base, 50, 100).lam == 0.1
    assert sched.acquisition(base, 90, 100).lam == 0.0
    assert LCBSchedule(exploit_last=0).lam_at(99, 100) == 0.1
    # the exploitation phase (bigger proposal search) is the same window, also when λ is 0 throughout
    assert [n + 1 for n in range(100) if sched.exploiting(n, 100)] == list(range(81, 101))
    greedy = LCBSchedule(lam=0.0, exploit_last=20)
    assert not greedy.exploiting(50, 100) and greedy.exploiting(80, 100)


def test_schedule_validates_through_pydantic_like_the_campaign_config():
    adapter = TypeAdapter(LCBSchedule)
    assert adapter.validate_python({"lam": 0.2, "exploit_last": 5}) == LCBSchedule(0.2, 5)
    with pytest.raises(ValueError, match="exploit_last"):
        adapter.validate_python({"exploit_last": -1})
