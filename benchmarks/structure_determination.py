"""Structure-determination benchmark: every optimiser on the same start/target cases, budgets and seeds.

    python benchmarks/structure_determination.py --reduced            # ≥ 5 cases, PDF, budget 40, 1 seed
    python benchmarks/structure_determination.py --full               # all cases, budget 100, 3 seeds
    python benchmarks/structure_determination.py --technique exafs    # LiNiO2 JT, Ni K-edge EXAFS (FEFF)
    python benchmarks/structure_determination.py --paper              # the paper's protocol (issue 12)
        [--cases 8] [--q 5] [--seeds 0] [--light]                    # ... sized down for a CPU
    python benchmarks/structure_determination.py --paper --technique exafs   # EXAFS at that protocol
        [--methods aso aso-refine random rmc gpbo diffpy lsq] [--cases linio2-jt ht-003 ...] [--seeds 0 1]
        [--budget N] [--initial N] [--batch N] [--jobs N] [--device auto|cpu|cuda] [--out DIR] [--rerun aso]
        [--set METHOD.FIELD=VALUE ...]   # e.g. aso-refine.refine.max_calls=8 aso.proposal.lr=0.01

Each run (case, method, seed) is one campaign (``CampaignConfig``: ``optimizer: <method>``) with its own
embedded store under ``<out>/runs/<case>__<method>__s<seed>/``, run to the end by
``LocalCampaignRunner`` — the same machinery as ``aso run``, so a baseline is benchmarked exactly as it
runs for a user. For one case and seed every method starts from the same data: the start structure and
``initial_size`` perturbations drawn by the sampler with the campaign seed (checked: identical
fingerprints across methods, ``same_initial_data`` in ``results.json``). A method whose optimiser cannot
be made yet (not importable, not accepted by the campaign config) is reported as skipped.

Resumable: a finished run leaves ``result.json`` and is not run again (``--rerun METHOD`` forces it);
an interrupted run resumes from its store.

Outputs in ``<out>`` (default ``benchmarks/results/structure_determination/<suite>``):

- ``results.json``: settings, cases, every run (best mismatch after n simulations, start mismatch, wall
  time, surrogate seconds), skipped methods, the summary table;
- ``curves.csv``: one row per (case, method, seed, n_simulations) with the best mismatch so far and the
  same divided by the case's start mismatch;
- ``median_curves.png``: median over cases and seeds of best/start vs simulations per method (log y), as
  in the paper's Fig. 2a; normalising by the start structure's mismatch puts cases on one scale (the
  objective is already an MSE over the target's variance, but start mismatches still differ ~100×);
  ``per_case.png``: the curves of every case;
- ``table.md`` / ``table.csv``: per method, the median over cases/seeds of the best mismatch (and of
  best/start) after 25/50/100 simulations (those within the budget, plus the budget itself), the ratio
  ASO/method of those medians (< 1: ASO lower) and on how many (case, seed) pairs ASO is lower; with
  ``--paper`` one table per stratum (near / far), the surrogate's held-out accuracy per iteration and
  the issue's targets checked (``targets.json``).

Accountings (x axes). ``<method>``: simulated structures (campaign evaluations). ``<method>/calc``:
simulator calculations — DiffPy's pdffit2 calls (each a PDF with analytic derivatives), aso-refine's
simulations plus its refinement's pdffit2 calls, lsq's simulations plus its finite-difference Jacobians'
forward runs, ASO's simulations plus the per-atom PDF rows of the node-level surrogate (counted in
G(r)-equivalents of time). ``<method>/fd``: as if the derivatives were finite differences — each pdffit2
calculation with derivatives counts P + 1 forward calls (P refined parameters), what the refinement
costs when the simulator has none (FEFF). lsq already pays that: it is shown as ``lsq/calc`` only.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from cases import REDUCED, BenchmarkCase, resolve_cases  # noqa: E402

ALL_METHODS = ["aso", "aso-refine", "random", "rmc", "gpbo", "diffpy"]
PAPER_METHODS = ALL_METHODS + ["lsq"]
EXAFS_PAPER_METHODS = ["aso", "rmc", "lsq", "lsq-block4", "random"]
#: methods whose proposals spend simulator calculations of their own (pdffit2 refine steps, lsq's
#: Jacobians, the node-level surrogate's per-atom rows): their runs are also shown re-indexed by
#: calculations (``<method>/calc``)
CALC_METHODS = ("diffpy", "aso-refine", "aso", "lsq")
#: methods that use analytic derivatives: also shown as if they were finite differences (``/fd``)
FD_METHODS = ("diffpy", "aso-refine")
#: methods shown only per calculation: one lsq evaluation stands for 1 + its Jacobian's forward runs
CALC_ONLY = ("lsq",)
#: benchmark labels for an optimiser with other settings: label -> (optimizer, campaign fields)
VARIANTS: dict[str, tuple[str, dict]] = {
    # block coordinate refinement: 4 atoms (12 coordinates, 12 + q runs per step) at a time
    "lsq-block4": ("lsq", {"lsq": {"atoms_per_step": 4}}),
}
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


# ---- one run ----------------------------------------------------------------------------------------
def run_dir(out: Path, case: str, method: str, seed: int) -> Path:
    return Path(out) / "runs" / f"{case}__{method}__s{seed}"


def campaign_fields(case: BenchmarkCase, method: str, seed: int, s: SuiteSettings, out: Path) -> dict:
    """The campaign (as YAML fields) of one run."""
    from aso_workflows.surrogate.ensemble import resolve_device

    device = str(resolve_device(s.device))
    threads = int(os.environ.get("ASO_BENCH_THREADS", "0"))
    optimizer, variant = VARIANTS.get(method, (method, {}))
    fields = {
        "name": f"sd-{case.name}-{method}-s{seed}",
        "start": str(case.start),
        "targets": [
            {"technique": s.technique, "structure": str(case.target), "settings": dict(s.technique_settings)}
        ],
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
    _merge(fields, variant)
    _merge(fields, s.method_overrides.get(method, {}))
    return fields


def _merge(base: dict, extra: dict) -> dict:
    """``base`` updated by ``extra`` in place, nested mappings merged (``{"proposal": {"lr": ...}}`` keeps
    the suite's other proposal settings)."""
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = _merge(dict(base[k]), v)
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


def method_status(method: str, case: BenchmarkCase, s: SuiteSettings, out: Path) -> str | None:
    """``None`` if ``method`` can run, else why not (one line)."""
    from pydantic import ValidationError

    from aso_workflows.config import CampaignConfig, validation_message
    from aso_workflows.errors import InputError
    from aso_workflows.optimizers import make_optimizer

    try:
        cfg = CampaignConfig.model_validate(campaign_fields(case, method, 0, s, out))
        make_optimizer(cfg.optimizer, cfg)
    except ValidationError as exc:
        return f"campaign config refuses it: {validation_message(exc)}"
    except (InputError, ImportError, NotImplementedError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def run_one(case: BenchmarkCase, method: str, seed: int, s: SuiteSettings, out: Path) -> dict:
    """Run (or resume) one campaign and return its best-so-far curve; writes ``result.json`` when done.

    A method shown per calculation only (lsq) runs until its simulator calls reach the budget: its
    campaign budget (evaluations) is raised in rounds, each resuming the campaign from its store.
    """
    import torch

    from aso_workflows.campaign.local import LocalCampaignRunner
    from aso_workflows.config import CampaignConfig
    from aso_workflows.report import history_rows

    threads = int(os.environ.get("ASO_BENCH_THREADS", "0"))
    if threads:
        torch.set_num_threads(threads)
    fields = campaign_fields(case, method, seed, s, out)
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    calls_only = VARIANTS.get(method, (method, {}))[0] in CALC_ONLY
    if calls_only:
        fields["budget"] = min(s.budget, s.initial_size + 1 + s.batch_size)
    errors: list = []
    while True:
        cfg = CampaignConfig.model_validate(fields)
        runner = LocalCampaignRunner(progress=False, write_outputs=False)
        state = runner.run(cfg)
        errors += runner.errors
        costs = evaluation_costs(state)
        spent = costs["calc"][-1] if costs["calc"] else 0
        if (
            not calls_only
            or spent >= s.budget
            or cfg.budget >= s.budget
            or state.doc.get("status") != "completed"
        ):
            break
        # what one more batch costs: the last batch's calls (a Jacobian and q trials), at least q
        per_eval = max(1.0, (spent - (s.initial_size + 1)) / max(1, state.n_used() - s.initial_size - 1))
        more = max(s.batch_size, int((s.budget - spent) / per_eval) + 1)
        fields["budget"] = min(s.budget, cfg.budget + more)
    wall = time.perf_counter() - t0
    rows = history_rows(state)
    done = [r for r in rows if r["status"] == "completed"]
    n_budget = len(done) if calls_only else s.budget
    curve = [float(r["best_objective"]) for r in done][:n_budget]
    stopped_early = len(curve) < n_budget
    if curve and stopped_early:
        curve += [curve[-1]] * (n_budget - len(curve))  # target mismatch reached or failures: best stays
    start = next((float(r["objective"]) for r in done if r["kind"] == "start"), float("nan"))
    models = list(state.db.models.find({"campaign": state.name}))
    initial_fp = sorted(r["fingerprint"] for r in done if r["kind"] in ("start", "initial"))
    result = {
        "case": case.name,
        "method": method,
        "seed": seed,
        "budget": s.budget,
        "campaign_budget": cfg.budget,
        "start_objective": start,
        "best": min(curve) if curve else None,
        "curve": curve,
        "n_completed": len(done),
        "n_failed": sum(r["status"] == "failed" for r in rows),
        "stopped_early": stopped_early and not calls_only,
        "status": state.doc.get("status"),
        "stop_reason": state.doc.get("stop_reason"),
        "errors": [f"{e.where} / {e.key}: {e.error}" for e in errors[:3]],
        "wall_s": round(wall, 1),
        "cpu_s": round(_cpu_seconds() - cpu0, 1),
        "train_s": round(sum(m.get("seconds", 0.0) for m in models), 1),
        "initial_fingerprints": initial_fp,
        "threads": torch.get_num_threads(),
        "surrogate_accuracy": surrogate_accuracy(models),
    }
    proposed = [r for r in done if r["kind"] not in ("start", "initial")]
    result["n_proposed"] = len(proposed)
    # proposals the optimiser could not make by its method (random perturbations instead)
    result["n_fallback"] = sum(r["kind"] == "fallback" for r in proposed)
    # cumulative simulator calculations after each completed evaluation, in both accountings
    result["calc"], result["fd"] = costs["calc"][: len(curve)], costs["fd"][: len(curve)]
    if state.doc.get("status") == "completed":
        (run_dir(out, case.name, method, seed) / "result.json").write_text(json.dumps(result, indent=1))
    return result


def evaluation_costs(state) -> dict[str, list[float]]:
    """Cumulative simulator calculations after each completed evaluation (chronological order).

    ``calc``: one per evaluation, except a DiffPy evaluation (its pdffit2 calls, each a PDF with analytic
    derivatives, stand for the simulation), an aso-refine evaluation (1 + its refinement's pdffit2 calls),
    an lsq evaluation (1 + its Jacobian's forward runs) and, for the node-level PDF surrogate, the
    per-atom rows (their pdffit2 time over the G(r) calculation's: "G(r)-equivalents").
    ``fd``: the same with every pdffit2 calculation with derivatives counted as P + 1 forward calls (P
    refined parameters; the first calculation of a refinement, which also evaluates its start, counts
    two, so this slightly overcounts). A failed evaluation's cost is carried to the next completed one.
    """
    proposals = {
        p["_id"]: p.get("predicted") or {}
        for p in state.db.proposals.find(
            {"campaign": state.name}, {"predicted.diffpy": 1, "predicted.refine": 1, "predicted.lsq": 1}
        )
    }
    calc, fd, out_calc, out_fd = 0.0, 0.0, [], []
    for e in state.evaluations(status=None):
        pred = proposals.get(str(e.get("proposal_id")), {})
        rows = _site_row_equivalents(state, e)
        if e.get("kind") == "diffpy" and pred.get("diffpy"):
            n, p = int(pred["diffpy"].get("pdf_calculations", 1)), int(pred["diffpy"].get("parameters", 0))
            c, f = n, n * (p + 1)
        elif pred.get("refine"):
            n, p = int(pred["refine"].get("pdf_calculations", 0)), int(pred["refine"].get("parameters", 0))
            c, f = 1 + rows + n, 1 + rows + n * (p + 1)
        elif pred.get("lsq"):
            c = f = 1 + int(pred["lsq"].get("jacobian_calls", 0) or 0)
        else:
            c = f = 1 + rows
        calc, fd = calc + c, fd + f
        if e["status"] == "completed":
            out_calc.append(round(calc, 3))
            out_fd.append(round(fd, 3))
    return {"calc": out_calc, "fd": out_fd}


def _site_row_equivalents(state, evaluation: dict) -> float:
    """The per-atom PDF rows' cost of one evaluation in G(r) calculations (their pdffit2 time over the
    G(r) calculation's), 0 without rows."""
    cid = (evaluation.get("simulated_spectra") or {}).get("pdf")
    if not cid or not cid.endswith(":sites"):
        return 0.0
    doc = state.db.spectra.find_one({"_id": cid}, {"spectrum.extra": 1}) or {}
    info = ((doc.get("spectrum") or {}).get("extra") or {}).get("site_contributions") or {}
    if not info.get("total_seconds"):
        return 0.0
    return float(info["seconds"]) / float(info["total_seconds"])


def surrogate_accuracy(models: list[dict]) -> list[dict]:
    """Per trained model (iteration, technique): the fit's held-out MAE/MAD (structures held out by the
    members, against the members that did not see them; 1 = no better than the mean spectrum) and its
    calibration (scale, share of held-out errors within ±1 calibrated σ)."""
    out = []
    for m in sorted(models, key=lambda d: (d["iteration"], d["technique"])):
        met = m.get("metrics") or {}
        mae, mad = met.get("heldout_mae"), met.get("target_mad")
        out.append(
            {
                "iteration": m["iteration"],
                "technique": m["technique"],
                "n_train": m.get("n_train"),
                "heldout_mae_over_mad": mae / mad if mae is not None and mad else None,
                "calibration_scale": met.get("calibration_scale"),
                "coverage_1sigma": met.get("coverage_1sigma"),
            }
        )
    return out


def _cpu_seconds() -> float:
    """CPU time of this process, all threads (user + system): what a run costs on a loaded machine."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _run_task(args: tuple) -> dict:
    case, method, seed, s, out = args
    try:
        return run_one(case, method, seed, s, out)
    except Exception as exc:  # one broken run must not stop the suite; it is reported in results.json
        return {
            "case": case.name,
            "method": method,
            "seed": seed,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc()[-2000:],
        }


# ---- the suite ------------------------------------------------------------------------------------
def run_suite(
    cases: list[BenchmarkCase],
    methods: list[str],
    s: SuiteSettings,
    out: Path,
    jobs: int = 1,
    rerun: tuple[str, ...] = (),
    progress: bool = True,
    timeout: float | None = None,
    strata: dict[str, str] | None = None,
) -> dict:
    """Run every (case, method, seed) not finished yet, then write the results, curves, plots and table.

    ``strata`` (case name -> ``near``/``far``) adds one table and one plot per stratum.

    With ``jobs > 1`` or a ``timeout`` (seconds per run) every run is its own process; a run past its
    timeout is terminated and reported (``timeout.json`` in its folder keeps later invocations from
    retrying it unless its method is in ``rerun``; its store keeps what it had done).
    """
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    skipped = {}
    for m in methods:
        why = method_status(m, cases[0], s, out)
        if why is not None:
            skipped[m] = why
    runnable = [m for m in methods if m not in skipped]
    results: list[dict] = []
    todo = []
    for case in cases:
        for seed in s.seeds:
            for m in runnable:
                d = run_dir(out, case.name, m, seed)
                if m in rerun:
                    if d.exists():
                        shutil.rmtree(d)  # a finished campaign would only be reloaded from its store
                    todo.append((case, m, seed, s, out))
                elif (d / "result.json").is_file():
                    results.append(json.loads((d / "result.json").read_text()))
                elif (d / "timeout.json").is_file():
                    results.append(json.loads((d / "timeout.json").read_text()))
                else:
                    todo.append((case, m, seed, s, out))
    # the long runs first, for a better balance over workers
    todo.sort(key=lambda t: (t[1] not in ("aso", "aso-refine"), t[1] != "gpbo"))
    t0 = time.perf_counter()
    bar = tqdm(total=len(todo), desc=f"{s.name}: runs", unit="run", disable=not progress)
    # each run gets its share of the cores: oversubscribed torch threads slow training several-fold
    # (measured: the same 31-structure training took 4.6 s or 112 s on the shared 2-core machine)
    os.environ.setdefault("ASO_BENCH_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, jobs))))
    if (jobs > 1 or timeout) and todo:
        for r in _run_in_processes(todo, jobs, timeout):
            results.append(r)
            bar.set_postfix_str(_describe(r))
            bar.update()
    else:
        for t in todo:
            r = _run_task(t)
            results.append(r)
            bar.set_postfix_str(_describe(r))
            bar.update()
    bar.close()
    summary = write_outputs(cases, methods, skipped, results, s, out, time.perf_counter() - t0, strata)
    return summary


def _task_to_file(task: tuple, path: str) -> None:
    Path(path).write_text(json.dumps(_run_task(task), default=str))


def _run_in_processes(todo: list[tuple], jobs: int, timeout: float | None):
    """Yield the result of every task, ``jobs`` processes at a time, each killed after ``timeout`` s."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # torch and forked threads do not mix
    queue = list(todo)
    active: list[tuple] = []  # (process, task, started, result file)
    while queue or active:
        while queue and len(active) < max(1, jobs):
            task = queue.pop(0)
            case, m, seed, _, out = task
            d = run_dir(out, case.name, m, seed)
            d.mkdir(parents=True, exist_ok=True)
            for stale in ("attempt.json", "timeout.json"):
                (d / stale).unlink(missing_ok=True)
            proc = ctx.Process(target=_task_to_file, args=(task, str(d / "attempt.json")), daemon=True)
            proc.start()
            active.append((proc, task, time.perf_counter(), d / "attempt.json"))
        time.sleep(0.5)
        still = []
        for proc, task, started, path in active:
            case, m, seed, _, out = task
            if proc.is_alive() and timeout and time.perf_counter() - started > timeout:
                proc.terminate()  # our own child, by its handle
                proc.join(10)
                r = {"case": case.name, "method": m, "seed": seed, "error": f"timeout after {timeout:.0f} s"}
                (run_dir(out, case.name, m, seed) / "timeout.json").write_text(json.dumps(r))
                yield r
            elif proc.is_alive():
                still.append((proc, task, started, path))
            else:
                proc.join()
                if path.is_file():
                    yield json.loads(path.read_text())
                else:
                    yield {
                        "case": case.name,
                        "method": m,
                        "seed": seed,
                        "error": f"process exit {proc.exitcode}",
                    }
        active = still


def _describe(r: dict) -> str:
    if "error" in r:
        return f"{r['case']} {r['method']}: ERROR {r['error'][:60]}"
    return f"{r['case']} {r['method']} s{r['seed']}: best/start {r['best'] / r['start_objective']:.3g} ({r['wall_s']} s)"


def _median_at(runs: list[dict], n: int, relative: bool) -> float:
    vals = [r["curve"][n - 1] / (r["start_objective"] if relative else 1.0) for r in runs]
    return float(np.median(vals)) if vals else float("nan")


def summarise(runs: list[dict], methods: list[str], s: SuiteSettings) -> list[dict]:
    """One table row per method: medians at the checkpoints, ratio ASO/method, ASO's wins."""
    by = {m: [r for r in runs if r["method"] == m] for m in methods}
    aso = {(r["case"], r["seed"]): r for r in by.get("aso", [])}
    rows = []
    for m in methods:
        rs = by[m]
        if not rs:
            continue
        row: dict = {"method": m, "runs": len(rs)}
        for n in s.checkpoints():
            row[f"median_best@{n}"] = _median_at(rs, n, False)
            row[f"median_rel@{n}"] = _median_at(rs, n, True)
            if aso and m != "aso":
                pairs = [(aso[k], r) for r in rs if (k := (r["case"], r["seed"])) in aso]
                row[f"aso/{m}@{n}"] = _median_at([a for a, _ in pairs], n, True) / _median_at(
                    [r for _, r in pairs], n, True
                )
                row[f"aso_wins@{n}"] = (
                    f"{sum(a['curve'][n - 1] < r['curve'][n - 1] for a, r in pairs)}/{len(pairs)}"
                )
        row["median_wall_s"] = float(np.median([r["wall_s"] for r in rs]))
        n_prop = sum(r.get("n_proposed", 0) for r in rs)
        row["fallbacks"] = f"{sum(r.get('n_fallback', 0) for r in rs)}/{n_prop}" if n_prop else "—"
        rows.append(row)
    return rows


def accounting_views(ok: list[dict], methods: list[str], budget: int) -> tuple[list[dict], list[str]]:
    """Every run in each accounting it is shown in, and the method labels in table order.

    ``<method>``: per simulated structure (not for :data:`CALC_ONLY` methods); ``<method>/calc`` where a
    method spends calculations beyond its simulations; ``<method>/fd`` for :data:`FD_METHODS`.
    """
    views: list[dict] = []
    for r in ok:
        base = VARIANTS.get(r["method"], (r["method"], {}))[0]
        if base not in CALC_ONLY:
            views.append(r)
        calc = r.get("calc") or r.get("pdf_calculations")
        if (
            base in CALC_METHODS
            and calc
            and (base in CALC_ONLY or list(calc) != list(range(1, len(calc) + 1)))
        ):
            views.append(_per_calculation(r, budget, calc, "calc"))
        if base in FD_METHODS and r.get("fd"):
            views.append(_per_calculation(r, budget, r["fd"], "fd"))
    present = {v["method"] for v in views}
    shown = [m for m in methods if m in present]
    for suffix in ("calc", "fd"):
        shown += [f"{m}/{suffix}" for m in methods if f"{m}/{suffix}" in present]
    return views, shown


def write_outputs(
    cases, methods, skipped, results, s: SuiteSettings, out: Path, wall: float, strata: dict | None = None
) -> dict:
    ok = [r for r in results if "error" not in r and r.get("curve")]
    failed = [r for r in results if "error" in r]
    same_initial = {}
    for case in cases:
        for seed in s.seeds:
            fps = {
                json.dumps(r["initial_fingerprints"])
                for r in ok
                if r["case"] == case.name and r["seed"] == seed
            }
            if fps:
                same_initial[f"{case.name}/s{seed}"] = len(fps) == 1
    views, shown = accounting_views(ok, methods, s.budget)
    groups = {"all": views}
    if strata:
        for name in ("near", "far"):
            groups[name] = [v for v in views if strata.get(v["case"]) == name]
    tables = {g: summarise(v, shown, s) for g, v in groups.items() if v}
    accuracy = accuracy_table(ok, strata)
    targets = check_targets(views, s.budget, strata, s.technique) if strata or s.technique != "pdf" else None
    doc = {
        "suite": dataclasses.asdict(s),
        "cases": [
            {
                "name": c.name,
                "source": c.source,
                **c.info,
                "sampler": c.sampler,
                "stratum": (strata or {}).get(c.name),
            }
            for c in cases
        ],
        "methods": methods,
        "skipped": skipped,
        "failed_runs": failed,
        "same_initial_data": same_initial,
        "wall_s_this_invocation": round(wall, 1),
        "load_average": os.getloadavg(),
        "table": tables.get("all", []),
        "tables": tables,
        "surrogate_accuracy": accuracy,
        "targets": targets,
        "runs": sorted(ok, key=lambda r: (r["case"], r["method"], r["seed"])),
    }
    (out / "results.json").write_text(json.dumps(doc, indent=1, default=str))
    if targets is not None:
        (out / "targets.json").write_text(json.dumps(targets, indent=1))
    with open(out / "curves.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case", "stratum", "method", "seed", "n", "best_objective", "best_over_start"])
        for r in sorted(views, key=lambda r: (r["case"], r["method"], r["seed"])):
            for n, b in enumerate(r["curve"], 1):
                w.writerow(
                    [
                        r["case"],
                        (strata or {}).get(r["case"], ""),
                        r["method"],
                        r["seed"],
                        n,
                        f"{b:.6g}",
                        f"{b / r['start_objective']:.6g}",
                    ]
                )
    _write_table(tables, skipped, s, out, failed, accuracy, targets, strata)
    append_equal_cost_table(out)
    if ok:
        _plot_median(views, shown, s, out / "median_curves.png")
        for g in ("near", "far"):
            if groups.get(g):
                _plot_median(groups[g], shown, s, out / f"median_curves_{g}.png", title=g)
        _plot_cases(views, shown, s, out / "per_case.png")
        if any(r.get("surrogate_accuracy") for r in ok):
            _plot_accuracy(ok, strata, out / "surrogate_accuracy.png")
    return doc


EQUAL_COST_HEADER = "### At equal cost beyond the budget"


def equal_cost_rows(runs: list[dict], methods: list[str], xs: list[int], strata: dict | None) -> list[dict]:
    """Median best/start of every accounting at ``xs`` simulator calculations, past the budget.

    A run's own spend decides how far it is known: a run that ended before ``n`` calculations (DiffPy
    stops at its budget of simulated structures, after fewer calculations than an ASO run with per-atom
    rows) is counted with its last value, an upper bound (``reached`` < ``runs``). Per-simulation
    methods (random, RMC, GP-BO) are known up to the budget only.
    """
    rows = []
    groups = [("all", None)] + ([("near", "near"), ("far", "far")] if strata else [])
    labels: list[tuple[str, str, str]] = []  # (label, method, accounting)
    for m in methods:
        base = VARIANTS.get(m, (m, {}))[0]
        if base not in CALC_ONLY:
            labels.append((m if base not in CALC_METHODS else f"{m} (per simulation)", m, "sim"))
        if base in CALC_METHODS:
            labels.append((f"{m}/calc", m, "calc"))
        if base in FD_METHODS:
            labels.append((f"{m}/fd", m, "fd"))
    for gname, g in groups:
        for label, m, acc in labels:
            rs = [r for r in runs if r["method"] == m and (g is None or (strata or {}).get(r["case"]) == g)]
            if not rs:
                continue
            row: dict = {"label": label, "accounting": acc, "stratum": gname, "runs": len(rs)}
            for n in xs:
                vals, reached = [], 0
                for r in rs:
                    curve = r["curve"]
                    cost = (
                        list(range(1, len(curve) + 1)) if acc == "sim" else (r.get(acc) or [])[: len(curve)]
                    )
                    if not cost:
                        continue
                    within = [curve[i] for i, c in enumerate(cost) if c <= n + 1e-9]
                    vals.append((min(within) if within else r["start_objective"]) / r["start_objective"])
                    reached += cost[-1] >= n
                row[f"rel@{n}"] = float(np.median(vals)) if vals else None
                row[f"reached@{n}"] = f"{reached}/{len(rs)}"
            rows.append(row)
    return rows


def append_equal_cost_table(out: Path) -> None:
    """Add (or replace) the equal-cost section of ``<out>/table.md`` from ``<out>/results.json``: the
    median best/start of every accounting at 1, 2, 4 and 8 × the budget in calculations."""
    out = Path(out)
    doc = json.loads((out / "results.json").read_text())
    budget = int(doc["suite"]["budget"])
    xs = [budget * k for k in (1, 2, 4, 8)]
    strata = {c["name"]: c["stratum"] for c in doc["cases"] if c.get("stratum")} or None
    rows = equal_cost_rows(doc["runs"], doc["methods"], xs, strata)
    (out / "equal_cost.json").write_text(json.dumps({"calculations": xs, "rows": rows}, indent=1))
    lines = [
        EQUAL_COST_HEADER,
        "",
        "Median best/start after n simulator calculations (per simulation for random/RMC/GP-BO; `/calc`: "
        "PDF or FEFF calculations incl. Jacobians, refinement steps and per-atom rows; `/fd`: finite-"
        "difference forward calls). `≤`: some runs had stopped before n (their last value, an upper bound); "
        "`—`: not known there.",
        "",
        "| accounting | cases | runs | " + " | ".join(f"n = {n}" for n in xs) + " |",
        "| --- | --- | ---: | " + " | ".join("---:" for _ in xs) + " |",
    ]
    for row in rows:
        cells = []
        for n in xs:
            v = row[f"rel@{n}"]
            done, total = row[f"reached@{n}"].split("/")
            if v is None or (row["accounting"] == "sim" and done != total):
                cells.append("—")  # per simulation: not known past the budget
            else:
                cells.append(("" if done == total else "≤") + f"{v:.3g}")
        lines.append(f"| {row['label']} | {row['stratum']} | {row['runs']} | " + " | ".join(cells) + " |")
    text = (out / "table.md").read_text()
    text = text.split("\n" + EQUAL_COST_HEADER)[0].rstrip("\n") + "\n\n" + "\n".join(lines) + "\n"
    (out / "table.md").write_text(text)


def _per_calculation(r: dict, budget: int, calc: list, suffix: str = "calc") -> dict:
    """A run re-indexed by calculations instead of simulated structures: best mismatch among the
    structures reached within n calculations (the start's mismatch before any)."""
    curve = r["curve"]
    out = []
    for n in range(1, budget + 1):
        within = [curve[i] for i in range(min(len(calc), len(curve))) if calc[i] <= n + 1e-9]
        out.append(min(within) if within else r["start_objective"])
    return {**r, "method": f"{r['method']}/{suffix}", "curve": out, "best": out[-1]}


def accuracy_table(runs: list[dict], strata: dict | None) -> list[dict]:
    """The surrogate's held-out MAE/MAD and ±1σ coverage per method (and stratum): median over runs at
    the first training, the middle one and the last."""
    rows = []
    groups = [("all", None)] + ([("near", "near"), ("far", "far")] if strata else [])
    for m in sorted({r["method"] for r in runs if r.get("surrogate_accuracy")}):
        for gname, g in groups:
            rs = [
                r
                for r in runs
                if r["method"] == m
                and r.get("surrogate_accuracy")
                and (g is None or (strata or {}).get(r["case"]) == g)
            ]
            if not rs:
                continue
            row = {"method": m, "stratum": gname, "runs": len(rs)}
            for where, pick in (("first", 0), ("middle", None), ("last", -1)):
                vals, cov, ntr = [], [], []
                for r in rs:
                    acc = [a for a in r["surrogate_accuracy"] if a.get("heldout_mae_over_mad") is not None]
                    if not acc:
                        continue
                    a = acc[len(acc) // 2] if pick is None else acc[pick]
                    vals.append(a["heldout_mae_over_mad"])
                    ntr.append(a.get("n_train") or 0)
                    if a.get("coverage_1sigma") is not None:
                        cov.append(a["coverage_1sigma"])
                row[f"n_train_{where}"] = float(np.median(ntr)) if ntr else None
                row[f"mae_over_mad_{where}"] = float(np.median(vals)) if vals else None
                row[f"coverage_{where}"] = float(np.median(cov)) if cov else None
            rows.append(row)
    return rows


def _rel(
    views: list[dict], method: str, n: int, stratum: str | None, strata: dict | None
) -> tuple[float, int]:
    rs = [
        v
        for v in views
        if v["method"] == method and (stratum is None or (strata or {}).get(v["case"]) == stratum)
    ]
    return _median_at(rs, n, True), len(rs)


def check_targets(views: list[dict], budget: int, strata: dict | None, technique: str = "pdf") -> dict:
    """The issue's targets at ``budget``, on the median over cases × seeds of best/start.

    - near and far: ASO at least 5× below random, RMC and GP-BO (ratio method/ASO ≥ 5);
    - far: ASO or aso-refine below DiffPy in every accounting (per simulation: aso vs diffpy; per
      calculation: aso/calc, aso-refine/calc vs diffpy/calc; finite differences: aso/calc,
      aso-refine/fd vs diffpy/fd);
    - near: aso-refine within 2× of DiffPy per PDF calculation (aso-refine/calc ≤ 2 × diffpy/calc);
    - XAS (no strata): ASO at least 10× below RMC and below lsq at equal FEFF runs.
    """
    out: dict = {"budget": budget, "statistic": "median over cases x seeds of best/start", "checks": []}

    def add(stratum, what, ours, theirs, goal, ok_fn):
        (a, na), (b, nb) = ours, theirs
        if not (na and nb) or not (np.isfinite(a) and np.isfinite(b)):
            return
        out["checks"].append(
            {
                "stratum": stratum,
                "check": what,
                "ours": a,
                "theirs": b,
                "ratio_theirs_over_ours": b / a if a > 0 else float("inf"),
                "goal": goal,
                "met": bool(ok_fn(a, b)),
                "runs": [na, nb],
            }
        )

    def aso_calc(st):  # ASO per calculation: its simulations plus the per-atom rows, if it has any
        v = _rel(views, "aso/calc", budget, st, strata)
        return v if v[1] else _rel(views, "aso", budget, st, strata)

    if technique != "pdf":
        aso = _rel(views, "aso", budget, None, strata)
        for m, factor in (("rmc", 10), ("random", 5), ("gpbo", 5)):
            add(
                "all",
                f"aso vs {m} (>= {factor}x lower)",
                aso,
                _rel(views, m, budget, None, strata),
                f">= {factor}",
                lambda a, b, factor=factor: b >= factor * a,
            )
        for m in ("lsq/calc", "lsq-block4/calc"):
            add(
                "all",
                f"aso vs {m} at equal FEFF runs",
                aso,
                _rel(views, m, budget, None, strata),
                "< 1x",
                lambda a, b: a < b,
            )
        return out

    for st in ("near", "far"):
        aso = _rel(views, "aso", budget, st, strata)
        for m in ("random", "rmc", "gpbo"):
            add(
                st,
                f"aso vs {m} (>= 5x lower)",
                aso,
                _rel(views, m, budget, st, strata),
                ">= 5",
                lambda a, b: b >= 5 * a,
            )
    far = "far"
    # (accounting, ASO's own view, aso-refine's view, DiffPy's view); the better of ASO and aso-refine
    for what, ours, refine, diffpy in (
        ("per simulation", _rel(views, "aso", budget, far, strata), "aso-refine", "diffpy"),
        ("per PDF calculation", aso_calc(far), "aso-refine/calc", "diffpy/calc"),
        ("per finite-difference forward call", aso_calc(far), "aso-refine/fd", "diffpy/fd"),
    ):
        best = min((ours, _rel(views, refine, budget, far, strata)), key=lambda t: t[0] if t[1] else np.inf)
        add(
            far,
            f"aso|aso-refine vs diffpy, {what}",
            best,
            _rel(views, diffpy, budget, far, strata),
            "< 1x",
            lambda a, b: a < b,
        )
    add(
        "near",
        "aso-refine within 2x of diffpy, per PDF calculation",
        _rel(views, "aso-refine/calc", budget, "near", strata),
        _rel(views, "diffpy/calc", budget, "near", strata),
        "ours <= 2 x theirs",
        lambda a, b: a <= 2 * b,
    )
    for st in ("near", "far"):
        for m in ("lsq/calc",):
            add(
                st,
                f"aso/calc vs {m} (equal simulator runs)",
                aso_calc(st),
                _rel(views, m, budget, st, strata),
                "< 1x",
                lambda a, b: a < b,
            )
    return out


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if v is None:
        return "—"
    return str(v)


def _table_lines(table: list[dict], s: SuiteSettings) -> list[str]:
    lines = [
        "| method | runs | "
        + " | ".join(f"best @{n}" for n in s.checkpoints())
        + " | "
        + " | ".join(f"ASO/method @{n}" for n in s.checkpoints())
        + " | ASO wins @"
        + str(s.budget)
        + " | fallbacks | median wall (s) |",
        "| --- | ---: | " + " | ".join("---:" for _ in s.checkpoints() * 2) + " | ---: | ---: | ---: |",
    ]
    for row in table:
        best = " | ".join(
            f"{row[f'median_best@{n}']:.3g} ({row[f'median_rel@{n}']:.3g})" for n in s.checkpoints()
        )
        ratio = " | ".join(_fmt(row.get(f"aso/{row['method']}@{n}", "—")) for n in s.checkpoints())
        wins = row.get(f"aso_wins@{s.budget}", "—")
        lines.append(
            f"| {row['method']} | {row['runs']} | {best} | {ratio} | {wins} | {row.get('fallbacks', '—')} "
            f"| {row['median_wall_s']:.0f} |"
        )
    return lines


def _write_table(
    tables: dict[str, list[dict]],
    skipped: dict,
    s: SuiteSettings,
    out: Path,
    failed: list[dict] = (),
    accuracy: list[dict] = (),
    targets: dict | None = None,
    strata: dict | None = None,
) -> None:
    keys: list[str] = ["group"]
    for table in tables.values():
        for row in table:
            keys += [k for k in row if k not in keys]
    with open(out / "table.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for g, table in tables.items():
            w.writerows({"group": g, **row} for row in table)
    lines = [
        f"Suite `{s.name}`: {s.technique.upper()}, budget {s.budget} (initial {s.initial_size} + start), "
        f"q = {s.batch_size}, seeds {s.seeds}. Median over cases × seeds of the best mismatch after n "
        "simulations (best/start in brackets); ASO/method = ratio of the medians of best/start (< 1: ASO "
        "lower); wins = (case, seed) pairs where ASO is lower.",
    ]
    titles = {"all": "All cases", "near": "Near cases", "far": "Far cases"}
    from cases import NEAR_FAR_THRESHOLD_A

    for g, table in tables.items():
        if len(tables) > 1:
            names = sorted({r for r, st in (strata or {}).items() if g == "all" or st == g})
            what = {
                "near": f"target < {NEAR_FAR_THRESHOLD_A} Å RMS from the start",
                "far": f"target ≥ {NEAR_FAR_THRESHOLD_A} Å RMS",
            }.get(g, "")
            lines += ["", f"### {titles[g]}" + (f" ({what})" if what else "") + f": {', '.join(names)}", ""]
        else:
            lines.append("")
        lines += _table_lines(table, s)
    for m, why in skipped.items():
        lines.append(f"| {m} | skipped: {why} |")
    for m in sorted({r["method"] for r in failed}):
        bad = [r for r in failed if r["method"] == m]
        what = "; ".join(sorted({r["error"].splitlines()[0][:80] for r in bad}))
        names = ", ".join(f"{r['case']}/s{r['seed']}" for r in bad)
        lines.append(f"| {m} | {len(bad)} run(s) not finished ({what}): {names} |")
    labels = {row["method"] for t in tables.values() for row in t}
    notes = {
        "diffpy/calc": "`diffpy/calc`: DiffPy counted in PDF calculations (pdffit2 refine steps, each a PDF with "
        "analytic derivatives) instead of simulated structures.",
        "diffpy/fd": "`diffpy/fd`: DiffPy counted in forward calls of a finite-difference Jacobian: each "
        "pdffit2 calculation with derivatives = P + 1 PDF calculations (P refined parameters; what the "
        "refinement costs when the simulator has no derivatives).",
        "aso/calc": "`aso/calc`: ASO's simulations plus the node-level surrogate's per-atom PDF rows, in "
        "G(r)-equivalents of pdffit2 time.",
        "aso-refine/calc": "`aso-refine/calc`: each simulation plus the pdffit2 refine steps that polished its "
        "proposal (and the per-atom rows).",
        "aso-refine/fd": "`aso-refine/fd`: as `/calc`, each pdffit2 calculation with derivatives counted as P + 1 "
        "forward calls.",
        "lsq/calc": "`lsq/calc`: least-squares refinement with finite-difference Jacobians, counted in simulator "
        "runs (each trial step simulated, plus every forward run of the Jacobians).",
        "lsq-block4/calc": "`lsq-block4/calc`: lsq refining 4 atoms per Jacobian (block coordinate descent).",
    }
    extra = [notes[k] for k in notes if k in labels]
    if extra:
        lines += [""] + [f"{n}" for n in extra]
    lines += [
        "",
        "fallbacks: proposals stored as kind `fallback` (the proposer found no valid, distinct candidate "
        "and a random perturbation of a best structure was simulated instead) / all proposals.",
    ]
    if accuracy:
        lines += [
            "",
            "### Surrogate accuracy per iteration",
            "",
            "Held-out MAE/MAD of the ensemble's fit (structures held out by members, 1 = no better than the "
            "mean spectrum) and the share of held-out errors within ±1 calibrated σ (0.68 when calibrated): "
            "median over runs at the first, middle and last training (n = training structures).",
            "",
            "| method | cases | runs | n first | MAE/MAD first | cov. first | n middle | MAE/MAD middle | "
            "cov. middle | n last | MAE/MAD last | cov. last |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in accuracy:
            cells = []
            for where in ("first", "middle", "last"):
                cells += [
                    _fmt(row[f"n_train_{where}"]),
                    _fmt(row[f"mae_over_mad_{where}"]),
                    _fmt(row[f"coverage_{where}"]),
                ]
            lines.append(
                f"| {row['method']} | {row['stratum']} | {row['runs']} | " + " | ".join(cells) + " |"
            )
    if targets and targets["checks"]:
        lines += [
            "",
            f"### Targets of issue 12 at {targets['budget']} (median of best/start over cases × seeds)",
            "",
            "| cases | check | ours | theirs | theirs / ours | goal | met | runs |",
            "| --- | --- | ---: | ---: | ---: | --- | --- | --- |",
        ]
        for c in targets["checks"]:
            lines.append(
                f"| {c['stratum']} | {c['check']} | {c['ours']:.3g} | {c['theirs']:.3g} | "
                f"{c['ratio_theirs_over_ours']:.3g} | {c['goal']} | {'yes' if c['met'] else '**no**'} | "
                f"{c['runs'][0]}/{c['runs'][1]} |"
            )
    (out / "table.md").write_text("\n".join(lines) + "\n")


def _plot_median(runs, methods, s: SuiteSettings, path: Path, title: str | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.2, 4.8))
    x = np.arange(1, s.budget + 1)
    bases = []
    for m in methods:
        b = m.split("/")[0]
        if b not in bases:
            bases.append(b)
    styles = {"": "-", "calc": "--", "fd": ":"}
    for m in methods:
        rs = [r for r in runs if r["method"] == m]
        if not rs:
            continue
        base, _, suffix = m.partition("/")
        k = bases.index(base)
        rel = np.array([np.asarray(r["curve"][: s.budget]) / r["start_objective"] for r in rs])
        ax.semilogy(
            x, np.median(rel, axis=0), color=f"C{k}", ls=styles[suffix], lw=2, label=f"{m} (n={len(rs)})"
        )
        if len(rs) > 1 and not suffix:
            lo, hi = np.percentile(rel, [25, 75], axis=0)
            ax.fill_between(x, lo, hi, color=f"C{k}", alpha=0.10)
    ax.axvline(s.initial_size + 1, color="0.5", ls=":", lw=1, label="end of initial data")
    ax.set_xlabel("simulations (/calc: PDF or FEFF calculations; /fd: finite-difference forward calls)")
    ax.set_ylabel("best mismatch / start mismatch (median)")
    ax.set_title(
        f"{s.name}{': ' + title + ' cases' if title else ''}: median over cases × seeds (band: quartiles)",
        fontsize=9,
    )
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_accuracy(runs, strata, path: Path) -> None:
    """Held-out MAE/MAD vs training structures, median over runs, per method (and stratum)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.8))
    methods = sorted({r["method"] for r in runs if r.get("surrogate_accuracy")})
    groups = [("near", "-"), ("far", "--")] if strata else [(None, "-")]
    for k, m in enumerate(methods):
        for g, ls in groups:
            rs = [
                r
                for r in runs
                if r["method"] == m
                and r.get("surrogate_accuracy")
                and (g is None or strata.get(r["case"]) == g)
            ]
            if not rs:
                continue
            for ax, key in zip(axes, ("heldout_mae_over_mad", "coverage_1sigma"), strict=True):
                by_n: dict[int, list[float]] = {}
                for r in rs:
                    for a in r["surrogate_accuracy"]:
                        if a.get(key) is not None and a.get("n_train"):
                            by_n.setdefault(int(a["n_train"]), []).append(float(a[key]))
                if not by_n:
                    continue
                ns = sorted(by_n)
                ax.plot(
                    ns,
                    [np.median(by_n[n]) for n in ns],
                    color=f"C{k}",
                    ls=ls,
                    label=f"{m}" + (f" ({g})" if g else ""),
                )
    axes[0].set_ylabel("held-out MAE / MAD (median)")
    axes[1].set_ylabel("held-out coverage ±1σ (median)")
    axes[1].axhline(0.68, color="0.5", ls=":", lw=1)
    for ax in axes:
        ax.set_xlabel("training structures")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_cases(runs, methods, s: SuiteSettings, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({r["case"] for r in runs})
    ncol = min(4, len(names))
    nrow = -(-len(names) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 2.9 * nrow), squeeze=False)
    x = np.arange(1, s.budget + 1)
    bases = []
    for m in methods:
        if m.split("/")[0] not in bases:
            bases.append(m.split("/")[0])
    styles = {"": "-", "calc": "--", "fd": ":"}
    for ax, name in zip(axes.flat, names, strict=False):
        for m in methods:
            base, _, suffix = m.partition("/")
            for r in (r for r in runs if r["case"] == name and r["method"] == m):
                ax.semilogy(
                    x,
                    r["curve"][: s.budget],
                    color=f"C{bases.index(base)}",
                    ls=styles[suffix],
                    lw=1.2,
                    label=m if r["seed"] == s.seeds[0] else None,
                )
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.supxlabel("simulations (/calc, /fd: calculations)")
    fig.supylabel("best mismatch so far")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--reduced", action="store_true", help="≥ 5 cases, PDF, budget 40, 1 seed (default)")
    mode.add_argument(
        "--full", action="store_true", help="all cases, budget 100, seeds 0 1 2, GPU if present"
    )
    mode.add_argument(
        "--paper",
        action="store_true",
        help="the paper's protocol: ht cases stratified near/far (--cases N, default 32), budget 100 with 30 "
        "initial, q = 1 and 5 (--q), seeds 0 1 2, methods incl. lsq; --technique exafs: LiNiO2 JT EXAFS",
    )
    ap.add_argument("--technique", choices=["pdf", "exafs"], default="pdf")
    ap.add_argument("--methods", nargs="+", default=None)
    ap.add_argument(
        "--cases",
        nargs="+",
        default=None,
        help="case names, 'ht', 'generated' or 'reduced'; with --paper also one number N: N ht cases, half "
        "near and half far, spread over each stratum's distances (a smaller N is a subset of a larger one)",
    )
    ap.add_argument("--seeds", type=int, nargs="+", default=None)
    ap.add_argument("--budget", type=int, default=None)
    ap.add_argument("--initial", type=int, default=None, help="initial perturbations (same for every method)")
    ap.add_argument("--batch", type=int, default=None, help="q candidates per iteration")
    ap.add_argument(
        "--q", type=int, nargs="+", default=None, help="--paper: the q values to run (default 1 5)"
    )
    ap.add_argument(
        "--light",
        action="store_true",
        help="--paper: ASO with the reduced suite's sizes (ensemble of 4, ≤ 80 epochs, 64 × 60 proposal "
        "search, 128 × 150 in the exploitation phase) instead of the reference's, for a CPU",
    )
    ap.add_argument(
        "--small",
        action="store_true",
        help="--paper: ASO smaller than --light for a shared 2-core CPU (ensemble of 3, ≤ 30 epochs, 8 × 100 "
        "proposal search, 16 × 100 in the exploitation phase of the last 10 simulations)",
    )
    ap.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="--paper: near/far RMS displacement threshold (Å, default 1.0)",
    )
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel processes")
    ap.add_argument("--device", default=None, help="auto (CUDA when present), cpu, cuda")
    ap.add_argument("--rerun", nargs="*", default=[], help="methods whose runs are deleted and run again")
    ap.add_argument(
        "--timeout", type=float, default=None, help="seconds per run (default: 20 min, --paper 4 h; 0: none)"
    )
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="METHOD.FIELD=VALUE",
        help="campaign fields of one method, e.g. aso-refine.refine.max_calls=8 aso.proposal.lr=0.01 "
        "aso-refine.budget=26 (nested sections are merged with the suite's)",
    )
    args = ap.parse_args(argv)
    if args.paper:
        return _main_paper(args)

    if args.technique == "exafs":
        s = exafs_settings()
        default_cases = ["linio2-jt"]
    elif args.full:
        s = full_settings()
        default_cases = ["generated", "ht"]
    else:
        s = reduced_settings()
        default_cases = list(REDUCED)
    _apply_args(s, args)
    out = args.out or ROOT / "benchmarks" / "results" / "structure_determination" / s.name
    cases = resolve_cases(args.cases or default_cases, out / "cases")
    t0 = time.perf_counter()
    timeout = 1200.0 if args.timeout is None else (args.timeout or None)
    doc = run_suite(
        cases, args.methods or ALL_METHODS, s, out, jobs=args.jobs, rerun=tuple(args.rerun), timeout=timeout
    )
    print((out / "table.md").read_text())
    print(f"wall {time.perf_counter() - t0:.0f} s for this invocation; outputs in {out}")
    return doc


def _apply_args(s: SuiteSettings, args) -> None:
    for attr, val in (
        ("seeds", args.seeds),
        ("budget", args.budget),
        ("initial_size", args.initial),
        ("batch_size", args.batch),
        ("device", args.device),
    ):
        if val is not None:
            setattr(s, attr, val)
    for method, extra in parse_set(args.set).items():
        s.method_overrides[method] = _merge(dict(s.method_overrides.get(method, {})), extra)


def _main_paper(args) -> dict:
    """``--paper``: one suite per q (``<out>/q<q>``), then ``<out>/paper_table.md`` with all of them."""
    from cases import NEAR_FAR_THRESHOLD_A, stratified_ht_cases, stratum

    threshold = NEAR_FAR_THRESHOLD_A if args.threshold is None else args.threshold
    exafs = args.technique == "exafs"
    base = f"paper-{args.technique}" + ("-small" if args.small else "-light" if args.light else "")
    out = args.out or ROOT / "benchmarks" / "results" / "structure_determination" / base
    if exafs:
        cases = resolve_cases(args.cases or ["linio2-jt"], out / "cases")
        strata = None
    else:
        spec = args.cases or ["32"]
        if len(spec) == 1 and spec[0].isdigit():
            cases = stratified_ht_cases(int(spec[0]), threshold)
        else:
            cases = resolve_cases(spec, out / "cases")
        strata = {c.name: stratum(c, threshold) for c in cases}
    methods = args.methods or (EXAFS_PAPER_METHODS if exafs else PAPER_METHODS)
    timeout = 4 * 3600.0 if args.timeout is None else (args.timeout or None)
    qs = args.q or ([5] if exafs else [1, 5])
    docs = {}
    t0 = time.perf_counter()
    for q in qs:
        s = paper_settings(q, args.technique, args.light, args.small)
        _apply_args(s, args)
        s.batch_size = q
        sub = out / f"q{q}"
        print(
            f"{s.name}: {len(cases)} cases ({', '.join(c.name for c in cases)}), methods {methods}, "
            f"seeds {s.seeds}, budget {s.budget}, initial {s.initial_size}, q {q}; outputs in {sub}",
            flush=True,
        )
        docs[q] = run_suite(
            cases, methods, s, sub, jobs=args.jobs, rerun=tuple(args.rerun), timeout=timeout, strata=strata
        )
    write_paper_summary(out)
    print((out / "paper_table.md").read_text())
    print(f"wall {time.perf_counter() - t0:.0f} s for this invocation; outputs in {out}")
    return docs


def write_paper_summary(out: Path) -> None:
    """``paper_table.md``: every q's table (those run so far, also by other invocations), one after the
    other, and ``paper_targets.json``: every q's target checks."""
    parts, targets = [], {}
    for sub in sorted(Path(out).glob("q*"), key=lambda p: int(p.name[1:]) if p.name[1:].isdigit() else 0):
        if (sub / "table.md").is_file():
            parts += [f"## q = {sub.name[1:]}", "", (sub / "table.md").read_text(), ""]
        if (sub / "targets.json").is_file():
            targets[sub.name] = json.loads((sub / "targets.json").read_text())
    (Path(out) / "paper_table.md").write_text("\n".join(parts))
    (Path(out) / "paper_targets.json").write_text(json.dumps(targets, indent=1))


if __name__ == "__main__":
    main()
