"""Structure-determination benchmark: every optimiser on the same start/target cases, budgets and seeds.

    python benchmarks/structure_determination.py --reduced            # ≥ 5 cases, PDF, budget 40, 1 seed
    python benchmarks/structure_determination.py --full               # all cases, budget 100, 3 seeds
    python benchmarks/structure_determination.py --technique exafs    # LiNiO2 JT, Ni K-edge EXAFS (FEFF)
        [--methods aso aso-refine random rmc gpbo diffpy] [--cases linio2-jt ht-003 ...] [--seeds 0 1]
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
  ASO/method of those medians (< 1: ASO lower) and on how many (case, seed) pairs ASO is lower.
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
#: methods whose proposals spend PDF calculations of their own (pdffit2 refine steps): their runs are
#: also shown re-indexed by PDF calculations (``<method>/calc``)
CALC_METHODS = ("diffpy", "aso-refine")
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
    fields = {
        "name": f"sd-{case.name}-{method}-s{seed}",
        "start": str(case.start),
        "targets": [
            {"technique": s.technique, "structure": str(case.target), "settings": dict(s.technique_settings)}
        ],
        "budget": s.budget,
        "initial_size": s.initial_size,
        "batch_size": s.batch_size,
        "optimizer": method,
        "seed": seed,
        "sampler": dict(case.sampler),
        "min_distances": dict(case.min_distances),
        "surrogate": {**s.surrogate, "device": device, "progress": False, "num_threads": threads},
        "proposal": {**s.proposal, "device": device, "progress": False},
        "acquisition": dict(s.acquisition),
        "output": str(run_dir(out, case.name, method, seed)),
    }
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
        make_optimizer(method, cfg)
    except ValidationError as exc:
        return f"campaign config refuses it: {validation_message(exc)}"
    except (InputError, ImportError, NotImplementedError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def run_one(case: BenchmarkCase, method: str, seed: int, s: SuiteSettings, out: Path) -> dict:
    """Run (or resume) one campaign and return its best-so-far curve; writes ``result.json`` when done."""
    import torch

    from aso_workflows.campaign.local import LocalCampaignRunner
    from aso_workflows.config import CampaignConfig
    from aso_workflows.report import history_rows

    threads = int(os.environ.get("ASO_BENCH_THREADS", "0"))
    if threads:
        torch.set_num_threads(threads)
    cfg = CampaignConfig.model_validate(campaign_fields(case, method, seed, s, out))
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    runner = LocalCampaignRunner(progress=False, write_outputs=False)
    state = runner.run(cfg)
    wall = time.perf_counter() - t0
    rows = history_rows(state)
    done = [r for r in rows if r["status"] == "completed"]
    curve = [float(r["best_objective"]) for r in done][: s.budget]
    stopped_early = len(curve) < s.budget
    if curve and stopped_early:
        curve += [curve[-1]] * (s.budget - len(curve))  # target mismatch reached or failures: best stays
    start = next((float(r["objective"]) for r in done if r["kind"] == "start"), float("nan"))
    models = list(state.db.models.find({"campaign": state.name}))
    initial_fp = sorted(r["fingerprint"] for r in done if r["kind"] in ("start", "initial"))
    result = {
        "case": case.name,
        "method": method,
        "seed": seed,
        "budget": s.budget,
        "start_objective": start,
        "best": min(curve) if curve else None,
        "curve": curve,
        "n_completed": len(done),
        "n_failed": sum(r["status"] == "failed" for r in rows),
        "stopped_early": stopped_early,
        "status": state.doc.get("status"),
        "stop_reason": state.doc.get("stop_reason"),
        "errors": [f"{e.where} / {e.key}: {e.error}" for e in runner.errors[:3]],
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
    if method in CALC_METHODS:
        # DiffPy's proposals take pdffit2 refine steps, aso-refine's a bounded refinement each (a PDF
        # calculation with derivatives per step): keep the cumulative count, the honest x axis
        from aso_workflows.optimizers.diffpy_refine import pdf_calculations

        props = {p["_id"]: p for p in state.proposals()}
        result["pdf_calculations"] = pdf_calculations(state.evaluations(), props)
    if state.doc.get("status") == "completed":
        (run_dir(out, case.name, method, seed) / "result.json").write_text(json.dumps(result, indent=1))
    return result


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
) -> dict:
    """Run every (case, method, seed) not finished yet, then write the results, curves, plots and table.

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
    todo.sort(key=lambda t: t[1] != "aso")  # the long runs first, for a better balance over workers
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
    summary = write_outputs(cases, methods, skipped, results, s, out, time.perf_counter() - t0)
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
                row[f"aso/{m}@{n}"] = _median_at([a for a, _ in pairs], n, False) / _median_at(
                    [r for _, r in pairs], n, False
                )
                row[f"aso_wins@{n}"] = (
                    f"{sum(a['curve'][n - 1] < r['curve'][n - 1] for a, r in pairs)}/{len(pairs)}"
                )
        row["median_wall_s"] = float(np.median([r["wall_s"] for r in rs]))
        n_prop = sum(r.get("n_proposed", 0) for r in rs)
        row["fallbacks"] = f"{sum(r.get('n_fallback', 0) for r in rs)}/{n_prop}" if n_prop else "—"
        rows.append(row)
    return rows


