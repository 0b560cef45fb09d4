"""Measured EXAFS, Larch side by side: Larch's own ``feffit`` and our campaign's fit of the Cu foil.

Usage (needs ``aso-workflows[xas]``)::

    python benchmarks/xafs_vs_larch.py [--campaign cu-exafs-measured [--store DIR]] [--out FILE.json]

One command, JSON + PNG (same name). On ``examples/cu_exafs_measured/cu_metal_rt.xdi`` (xraylarch's
example data; the same data Larch's documented fit ``doc_feffit1.out`` uses):

1. **processing**: Larch's ``pre_edge``/``autobk`` (rbkg 1.0, k-weight 1, as in Larch's example) and
   our transforms against Larch's: the Kaiser/Hanning windows (``ftwindow``) and χ(R) (``xftf``) of
   ``aso_workflows.spectra.xafs`` on the same χ(k);
2. **Larch's own feffit** on that processed χ(k), with the first-shell path from OUR FEFF 10 run
   (feff10-rs, fcc Cu a = 3.61 Å, the campaign's FEFF settings; the ``feff0001.dat`` file read by
   Larch's ``feffpath``), Larch's ranges: k 3–17 Å⁻¹, R 1.4–3.0 Å, k-weight 2, Kaiser dk 4, R space,
   S0², ΔE0, σ², ΔR = α·R_eff;
3. **our fit** (``fit: {model: paths}``, :class:`~aso_workflows.spectra.fit.feffit.FeffitFitter`) of
   the same structure, and — with ``--campaign`` — of the campaign's best candidate (``aso run
   examples/cu_exafs_measured/campaign.yaml``; ``--store`` its store folder);
4. Larch's documented result (``doc_feffit1.out``: Larch's own FEFF 6 path, a = 3.603 Å).

Table: R-factor, reduced χ², S0², ΔE0, σ², ΔR (= α·R_eff) and the first-shell distance of each, with
uncertainties; the campaign's best structure's nearest-neighbour distances (fcc kept: all within
0.02 Å of their mean). Also Ni (``examples/ni_joint_measured/ni_metal_rt.xdi``, no published
reference): Larch's feffit and ours with our FEFF path (fcc Ni, a = 3.52 Å).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aso_workflows.spectra.exafs import EXAFSSimulator  # noqa: E402
from aso_workflows.spectra.fit import make_fitter  # noqa: E402
from aso_workflows.spectra.targets import read_target  # noqa: E402
from aso_workflows.spectra.xafs import ftwindow, xftf  # noqa: E402

CU = ROOT / "examples" / "cu_exafs_measured"
NI = ROOT / "examples" / "ni_joint_measured"
RANGES: dict[str, Any] = {"kmin": 3.0, "kmax": 17.0, "dk": 4.0, "window": "kaiser", "rmin": 1.4, "rmax": 3.0}
FEFF: dict[str, Any] = {
    "supercell": [1, 1, 1],
    "radius": 5.0,
    "rpath": 3.0,
    "nlegs": 2,
    "kweight": 2,
    "keep_paths": True,
}
PROCESSING = {"rbkg": 1.0, "kweight": 1}


def fcc(a: float, element: str):  # noqa: ANN201 - pymatgen Structure
    from pymatgen.core import Lattice, Structure

    return Structure(
        Lattice.cubic(a), [element] * 4, [[0.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]]
    )


def transforms_vs_larch(target) -> dict:  # noqa: ANN001
    """Our ftwindow/xftf against Larch's on the measured χ(k)."""
    from larch import Group
    from larch.xafs import ftwindow as larch_ftwindow
    from larch.xafs import xftf as larch_xftf

    k = np.asarray(target.extra["xas"]["k"])
    chi = np.asarray(target.extra["xas"]["chi"])
    # Larch snaps the window's ends to the grid and stops it at the grid's last point; its transforms
    # use a grid from 0 far past kmax + dk/2 (as here), where the two windows are the same function
    grid = 0.05 * np.arange(600)
    out = {}
    for win in ("hanning", "kaiser"):
        ours = ftwindow(grid, 3.0, 17.0, 4.0, win)
        theirs = larch_ftwindow(grid, xmin=3, xmax=17, dx=4.0, window=win)
        out[f"{win}_window_max_diff"] = float(np.max(np.abs(theirs - ours)))
        g = Group(k=k, chi=chi)
        larch_xftf(g, kmin=3, kmax=17, dk=4, kweight=2, window=win, rmax_out=6)
        r, chir = xftf(k, chi * k**2, rmax=6.0, kmin=3, kmax=17, dk=4, window=win)
        n = min(len(r), len(g.r))
        out[f"{win}_chir_max_rel_diff"] = float(
            np.max(np.abs(chir[:n] - g.chir[:n])) / np.max(np.abs(g.chir))
        )
    return out


