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

The parts (``benchmarks/sdbench/``): ``suites`` (methods, suite settings, one run's campaign fields; the
cases are ``cases.py``), ``running`` (one run, a suite), ``accounting`` (costs and summaries), ``tables``
(results, CSV, tables) and ``plots``. This script is the command line.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from cases import REDUCED, resolve_cases  # noqa: E402
from sdbench.accounting import accounting_views, check_targets, equal_cost_rows, per_calculation  # noqa: E402
from sdbench.running import run_suite  # noqa: E402
from sdbench.suites import (  # noqa: E402
    ALL_METHODS,
    EXAFS_PAPER_METHODS,
    PAPER_METHODS,
    POLISH_METHODS,
    SuiteSettings,
    exafs_settings,
    full_settings,
    merge_fields,
    paper_settings,
    parse_set,
    polish_settings,
    reduced_settings,
    run_dir,
)
from sdbench.tables import write_paper_summary  # noqa: E402

__all__ = [
    "main",
    "SuiteSettings",
    "run_suite",
    "run_dir",
    "resolve_cases",
    "accounting_views",
    "check_targets",
    "equal_cost_rows",
    "per_calculation",
]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--reduced", action="store_true", help="≥ 5 cases, PDF, budget 40, 1 seed (default)")
    mode.add_argument(
        "--full", action="store_true", help="all cases, budget 100, seeds 0 1 2, GPU if present"
    )
    mode.add_argument(
        "--polish",
        action="store_true",
        help="issue 19: diffpy, aso, aso-refine, aso-polish on the reduced cases + strong disorder "
        "(nio-disorder), budget 40, ASO sized for a shared 2-core CPU",
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
    elif args.polish:
        s = polish_settings()
        default_cases = ["polish"]
        args.methods = args.methods or list(POLISH_METHODS)
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
        s.method_overrides[method] = merge_fields(dict(s.method_overrides.get(method, {})), extra)


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


if __name__ == "__main__":
    main()