def write_outputs(cases, methods, skipped, results, s: SuiteSettings, out: Path, wall: float) -> dict:
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
    by_calc = [_per_calculation(r, s.budget) for r in ok if r.get("pdf_calculations")]
    shown = methods + [f"{m}/calc" for m in methods if any(r["method"] == f"{m}/calc" for r in by_calc)]
    table = summarise(ok + by_calc, shown, s)
    doc = {
        "suite": dataclasses.asdict(s),
        "cases": [{"name": c.name, "source": c.source, **c.info, "sampler": c.sampler} for c in cases],
        "methods": methods,
        "skipped": skipped,
        "failed_runs": failed,
        "same_initial_data": same_initial,
        "wall_s_this_invocation": round(wall, 1),
        "load_average": os.getloadavg(),
        "table": table,
        "runs": sorted(ok, key=lambda r: (r["case"], r["method"], r["seed"])),
    }
    (out / "results.json").write_text(json.dumps(doc, indent=1, default=str))
    with open(out / "curves.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case", "method", "seed", "n_simulations", "best_objective", "best_over_start"])
        for r in doc["runs"]:
            for n, b in enumerate(r["curve"], 1):
                w.writerow(
                    [r["case"], r["method"], r["seed"], n, f"{b:.6g}", f"{b / r['start_objective']:.6g}"]
                )
    _write_table(table, skipped, s, out, failed)
    if ok:
        _plot_median(ok + by_calc, shown, s, out / "median_curves.png")
        _plot_cases(ok + by_calc, shown, s, out / "per_case.png")
    return doc