def larch_feffit(target, feff_dat: Path, ranges: dict) -> tuple[dict, object]:  # noqa: ANN001
    """Larch's own feffit over ``ranges`` (Larch's for Cu), on our FEFF path file."""
    from larch import Group
    from larch.fitting import param, param_group
    from larch.xafs import feffit, feffit_dataset, feffit_transform, feffpath

    xas = target.extra["xas"]
    data = Group(k=np.asarray(xas["k"]), chi=np.asarray(xas["chi"]), delta_chi=np.asarray(xas["delta_chi"]))
    pars = param_group(
        amp=param(1.0, vary=True),
        del_e0=param(0.0, vary=True),
        sig2=param(0.003, vary=True),
        alpha=param(0.0, vary=True),
    )
    path = feffpath(str(feff_dat), s02="amp", e0="del_e0", sigma2="sig2", deltar="alpha*reff")
    trans = feffit_transform(kweight=2, fitspace="r", **ranges)
    t0 = time.perf_counter()
    out = feffit(pars, feffit_dataset(data=data, paths={"p1": path}, transform=trans))
    seconds = time.perf_counter() - t0
    p = out.params
    reff = path.reff
    row = {
        "r_factor": float(out.rfactor),
        "chi2_reduced": float(out.chi2_reduced),
        "s02": [float(p["amp"].value), float(p["amp"].stderr)],
        "e0": [float(p["del_e0"].value), float(p["del_e0"].stderr)],
        "sigma2": [float(p["sig2"].value), float(p["sig2"].stderr)],
        "delta_r": [float(p["alpha"].value * reff), float(p["alpha"].stderr * reff)],
        "first_shell_r": [float(reff * (1 + p["alpha"].value)), float(p["alpha"].stderr * reff)],
        "reff": float(reff),
        "nfev": int(out.nfev),
        "seconds": seconds,
    }
    return row, out


def ours(fit, reff: float) -> dict:  # noqa: ANN001
    """A FitResult of our FEFFIT-grade fitter in the table's units."""
    p, e, st = fit.parameters, fit.uncertainties, fit.statistics
    alpha = p.get("expansion", st.get("expansion", 0.0))
    return {
        "r_factor": fit.goodness,
        "chi2_reduced": st["chi2_reduced"],
        "s02": [p["s02"], e.get("s02")],
        "e0": [p["e0"], e.get("e0")],
        "sigma2": [p["sigma2"], e.get("sigma2")],
        "delta_r": [alpha * reff, e.get("expansion", 0.0) * reff],
        "first_shell_r": [st["first_shell_r"], e.get("expansion", 0.0) * reff],
        "reff": reff,
        "nfev": int(st["nfev"]),
    }


def documented() -> dict:
    """Larch's documented fit of this file (doc_feffit1.out)."""
    text = (CU / "doc_feffit1.out").read_text()

    def value(name: str) -> list[float]:
        m = re.search(rf"^\s*{name}\s*=\s*(\S+)\s*\+/-\s*(\S+)", text, re.M)
        assert m, name
        return [float(m.group(1)), float(m.group(2))]

    reff = float(re.search(r"reff\s*=\s*(\S+)", text).group(1))  # type: ignore[union-attr]
    dr = value("del_r")
    return {
        "r_factor": float(re.search(r"r-factor\s*=\s*(\S+)", text).group(1)),  # type: ignore[union-attr]
        "chi2_reduced": float(re.search(r"reduced chi_square\s*=\s*(\S+)", text).group(1)),  # type: ignore[union-attr]
        "s02": value("amp"),
        "e0": value("del_e0"),
        "sigma2": value("sig2"),
        "delta_r": dr,
        "first_shell_r": [reff + dr[0], dr[1]],
        "reff": reff,
    }


def nn_distances(structure, cutoff: float = 3.0) -> list[float]:  # noqa: ANN001
    """Every nearest-neighbour distance of the structure (Å), each pair once."""
    out = []
    for i, site in enumerate(structure):
        for n in structure.get_neighbors(site, cutoff):
            if n.index > i or (n.index == i and n.nn_distance > 0):
                out.append(float(n.nn_distance))
    return sorted(out)


def campaign_best(name: str, store: str | None) -> dict:
    """The campaign's best candidate: its stored fit, first-shell distance and nearest neighbours."""
    from aso_workflows.results import Campaign

    camp = Campaign.open(name, store)
    best = camp.best(1)[0]
    doc = camp.db.evaluations.find_one({"_id": best.id})
    assert doc is not None  # the best candidate's own evaluation
    fit = doc["fit"]["exafs"]
    nn = nn_distances(best.structure)
    return {
        "candidate": best.ref,
        "objective": best.objective,
        "evaluations": len(camp.structures()),
        "fit": fit,
        "nn_distances": [min(nn), max(nn), float(np.mean(nn))],
        "fcc_kept": bool(max(abs(d - np.mean(nn)) for d in nn) <= 0.02),
        "min_r_factor": min(
            e["goodness"]["exafs"]["value"]
            for e in camp.db.evaluations.find({"campaign": camp.name, "status": "completed"})
        ),
    }


