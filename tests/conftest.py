"""Shared fixtures: the small structures shipped in ``aso_workflows/data``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from pymatgen.core import Structure

from aso_workflows.structures import load_structure

pytest_plugins = [
    "slurm_fixtures",  # the real Slurm testbed (tests/slurm_fixtures.py)
    "fault_ledger",  # counts of injected / recovered faults (tests/fault_ledger.py)
    "results_fixtures",  # small real campaigns for the results/report/CLI tests
    "mongodb_fixtures",  # the real-MongoDB tier: ASO_TEST_MONGODB_URI, private FerretDB servers, mongosh
]

DATA = Path(__file__).resolve().parents[1] / "aso_workflows" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Folder with ``LiNiO2.cif``, ``NiO.cif`` and ``diamond.cif``."""
    return DATA


@pytest.fixture(scope="session")
def _structures() -> dict[str, Structure]:
    return {name: load_structure(DATA / f"{name}.cif") for name in ("LiNiO2", "NiO", "diamond")}


@pytest.fixture
def linio2(_structures) -> Structure:
    """LiNiO2, R-3m in its hexagonal cell: 12 atoms, Ni–O 1.970 Å (a fresh copy per test)."""
    return _structures["LiNiO2"].copy()


@pytest.fixture
def nio(_structures) -> Structure:
    """Rock-salt NiO, a = 4.176 Å: 8 atoms, Ni–O 2.088 Å."""
    return _structures["NiO"].copy()


@pytest.fixture
def diamond(_structures) -> Structure:
    """Diamond, a = 3.567 Å: 8 atoms, C–C 1.545 Å."""
    return _structures["diamond"].copy()


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module of tiny problems: as fast, and no stalls on a busy shared CPU."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def sd():
    """The benchmark module (benchmarks/ is a folder of scripts, not a package)."""
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(
        "structure_determination", BENCH / "structure_determination.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)
    sys.path.remove(str(BENCH))
