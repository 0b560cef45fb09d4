"""How far from its reference does the EXAFS path prior stay accurate? (issue 20: "paths refreshed when a
structure moves far from the geometry they were computed for — say how far, measured").

One command:

    python benchmarks/exafs_prior.py [--case linio2-jt] [--amplitudes 0.02 0.05 0.1 0.2 0.3 0.5] [--per 2]

FEFF (with its paths kept) simulates a reference structure — the case's start with every atom moved by
``--reference-amplitude`` (0.05 Å RMS), as the campaign's references are evaluated, hence unsymmetric
structures — then structures made by moving every atom of the reference by an RMS amplitude A (the
campaign's sampler, one amplitude per structure), the case's undistorted start and its target.
(A symmetric reference is a poor one: FEFF merges equivalent paths and filters paths by importance
relative to the largest, so the set of paths FEFF sums changes as soon as the symmetry breaks — LiNiO2:
49 paths at the symmetric start, 278 for a structure 0.02 Å from it.) For each the EXAFS prior built on the reference's paths
(:class:`~aso_workflows.surrogate.priors.exafs.EXAFSPrior`) predicts k^w·χ(k), compared with FEFF's:
``rel_rms = RMS(prior − FEFF) / std(FEFF)`` (0: exact; 1: no better than a flat line at the mean), beside
the same error of the reference's own spectrum used as the prediction (what a surrogate that ignores the
geometry change would say). Writes ``results.json`` and ``exafs_prior.png`` under
``benchmarks/results/exafs_prior/<case>/``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _feff(sim, structure, workdir: Path):
    t0 = time.perf_counter()
    spectrum = sim.simulate(structure, workdir=workdir)
    return spectrum, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", default="linio2-jt", help="examples/<case>_exafs: start.cif, target.cif")
    parser.add_argument("--amplitudes", type=float, nargs="+", default=[0.02, 0.05, 0.1, 0.2, 0.3, 0.5])
    parser.add_argument("--per", type=int, default=2, help="structures per amplitude")
    parser.add_argument("--sites", type=int, default=2, help="absorber sites simulated (as the example)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "exafs_prior")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference-amplitude", type=float, default=0.05)
    args = parser.parse_args(argv)

    from pymatgen.core import Structure

    from aso_workflows.optimizers.sampling import PerturbationSampler
    from aso_workflows.spectra.exafs import EXAFSSimulator
    from aso_workflows.surrogate.priors.exafs import EXAFSPrior, _rms

    folder = ROOT / "examples" / f"{args.case.replace('-', '_')}_exafs"
    start = Structure.from_file(str(folder / "start.cif"))
    target = Structure.from_file(str(folder / "target.cif"))
    absorber = (
        "Ni" if "Ni" in {s.specie.symbol for s in start} else sorted({s.specie.symbol for s in start})[0]
    )
    sim = EXAFSSimulator(absorber=absorber, sites=args.sites, keep_paths=True)
    out = args.out / args.case
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    sampler = PerturbationSampler(min_displacement=0.0, max_displacement=1.0, seed=args.seed)
    dmin = sampler.dmin_matrix(start)
    a0 = args.reference_amplitude
    reference = PerturbationSampler(min_displacement=a0, max_displacement=a0, seed=args.seed + 99).sample(
        start, 1, dmin_matrix=dmin
    )[0]
    ref_spec, ref_s = _feff(sim, reference, work / "reference")
    prior = EXAFSPrior(sim.settings_dict(), [s.specie.symbol for s in start], sim.k())
    prior.prepare([reference], [ref_spec], None)
    y_ref = np.asarray(ref_spec.values)

    def score(structure, label: str, amplitude: float | None) -> dict:
        spec, seconds = _feff(sim, structure, work / label)
        y = np.asarray(spec.values)
        p = prior.predict([structure])[0]
        scale = float(np.std(y)) or 1.0
        row = {
            "label": label,
            "amplitude": amplitude,
            "rms_from_reference": round(_rms(structure, reference), 4),
            "feff_paths_summed": sum(len(c["sig2"]) for c in spec.extra.get("feff_chi_paths") or []),
            "rel_rms_prior": float(np.sqrt(np.mean((p - y) ** 2)) / scale),
            "rel_rms_reference": float(np.sqrt(np.mean((y_ref - y) ** 2)) / scale),
            "feff_seconds": round(seconds, 1),
        }
        print(json.dumps(row), flush=True)
        return row

    rows = [score(reference, "reference", 0.0)]
    for a in args.amplitudes:
        fixed = PerturbationSampler(min_displacement=a, max_displacement=a, seed=args.seed + int(1000 * a))
        for k, s in enumerate(fixed.sample(reference, args.per, dmin_matrix=dmin)):
            rows.append(score(s, f"A{a:g}_{k}", a))
    rows.append(score(start, "start", None))
    rows.append(score(target, "target", None))
    result = {
        "case": args.case,
        "absorber": absorber,
        "sites": args.sites,
        "reference_amplitude": a0,
        "reference_feff_seconds": round(ref_s, 1),
        "prior": prior.summary(),
        "rows": rows,
    }
    (out / "results.json").write_text(json.dumps(result, indent=1))
    _plot(result, out / "exafs_prior.png")
    return result


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    a = [r["rms_from_reference"] for r in rows]
    ax.plot(
        a, [r["rel_rms_prior"] for r in rows], "o", label="path prior (reference's paths, candidate geometry)"
    )
    ax.plot(
        a, [r["rel_rms_reference"] for r in rows], "s", mfc="none", label="reference spectrum as prediction"
    )
    for r in rows:
        if r["label"] in ("start", "target"):
            ax.annotate(r["label"], (r["rms_from_reference"], r["rel_rms_prior"]), fontsize=7)
    ax.set_xlabel("RMS displacement from the reference (Å)")
    ax.set_ylabel("RMS error / std of FEFF's k²χ(k)")
    ax.set_title(f"EXAFS path prior, {result['case']} ({result['absorber']} K)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