def one_foil(xdi: Path, element: str, a: float, kmax: float, work: Path) -> dict:
    """Larch's feffit and ours on one foil, with the first-shell path of our FEFF run on fcc(a)."""
    ranges = {**RANGES, "kmax": kmax}
    sim = EXAFSSimulator(absorber=element, kmin=3.0, kmax=kmax, sites=[0], **FEFF)
    target = read_target(xdi, "exafs", simulator=sim, processing=PROCESSING)
    t0 = time.perf_counter()
    spectrum = sim.simulate(fcc(a, element), workdir=work / element)
    feff_seconds = time.perf_counter() - t0
    spec = {
        "model": "paths",
        "refine": ["s02", "e0", "sigma2", "expansion"],
        "space": "r",
        "kweight": 2,
        **ranges,
    }
    fitter = make_fitter("exafs", spec, target, sim)
    t0 = time.perf_counter()
    fit = fitter.fit(spectrum)
    ours_seconds = time.perf_counter() - t0
    reff = min(p["reff"] for p in spectrum.extra["feff_paths"])
    larch_row, larch_out = larch_feffit(target, work / element / "site_0000" / "feff0001.dat", ranges)
    return {
        "ranges": ranges,
        "target": {"file": str(xdi.relative_to(ROOT)), **target.settings["processed"]},
        "feff_seconds": feff_seconds,
        "larch_feffit_our_paths": larch_row,
        "ours_same_structure": {**ours(fit, reff), "seconds": ours_seconds},
        "_plot": (target, larch_out, fit),
    }


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target, larch_out, fit = results["foils"]["Cu"]["_plot"]
    ds = larch_out.datasets[0]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    xas = target.extra["xas"]
    e, mu = np.asarray(xas["energy"]), np.asarray(xas["mu"])
    ax = axes[0]
    ax.plot(e, mu, label="μ(E)")
    ax.plot(e, np.asarray(xas["bkg"]), label="AUTOBK background")
    ax.plot(e, np.asarray(xas["pre_edge"]), "--", label="pre-edge line")
    ax.set(xlabel="E (eV)", ylabel="μ(E)", title="Cu foil: μ(E) and Larch's background")
    ax.legend(fontsize=8)
    k = np.asarray(xas["k"])
    ax = axes[1]
    ax.plot(k, np.asarray(xas["chi"]) * k**2, label="data")
    ax.plot(ds.model.k, ds.model.chi * ds.model.k**2, label="Larch feffit (our FEFF path)")
    ax.plot(fit.spectrum.x, fit.spectrum.y, "--", label="ours")
    ax.set(xlabel="k (Å⁻¹)", ylabel="k²χ(k) (Å⁻²)", xlim=(0, 18), title="χ(k)")
    ax.legend(fontsize=8)
    ax = axes[2]
    ax.plot(ds.data.r, ds.data.chir_mag, label="data")
    ax.plot(ds.model.r, ds.model.chir_mag, label="Larch feffit")
    r, chir = xftf(
        fit.spectrum.x, fit.spectrum.y, rmax=6.0, **{k: RANGES[k] for k in ("kmin", "kmax", "dk", "window")}
    )
    ax.plot(r, np.abs(chir), "--", label="ours (its 3–17 Å⁻¹ spectrum)")
    ax.axvspan(RANGES["rmin"], RANGES["rmax"], color="0.9")
    ax.set(xlabel="R (Å)", ylabel="|χ(R)| (Å⁻³)", xlim=(0, 6), title="|χ(R)|, fit range shaded")
    ax.legend(fontsize=8)
    rows = results["foils"]["Cu"]
    text = (
        f"R: Larch {rows['larch_feffit_our_paths']['r_factor']:.5f}, ours {rows['ours_same_structure']['r_factor']:.5f}"
        f", documented {results['documented_larch']['r_factor']:.5f}"
    )
    if "campaign" in results:
        text += f", campaign best {results['campaign']['fit']['goodness']:.5f}"
    fig.suptitle(text, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--campaign", help="also table this campaign's best candidate (e.g. cu-exafs-measured)"
    )
    parser.add_argument("--store", help="its store (default: $ASO_STORE or runs/<campaign>/store)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "xafs_vs_larch.json"))
    args = parser.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "ranges": RANGES,
        "feff": FEFF,
        "processing": PROCESSING,
        "documented_larch": documented(),
    }
    with tempfile.TemporaryDirectory(prefix="xafs-vs-larch-") as tmp:
        foils = {
            "Cu": one_foil(CU / "cu_metal_rt.xdi", "Cu", 3.61, 17.0, Path(tmp)),
            "Ni": one_foil(NI / "ni_metal_rt.xdi", "Ni", 3.52, 15.0, Path(tmp)),
        }
    results["foils"] = foils
    results["transforms_vs_larch"] = transforms_vs_larch(foils["Cu"]["_plot"][0])
    if args.campaign:
        results["campaign"] = campaign_best(args.campaign, args.store)
    plot(results, out.with_suffix(".png"))
    for f in foils.values():
        f.pop("_plot")
    out.write_text(json.dumps(results, indent=1))
    print(json.dumps({k: v for k, v in results.items() if k != "documented_larch"}, indent=1)[:4000])
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
