"""The structure-determination benchmark's suites: which methods, which settings, one run's campaign.

A suite (:class:`SuiteSettings`) is what every run shares; a run is (case, method, seed), one campaign
whose fields :func:`campaign_fields` writes. The cases themselves are in ``benchmarks/cases.py``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cases import BenchmarkCase

__all__ = [
    "ALL_METHODS",
    "POLISH_METHODS",
    "polish_settings",
    "PAPER_METHODS",
    "EXAFS_PAPER_METHODS",
    "ABLATION_METHODS",
    "VARIANTS",
    "PDF_SETTINGS",
    "EXAFS_SETTINGS",
    "SuiteSettings",
    "reduced_settings",
    "full_settings",
    "paper_settings",
    "exafs_settings",
    "base_method",
    "run_dir",
    "campaign_fields",
    "merge_fields",
    "parse_set",
]

ALL_METHODS = ["aso", "aso-refine", "random", "rmc", "gpbo", "diffpy"]
PAPER_METHODS = ALL_METHODS + ["lsq"]
EXAFS_PAPER_METHODS = ["aso", "rmc", "lsq", "lsq-block4", "random"]
#: benchmark labels for an optimiser with other settings: label -> (optimizer, campaign fields)
VARIANTS: dict[str, tuple[str, dict]] = {
    # block coordinate refinement: 4 atoms (12 coordinates, 12 + q runs per step) at a time
    "lsq-block4": ("lsq", {"lsq": {"atoms_per_step": 4}}),
    # ASO ending with the polish (the start and the 3 best refined by pdffit2): 4 fewer structures
    # searched so that the polished ones make the same number of simulated structures (issue 19)
    "aso-polish": ("aso", {"polish": {"top": 3, "max_calls": 60, "include_start": True}, "budget_delta": -4}),
    # the surrogate ablation (issue 20; `aso` itself is prior + GNN residual where a prior exists):
    # the GNN ensemble alone (as before issue 20), and the physics prior alone
    "aso-gnn": ("aso", {"surrogate": {"prior": False}}),
    "aso-prior": ("aso", {"surrogate": {"residual": False}}),
}
#: issue 19's comparison: refinement, the search, and the two combined
POLISH_METHODS = ["diffpy", "aso", "aso-refine", "aso-polish"]
#: the surrogate ablation: ``--methods`` for it
ABLATION_METHODS = ["aso", "aso-gnn", "aso-prior"]
PDF_SETTINGS = {"rmin": 1.0, "rmax": 10.0, "rstep": 0.01, "qmin": 1.0, "qmax": 18.0, "biso": 2.0}
#: light FEFF settings of examples/linio2_jt_exafs (2 of the Ni absorbers, ~3.5 s per FEFF run)
EXAFS_SETTINGS = {"absorber": "Ni", "sites": 2}


@dataclass
class SuiteSettings:
    """What every run of a suite shares (the campaign fields that are not the case or the method).

    Attributes
    ----------
    name
        Suite id (names the output folder).
    technique, technique_settings
        The target technique and its simulator settings.
    budget, initial_size, batch_size
        Simulations in all (start and initial perturbations included), initial perturbations, q.
    seeds
        Campaign seeds; each (case, seed) gives every method the same initial data.
    surrogate, proposal, acquisition
        ASO's sections of the campaign (sized for the budget and the machine, see README).
    method_overrides
        Extra campaign fields per method (e.g. a baseline's own section).
    device
        ``auto`` (CUDA when present), ``cpu`` or ``cuda`` for the surrogate and the proposals.
    """

    name: str
    technique: str = "pdf"
    technique_settings: dict = field(default_factory=lambda: dict(PDF_SETTINGS))
    budget: int = 40
    initial_size: int = 10
    batch_size: int = 5
    seeds: list[int] = field(default_factory=lambda: [0])
    surrogate: dict = field(default_factory=dict)
    proposal: dict = field(default_factory=dict)
    acquisition: dict = field(default_factory=dict)
    method_overrides: dict[str, dict] = field(default_factory=dict)
    device: str = "auto"

    def checkpoints(self) -> list[int]:
        """Budgets reported in the table: 25/50/100 within the budget, and the budget itself."""
        return sorted({b for b in (25, 50, 100) if b <= self.budget} | {self.budget})


def reduced_settings() -> SuiteSettings:
    """PDF, budget 40 (10 perturbations + the start, then 6 batches of 5), one seed: ~30 min on 2 cores."""
    return SuiteSettings(
        name="reduced-pdf",
        budget=40,
        initial_size=10,
        batch_size=5,
        surrogate={"n_models": 4, "epochs": 80, "patience": 15, "lr_patience": 8},
        # the proposals' defaults (lr 1e-3, starts: every evaluated structure + fresh perturbations),
        # sized down: 64 × 60, and 128 × 150 in the exploitation phase (~5× a normal proposal)
        proposal={"n_starts": 64, "steps": 60, "exploit_n_starts": 128, "exploit_steps": 150},
        acquisition={"lam": 0.1, "exploit_last": 10},
        device="cpu",
    )


def full_settings() -> SuiteSettings:
    """All cases, budget 100 (30 initial as the reference), 3 seeds, the reference-sized ensemble."""
    return SuiteSettings(
        name="full-pdf",
        budget=100,
        initial_size=30,
        batch_size=5,
        seeds=[0, 1, 2],
        surrogate={"n_models": 5, "epochs": 300, "patience": 50},
        # the reference's 128 × 100 (lr 1e-3); exploitation phase 1024 × 1000 on a GPU, 256 × 200 on a
        # CPU (proposal.cpu_exploit_scale: 2 × the normal search)
        proposal={"n_starts": 128, "steps": 100},
        acquisition={"lam": 0.1, "exploit_last": 20},
        device="auto",
    )


#: ASO's sizes for a CPU (``--light``): the reduced suite's surrogate and proposal search
LIGHT_SURROGATE = {"n_models": 4, "epochs": 80, "patience": 15, "lr_patience": 8}
LIGHT_PROPOSAL = {"n_starts": 64, "steps": 60, "exploit_n_starts": 128, "exploit_steps": 150}
#: ``--small``: ASO sized for a shared 2-core CPU, a few cases within ~1 h (measured at load ~6 on a
#: 28-atom ht case: the light exploitation search took 130–210 s per iteration, a 32 × 40 search 77 s,
#: training 3 members × 40 epochs on 31 structures 27 s). Fewer starts, not fewer steps: lr 1e-3 × 100
#: steps is the reference's ~0.1 Å trust region; with 30 steps 0 of 16 candidates were distinct from
#: the structures they started from (every batch a fallback).
SMALL_SURROGATE = {"n_models": 3, "epochs": 30, "patience": 8, "lr_patience": 4}
SMALL_PROPOSAL = {"n_starts": 8, "steps": 100, "exploit_n_starts": 16, "exploit_steps": 100}
SMALL_ACQUISITION = {"lam": 0.1, "exploit_last": 10}


def paper_settings(q: int, technique: str = "pdf", light: bool = False, small: bool = False) -> SuiteSettings:
    """The paper's protocol (arXiv 2602.20959): budget 100 with 30 initial structures, ``q`` candidates
    per iteration (1: the paper; 5: ours), seeds 0 1 2, λ = 0.1 then pure exploitation for the last 20
    simulations. ASO reference-sized (ensemble of 5, ≤ 300 epochs, 128 starts × 100 steps; the exploitation
    search as ``proposal:`` sets it per device), or the reduced suite's sizes with ``light``, or smaller
    still with ``small`` (ensemble of 3, ≤ 30 epochs, 8 starts × 100 steps, 16 × 100 in the exploitation phase,
    which is the last 10 simulations)."""
    s = full_settings()
    s.name = f"paper-{technique}-q{q}" + ("-small" if small else "-light" if light else "")
    s.technique = technique
    s.technique_settings = dict(PDF_SETTINGS if technique == "pdf" else EXAFS_SETTINGS)
    s.batch_size = q
    if light:
        s.surrogate, s.proposal = dict(LIGHT_SURROGATE), dict(LIGHT_PROPOSAL)
    if small:
        s.surrogate, s.proposal = dict(SMALL_SURROGATE), dict(SMALL_PROPOSAL)
        s.acquisition = dict(SMALL_ACQUISITION)
    return s


def polish_settings() -> SuiteSettings:
    """Issue 19: DiffPy refinement, ASO, aso-refine and ASO + polish on the reduced cases and strong
    random disorder, budget 40 (10 initial, q 5), ASO sized for a shared 2-core CPU (``--small``)."""
    return SuiteSettings(
        name="polish-pdf",
        budget=40,
        initial_size=10,
        batch_size=5,
        seeds=[0],
        surrogate=dict(SMALL_SURROGATE),
        proposal=dict(SMALL_PROPOSAL),
        acquisition=dict(SMALL_ACQUISITION),
        device="cpu",
    )


def exafs_settings() -> SuiteSettings:
    """LiNiO2 JT by Ni K-edge EXAFS: budget 30, 2 absorbers per structure (one FEFF run ~3.5 s each)."""
    return SuiteSettings(
        name="exafs",
        technique="exafs",
        technique_settings=dict(EXAFS_SETTINGS),
        budget=30,
        initial_size=10,
        batch_size=5,
        surrogate={"n_models": 4, "epochs": 80, "patience": 15, "lr_patience": 8},
        proposal={"n_starts": 64, "steps": 60, "exploit_n_starts": 128, "exploit_steps": 150},
        acquisition={"lam": 0.1, "exploit_last": 10},
        device="cpu",
    )


def base_method(label: str) -> str:
    """The optimiser a benchmark label runs (``lsq-block4`` → ``lsq``; a plain optimiser name → itself)."""
    return VARIANTS.get(label, (label, {}))[0]


# ---- one run ----------------------------------------------------------------------------------------
def run_dir(out: Path, case: str, method: str, seed: int) -> Path:
    return Path(out) / "runs" / f"{case}__{method}__s{seed}"


def campaign_fields(case: BenchmarkCase, method: str, seed: int, s: SuiteSettings, out: Path) -> dict:
    """The campaign (as YAML fields) of one run."""
    from aso_workflows.surrogate.ensemble import resolve_device

    device = str(resolve_device(s.device))
    threads = int(os.environ.get("ASO_BENCH_THREADS", "0"))
    optimizer, variant = VARIANTS.get(method, (method, {}))
    settings = dict(s.technique_settings)
    if s.technique in ("exafs", "xanes") and case.absorber:
        settings["absorber"] = case.absorber  # the case's absorbing element (cases.EXAFS_CASES)
    fields: dict[str, Any] = {
        "name": f"sd-{case.name}-{method}-s{seed}",
        "start": str(case.start),
        "targets": [{"technique": s.technique, "structure": str(case.target), "settings": settings}],
        "budget": s.budget,
        "initial_size": s.initial_size,
        "batch_size": s.batch_size,
        "optimizer": optimizer,
        "seed": seed,
        "sampler": dict(case.sampler),
        "min_distances": dict(case.min_distances),
        "surrogate": {**s.surrogate, "device": device, "progress": False, "num_threads": threads},
        "proposal": {**s.proposal, "device": device, "progress": False},
        "acquisition": dict(s.acquisition),
        "output": str(run_dir(out, case.name, method, seed)),
    }
    merge_fields(fields, variant)
    merge_fields(fields, s.method_overrides.get(method, {}))
    fields["budget"] += int(fields.pop("budget_delta", 0))
    return fields


def merge_fields(base: dict, extra: dict) -> dict:
    """``base`` updated by ``extra`` in place, nested mappings merged (``{"proposal": {"lr": ...}}`` keeps
    the suite's other proposal settings)."""
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = merge_fields(dict(base[k]), v)
        else:
            base[k] = v
    return base


def parse_set(items: list[str]) -> dict[str, dict]:
    """``--set METHOD.FIELD[.SUB]=VALUE`` options as ``method_overrides`` (values read as YAML).

    E.g. ``aso-refine.refine.max_calls=8``, ``aso.proposal.lr=0.01``, ``aso-refine.budget=26``.
    """
    import yaml

    out: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition("=")
        path = key.split(".")
        if not sep or len(path) < 2 or not all(path):
            raise SystemExit(f"--set {item!r}: expected METHOD.FIELD[.SUB]=VALUE")
        node = out.setdefault(path[0], {})
        for part in path[1:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = yaml.safe_load(value)
    return out