def _per_calculation(r: dict, budget: int) -> dict:
    """A run re-indexed by PDF calculations instead of simulated structures (DiffPy: its refine steps;
    aso-refine: each simulation plus its refinement's steps): best mismatch among the structures reached
    within n calculations (the start's mismatch before any)."""
    calc, curve = r["pdf_calculations"], r["curve"]
    out = []
    for n in range(1, budget + 1):
        within = [curve[i] for i in range(min(len(calc), len(curve))) if calc[i] <= n]
        out.append(min(within) if within else r["start_objective"])
    return {**r, "method": f"{r['method']}/calc", "curve": out, "best": out[-1]}


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _write_table(
    table: list[dict], skipped: dict, s: SuiteSettings, out: Path, failed: list[dict] = ()
) -> None:
    keys: list[str] = []
    for row in table:
        keys += [k for k in row if k not in keys]
    with open(out / "table.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys or ["method"])
        w.writeheader()
        w.writerows(table)
    lines = [
        f"Suite `{s.name}`: {s.technique.upper()}, budget {s.budget} (initial {s.initial_size} + start), "
        f"q = {s.batch_size}, seeds {s.seeds}. Median over cases × seeds of the best mismatch after n "
        "simulations (best/start in brackets); ASO/method = ratio of those medians (< 1: ASO lower); "
        "wins = (case, seed) pairs where ASO is lower.",
        "",
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
    for m, why in skipped.items():
        lines.append(f"| {m} | skipped: {why} |")
    for m in sorted({r["method"] for r in failed}):
        bad = [r for r in failed if r["method"] == m]
        what = "; ".join(sorted({r["error"].splitlines()[0][:80] for r in bad}))
        names = ", ".join(f"{r['case']}/s{r['seed']}" for r in bad)
        lines.append(f"| {m} | {len(bad)} run(s) not finished ({what}): {names} |")
    if any(row["method"] == "diffpy/calc" for row in table):
        lines += [
            "",
            "`diffpy/calc`: the DiffPy runs counted in PDF calculations (pdffit2 refine steps, each a PDF "
            "with analytic derivatives) instead of simulated structures.",
        ]
    if any(row["method"] == "aso-refine/calc" for row in table):
        lines += [
            "",
            "`aso-refine/calc`: the aso-refine runs counted in PDF calculations (each simulation plus the "
            "pdffit2 refine steps that polished its proposal) instead of simulated structures.",
        ]
    lines += [
        "",
        "fallbacks: proposals stored as kind `fallback` (the proposer found no valid, distinct candidate "
        "and a random perturbation of a best structure was simulated instead) / all proposals.",
    ]
    (out / "table.md").write_text("\n".join(lines) + "\n")


def _plot_median(runs, methods, s: SuiteSettings, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    x = np.arange(1, s.budget + 1)
    for k, m in enumerate(methods):
        rs = [r for r in runs if r["method"] == m]
        if not rs:
            continue
        rel = np.array([np.asarray(r["curve"]) / r["start_objective"] for r in rs])
        ax.semilogy(x, np.median(rel, axis=0), color=f"C{k}", lw=2, label=f"{m} (n={len(rs)})")
        if len(rs) > 1:
            lo, hi = np.percentile(rel, [25, 75], axis=0)
            ax.fill_between(x, lo, hi, color=f"C{k}", alpha=0.12)
    ax.axvline(s.initial_size + 1, color="0.5", ls=":", lw=1, label="end of initial data")
    ax.set_xlabel("simulations")
    ax.set_ylabel("best mismatch / start mismatch (median)")
    ax.set_title(f"{s.name}: median over cases × seeds (band: quartiles)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
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
    for ax, name in zip(axes.flat, names, strict=False):
        for k, m in enumerate(methods):
            for r in (r for r in runs if r["case"] == name and r["method"] == m):
                ax.semilogy(
                    x, r["curve"], color=f"C{k}", lw=1.2, label=m if r["seed"] == s.seeds[0] else None
                )
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.supxlabel("simulations")
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
    ap.add_argument("--technique", choices=["pdf", "exafs"], default="pdf")
    ap.add_argument("--methods", nargs="+", default=ALL_METHODS)
    ap.add_argument("--cases", nargs="+", default=None, help="case names, 'ht', 'generated' or 'reduced'")
    ap.add_argument("--seeds", type=int, nargs="+", default=None)
    ap.add_argument("--budget", type=int, default=None)
    ap.add_argument("--initial", type=int, default=None, help="initial perturbations (same for every method)")
    ap.add_argument("--batch", type=int, default=None, help="q candidates per iteration")
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel processes")
    ap.add_argument("--device", default=None, help="auto (CUDA when present), cpu, cuda")
    ap.add_argument("--rerun", nargs="*", default=[], help="methods whose runs are deleted and run again")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per run (default: 20 min; 0: none)")
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

    if args.technique == "exafs":
        s = exafs_settings()
        default_cases = ["linio2-jt"]
    elif args.full:
        s = full_settings()
        default_cases = ["generated", "ht"]
    else:
        s = reduced_settings()
        default_cases = list(REDUCED)
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
    out = args.out or ROOT / "benchmarks" / "results" / "structure_determination" / s.name
    cases = resolve_cases(args.cases or default_cases, out / "cases")
    t0 = time.perf_counter()
    timeout = 1200.0 if args.timeout is None else (args.timeout or None)
    doc = run_suite(cases, args.methods, s, out, jobs=args.jobs, rerun=tuple(args.rerun), timeout=timeout)
    print((out / "table.md").read_text())
    print(f"wall {time.perf_counter() - t0:.0f} s for this invocation; outputs in {out}")
    return doc


if __name__ == "__main__":
    main()
