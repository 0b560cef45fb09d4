"""The torch PDF model against pdffit2: exactness on every `ht` structure and the cost of a proposal step.

One command (issue 20, item 1):

    python benchmarks/pdf_prior.py [--ht /path/to/ht] [--limit N] [--batch 16 64] [--repeat 3]

1. **Exactness**: for every `ht` start and target (and the shipped LiNiO2, NiO, diamond) G(r) from
   pdffit2 (the campaign's simulator, reference settings) and from
   :class:`~aso_workflows.surrogate.priors.pdf_model.PDFModel` (float64, both pair-sum methods), and the
   same with neutron weights, per-element Biso, delta1/delta2 and Qdamp/Qbroad on a subset:
   ``max |ΔG| / max |G|`` per structure (the issue asks ≤ 1e-6).
2. **Cost**: forward + backward of the model for batches of perturbed LiNiO2 2×1×1 (24 atoms) and 2×2×1
   (48 atoms), float32 and float64, the pair list reused (as in a proposal) and rebuilt; beside it one
   pdffit2 G(r) calculation of the same structure (no derivatives).

Writes ``results.json`` and ``pdf_prior.png`` under ``benchmarks/results/pdf_prior/``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pymatgen.core import Structure

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_HT = Path(os.environ.get("ASO_HT_CASES", ROOT.parent / "shared" / "benchmarks" / "ht"))

VARIANTS: dict[str, dict[str, Any]] = {
    "reference": {},
    "neutron+qdamp": {"radiation": "neutron", "qdamp": 0.04},
    "sharpened+broadened": {"delta1": 0.3, "delta2": 1.2, "qbroad": 0.02, "biso": 0.8},
}


def _load(path: Path) -> Structure:
    import warnings

    from pymatgen.core import Structure

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Structure.from_file(str(path))


def exactness(structures: dict[str, Structure]) -> list[dict]:
    import torch

    from aso_workflows.spectra.pdf import PDFSimulator
    from aso_workflows.surrogate.priors.pdf_model import PDFModel

    rows = []
    for variant, settings in VARIANTS.items():
        sim = PDFSimulator(engine="pdffit2", **settings)
        names = list(structures) if variant == "reference" else list(structures)[:12]
        for name in names:
            s = structures[name]
            g = np.asarray(sim.simulate(s).values)
            model = PDFModel(sim, [site.specie.symbol for site in s])
            pos = torch.tensor(s.cart_coords[None])
            lat = torch.tensor(s.lattice.matrix[None])
            err = {}
            for method in ("auto", "direct"):
                with torch.no_grad():
                    out = model(pos, lat, method=method)[0].numpy()
                err[method] = float(np.max(np.abs(out - g)) / np.max(np.abs(g)))
            rows.append({"variant": variant, "structure": name, "atoms": len(s), **err})
    return rows


def cost(batches: list[int], repeat: int) -> list[dict]:
    import torch

    from aso_workflows.spectra.pdf import PDFSimulator
    from aso_workflows.surrogate.priors.pdf_model import PDFModel

    sim = PDFSimulator(engine="pdffit2")
    base = _load(ROOT / "examples" / "linio2_jt_pdf" / "start.cif")
    rows = []
    for cells in ((1, 1, 1), (2, 1, 1)):
        s = base.copy()
        s.make_supercell(cells)
        t0 = time.perf_counter()
        for _ in range(repeat):
            sim.simulate(s)
        pdffit2_s = (time.perf_counter() - t0) / repeat
        model = PDFModel(sim, [site.specie.symbol for site in s])
        rng = np.random.default_rng(0)
        for b in batches:
            pos0 = torch.tensor(
                np.stack([s.cart_coords + rng.normal(0, 0.05, (len(s), 3)) for _ in range(b)])
            )
            lat0 = torch.tensor(np.stack([s.lattice.matrix] * b))
            for dtype in (torch.float32, torch.float64):
                for cached in (False, True):
                    times = []
                    for _ in range(repeat):
                        if not cached:
                            model._cache = None
                        pos = pos0.to(dtype).requires_grad_()
                        t = time.perf_counter()
                        model(pos, lat0.to(dtype)).sum().backward()
                        times.append(time.perf_counter() - t)
                    rows.append(
                        {
                            "atoms": len(s),
                            "batch": b,
                            "dtype": str(dtype).split(".")[-1],
                            "pair_list": "reused" if cached else "rebuilt",
                            "seconds": float(np.median(times)),
                            "ms_per_structure": 1000 * float(np.median(times)) / b,
                            "pdffit2_ms_per_structure": 1000 * pdffit2_s,
                        }
                    )
                    print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ht", type=Path, default=DEFAULT_HT)
    parser.add_argument("--limit", type=int, default=None, help="first N ht cases only")
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "pdf_prior")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    import diffpy.pdffit2 as pdffit2

    pdffit2.redirect_stdout(io.StringIO())
    structures = {
        n: _load(ROOT / "aso_workflows" / "data" / f"{n}.cif") for n in ("LiNiO2", "NiO", "diamond")
    }
    for kind in ("start", "target"):
        files = sorted((args.ht / kind).glob("*.cif"))[: args.limit]
        structures.update({f"ht-{f.stem}-{kind}": _load(f) for f in files})
    t0 = time.perf_counter()
    exact = exactness(structures)
    exact_s = time.perf_counter() - t0
    load = os.getloadavg()
    timing = cost(args.batch, args.repeat)
    worst = {v: max(r["auto"] for r in exact if r["variant"] == v) for v in VARIANTS}
    worst_direct = {v: max(r["direct"] for r in exact if r["variant"] == v) for v in VARIANTS}
    result = {
        "structures": len(structures),
        "worst_rel_error_auto": worst,
        "worst_rel_error_direct": worst_direct,
        "exactness_seconds": round(exact_s, 1),
        "loadavg": load,
        "threads": args.threads,
        "exactness": exact,
        "cost": timing,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=1))
    _plot(result, args.out / "pdf_prior.png")
    print(
        json.dumps({k: result[k] for k in ("structures", "worst_rel_error_auto", "worst_rel_error_direct")})
    )
    return result


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for k, v in enumerate(VARIANTS):
        errs = [r["auto"] for r in result["exactness"] if r["variant"] == v]
        a1.semilogy(
            np.full(len(errs), k) + np.linspace(-0.2, 0.2, len(errs)), np.maximum(errs, 1e-17), ".", ms=3
        )
    a1.axhline(1e-6, color="k", ls=":", lw=1)
    a1.set_xticks(range(len(VARIANTS)), list(VARIANTS), fontsize=7)
    a1.set_ylabel("max |G_torch − G_pdffit2| / max |G|")
    a1.set_title(f"{result['structures']} structures (1e-6: the issue's bound)", fontsize=9)
    for atoms in sorted({r["atoms"] for r in result["cost"]}):
        for dtype, marker in (("float32", "o"), ("float64", "s")):
            rows = [
                r
                for r in result["cost"]
                if r["atoms"] == atoms and r["dtype"] == dtype and r["pair_list"] == "reused"
            ]
            a2.plot(
                [r["batch"] for r in rows],
                [r["ms_per_structure"] for r in rows],
                marker + "-",
                label=f"{atoms} atoms, {dtype}",
            )
        pf = [r["pdffit2_ms_per_structure"] for r in result["cost"] if r["atoms"] == atoms][0]
        a2.axhline(pf, ls=":", lw=1, color="gray")
    a2.set_xlabel("batch (structures per call)")
    a2.set_ylabel("ms per structure, forward + backward")
    a2.set_title("cost (dotted: one pdffit2 G(r), no derivatives)", fontsize=9)
    a2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
