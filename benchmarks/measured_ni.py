"""Measured Ni X-ray PDF: our nuisance fit against a plain pdffit2 refinement of the same parameters.

Usage::

    python benchmarks/measured_ni.py [--out benchmarks/results/measured_ni.json] [--campaign-store DIR]

Data: ``examples/ni_xray_measured/Ni_2-8.chi.gr`` (diffpy.pdfgui test data, BSD-3-Clause; see
``DATA_LICENSE.txt`` there). Model: fcc Ni, a = 3.52 Å fixed (``Ni.stru``), Qmax 40 Å⁻¹ (the file's
``qmax`` hint), fit range 1.5–19.99 Å, unit weights. Refined: scale, Qdamp, Uiso, delta2.

1. pdffit2 1.5.0 ``refine()`` (Levenberg–Marquardt with analytic derivatives), as PDFgui would do it;
2. :class:`~aso_workflows.spectra.fit.pdf.PDFFitter` (closed-form scale + bounded least squares) on
   the 4-atom cell and on the 2×2×2 supercell that starts the example campaign, from the simulator's
   default settings (Biso 2, Qdamp 0, delta2 0);
3. with ``--campaign-store``: the best Rw of the example campaign (its evaluations' stored Rw), after
   ``aso run examples/ni_xray_measured/campaign.yaml`` (its store: ``runs/ni-xray-measured/store``).

Writes the JSON (Rw and parameters of each, seconds) and a plot next to it (same name, ``.png``):
data, both fits and their difference.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aso_workflows.spectra.fit import make_fitter  # noqa: E402
from aso_workflows.spectra.pdf import PDFSimulator  # noqa: E402
from aso_workflows.spectra.targets import read_target, settings_with_hints, target_hints  # noqa: E402
from aso_workflows.spectra.textfile import read_table  # noqa: E402

EXAMPLE = ROOT / "examples" / "ni_xray_measured"
DATA = EXAMPLE / "Ni_2-8.chi.gr"
STRU = EXAMPLE / "Ni.stru"
RMIN, RMAX = 1.5, 20.0  # our grid: 1.50 … 19.99 Å


def pdffit2_refinement() -> dict:
    """scale (dscale), Qdamp, delta2 and one Uiso for all atoms refined by pdffit2 itself; lattice fixed."""
    import diffpy.pdffit2 as pdffit2
    from diffpy.structure import loadStructure

    table = read_table(DATA)
    data = np.array([row[:4] for row in table.rows])
    pdffit2.redirect_stdout(io.StringIO())
    pf = pdffit2.PdfFit()
    pf.add_structure(loadStructure(str(STRU)))
    qmax = target_hints(DATA)["qmax"]
    pf.read_data_lists("X", qmax, 0.0, data[:, 0].tolist(), data[:, 1].tolist())  # unit weights
    pf.pdfrange(1, RMIN, 19.99)
    pf.constrain(pf.dscale(), "@1")
    pf.setpar(1, 1.0)
    pf.constrain(pf.qdamp(), "@2")
    pf.setpar(2, 0.03)
    pf.constrain(pf.delta2(), "@3")
    pf.setpar(3, 1.0)
    for i in range(1, pf.num_atoms() + 1):
        for u in (pf.u11, pf.u22, pf.u33):
            pf.constrain(u(i), "@4")
    pf.setpar(4, 0.005)
    t0 = time.perf_counter()
    pf.refine()
    seconds = time.perf_counter() - t0
    r = np.asarray(pf.getR())
    return {
        "rw": float(pf.getrw()),
        "parameters": {
            "scale": pf.getpar(1),
            "qdamp": pf.getpar(2),
            "delta2": pf.getpar(3),
            "uiso": pf.getpar(4),
        },
        "seconds": round(seconds, 3),
        "r": r.tolist(),
        "fit": np.asarray(pf.getpdf_fit()).tolist(),
    }


def ours(supercell: tuple[int, int, int]) -> dict:
    from pymatgen.core import Lattice, Structure

    ni = Structure.from_spacegroup("Fm-3m", Lattice.cubic(3.52), ["Ni"], [[0, 0, 0]]) * supercell
    settings = settings_with_hints("pdf", {"rmin": RMIN, "rmax": RMAX}, target_hints(DATA))
    sim = PDFSimulator(**settings)
    target = read_target(DATA, "pdf", simulator=sim)
    fitter = make_fitter("pdf", ["scale", "qdamp", "uiso", "delta2"], target, sim)
    t0 = time.perf_counter()
    result = fitter.fit(sim.simulate(ni), ni)
    seconds = time.perf_counter() - t0
    return {
        "atoms": len(ni),
        "settings": sim.settings_dict(),
        "rw": result.goodness,
        "parameters": result.parameters,
        "simulations": result.n_simulations,
        "seconds": round(seconds, 3),
        "r": target.x.tolist(),
        "data": target.y.tolist(),
        "fit": result.spectrum.values,
    }


def campaign_best(store: Path) -> dict:
    """The example campaign's evaluation with the lowest Rw (and its start's), from its store."""
    from aso_workflows.results import Campaign

    camp = Campaign.open("ni-xray-measured", store)
    done = [c for c in camp.best(10**6) if "pdf" in c.goodness]
    best = min(done, key=lambda c: c.goodness["pdf"]["value"])
    start = next(c for c in done if c.kind == "start")
    return {
        "rw": best.goodness["pdf"]["value"],
        "parameters": best.fit.get("pdf", {}),
        "candidate": best.ref,
        "start_rw": start.goodness["pdf"]["value"],
        "evaluations": len(done),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "measured_ni.json")
    ap.add_argument("--campaign-store", type=Path, default=None, help="store folder of the example campaign")
    args = ap.parse_args()
    ref = pdffit2_refinement()
    cell = ours((1, 1, 1))
    supercell = ours((2, 2, 2))
    out: dict[str, Any] = {
        "data": str(DATA.relative_to(ROOT)),
        "pdffit2": {k: v for k, v in ref.items() if k not in ("r", "fit")},
        "ours_cell": {k: v for k, v in cell.items() if k not in ("r", "data", "fit")},
        "ours_supercell": {k: v for k, v in supercell.items() if k not in ("r", "data", "fit")},
    }
    if args.campaign_store is not None:
        out["campaign"] = campaign_best(args.campaign_store)
    out["ratio_ours_to_pdffit2"] = cell["rw"] / ref["rw"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"pdffit2 refine : Rw = {ref['rw']:.5f}  {ref['parameters']}  ({ref['seconds']} s)")
    print(
        f"ours, 4 atoms  : Rw = {cell['rw']:.5f}  {cell['parameters']}  ({cell['simulations']} sims, {cell['seconds']} s)"
    )
    print(
        f"ours, 32 atoms : Rw = {supercell['rw']:.5f}  ({supercell['simulations']} sims, {supercell['seconds']} s)"
    )
    if "campaign" in out:
        c = out["campaign"]
        out["ratio_campaign_to_pdffit2"] = c["rw"] / ref["rw"]
        args.out.write_text(json.dumps(out, indent=1))
        print(
            f"campaign best  : Rw = {c['rw']:.5f} (candidate {c['candidate']}, start {c['start_rw']:.5f}; "
            f"{c['evaluations']} evaluations) = {out['ratio_campaign_to_pdffit2']:.3f} × pdffit2"
        )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r, data, fit = np.asarray(cell["r"]), np.asarray(cell["data"]), np.asarray(cell["fit"])
    rr, ref_fit = np.asarray(ref["r"]), np.asarray(ref["fit"])
    sel = (rr >= RMIN - 1e-9) & (rr <= 19.99 + 1e-9)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.plot(r, data, "k.", ms=2, label="Ni, measured (PDFgetX2)")
    ax.plot(r, fit, lw=1.2, label=f"nuisance fit, Rw = {cell['rw']:.4f}")
    ax.plot(rr[sel], ref_fit[sel], "--", lw=1.0, label=f"pdffit2 refine, Rw = {ref['rw']:.4f}")
    offset = data.min() - 2
    ax.plot(r, data - fit + offset, lw=0.8, color="C2", label="difference (ours)")
    ax.set_xlabel("r (Å)")
    ax.set_ylabel("G(r) (Å⁻²)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=110)
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
