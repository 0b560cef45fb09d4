"""Seconds per simulator call: PDF on 12/96/768-atom LiNiO2, one EXAFS and one XANES absorber (Ni K).

Usage::

    python benchmarks/simulators.py [--out benchmarks/results/simulators.json] [--pdf-repeats 5]
                                    [--no-xanes]

Writes the JSON (timings, settings, machine), prints a table and writes a bar chart next to the JSON
(same name, ``.png``). The FEFF runs use the simulators' default settings; a FEFF absorber is timed
as ``run_absorber`` (FEFF plus parsing) after ``write_absorber_inputs`` (timed separately).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aso_workflows.spectra.exafs import EXAFSSimulator  # noqa: E402
from aso_workflows.spectra.pdf import PDFSimulator  # noqa: E402
from aso_workflows.spectra.xanes import XANESSimulator  # noqa: E402
from aso_workflows.structures import load_structure  # noqa: E402

CIF = ROOT / "aso_workflows" / "data" / "LiNiO2.cif"
SITE = 3  # a Ni site of LiNiO2.cif


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def bench_pdf(repeats: int) -> list[dict]:
    """PDF G(r) with the default settings on supercells of LiNiO2; one untimed warm-up call each."""
    base = load_structure(CIF)
    sim = PDFSimulator()
    rows = []
    for mult in ((1, 1, 1), (2, 2, 2), (4, 4, 4)):
        s = base * mult
        sim.simulate(s)  # warm-up (engine set-up)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            sim.simulate(s)
            times.append(time.perf_counter() - t0)
        rows.append(
            {
                "name": f"PDF {len(s)} atoms",
                "technique": "pdf",
                "atoms": len(s),
                "seconds": statistics.median(times),
                "seconds_all": times,
                "engine": sim.engine_version(),
                "settings": sim.settings_dict(),
            }
        )
    return rows


def bench_absorber(sim, label: str) -> dict:
    """One FEFF absorber run (Ni site of LiNiO2) with ``sim``'s settings."""
    s = load_structure(CIF)
    with tempfile.TemporaryDirectory(prefix="aso-bench-") as tmp:
        t0 = time.perf_counter()
        d = sim.write_absorber_inputs(s, SITE, Path(tmp) / "site")
        t_write = time.perf_counter() - t0
        t0 = time.perf_counter()
        sp = sim.run_absorber(d)
        t_run = time.perf_counter() - t0
    return {
        "name": label,
        "technique": sim.technique,
        "atoms": len(s),
        "seconds": t_run,
        "seconds_all": [t_run],
        "write_inputs_seconds": t_write,
        "engine": sp.engine,
        "settings": sim.settings_dict(),
        **({"e0": sp.extra["e0"]} if "e0" in sp.extra else {}),
    }


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()),
        "packages": {
            d: _version(d) for d in ("feff10-rs", "diffpy.pdffit2", "diffpy.srreal", "pymatgen", "numpy")
        },
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Seconds per simulator call")
    for col in ("call", "atoms", "seconds", "engine"):
        table.add_column(col, justify="right" if col in ("atoms", "seconds") else "left")
    for r in rows:
        table.add_row(r["name"], str(r["atoms"]), f"{r['seconds']:.3g}", r["engine"])
    Console().print(table)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"pdf": "tab:blue", "exafs": "tab:orange", "xanes": "tab:green"}
    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = [r["name"] for r in rows]
    secs = [r["seconds"] for r in rows]
    bars = ax.barh(names, secs, color=[colours[r["technique"]] for r in rows])
    ax.bar_label(bars, labels=[f"{s:.3g} s" for s in secs], padding=3)
    ax.set_xscale("log")
    ax.set_xlabel("seconds per call (log scale)")
    ax.invert_yaxis()
    ax.set_title("aso-workflows simulators on LiNiO2 (FEFF: one Ni K absorber)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "simulators.json")
    ap.add_argument("--pdf-repeats", type=int, default=5, help="timed PDF calls per cell (median reported)")
    ap.add_argument("--no-xanes", action="store_true", help="skip the XANES run (~1–2 min with SCF)")
    args = ap.parse_args(argv)

    info = machine()
    rows = bench_pdf(args.pdf_repeats)
    rows.append(bench_absorber(EXAFSSimulator(absorber="Ni"), "EXAFS 1 absorber"))
    if not args.no_xanes:
        rows.append(bench_absorber(XANESSimulator(absorber="Ni"), "XANES 1 absorber"))

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": info, "results": rows}, indent=1, default=str))
    png = args.out.with_suffix(".png")
    plot(rows, png)
    print_table(rows)
    print(f"wrote {args.out} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
