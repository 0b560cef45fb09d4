"""Running the structure-determination benchmark: one run (a campaign to its end), a whole suite.

Each run (case, method, seed) is one campaign with its own embedded store, run by
``LocalCampaignRunner`` (the same machinery as ``aso run``); a suite runs every run not finished yet, in
this process or in parallel processes with a timeout each, then writes its outputs
(:mod:`sdbench.tables`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import traceback
from pathlib import Path

from cases import BenchmarkCase

from sdbench.accounting import CALC_ONLY, evaluation_costs, surrogate_accuracy
from sdbench.suites import SuiteSettings, base_method, campaign_fields, run_dir
from sdbench.tables import write_outputs

__all__ = ["method_status", "run_one", "run_suite"]


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
    calls_only = base_method(method) in CALC_ONLY
    if calls_only:
        fields["budget"] = min(s.budget, s.initial_size + 1 + s.batch_size)
    errors: list = []
    while True:
        cfg = CampaignConfig.model_validate(fields)
        runner = LocalCampaignRunner(progress=False)
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
