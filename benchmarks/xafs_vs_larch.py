"""Our XAFS processing against xraylarch's: pre_edge, ftwindow (Hanning, Kaiser) and xftf.

xraylarch is not a dependency of aso-workflows (a large install); run this in an environment that has
it, with aso_workflows importable::

    python -m venv /tmp/larch && /tmp/larch/bin/pip install xraylarch==2026.3.1
    PYTHONPATH=. /tmp/larch/bin/python benchmarks/xafs_vs_larch.py

Prints the differences on a synthetic Ni K-edge μ(E) (pre-edge line, arctan edge, damped
oscillations, sloping post-edge) and a two-term χ(k). Measured with xraylarch 2026.3.1: edge step
1.64489 vs 1.64549 with the default ranges (E0 8333.04 vs 8333.00 eV), flattened μ within 2.6e-4
(1.6e-4 with Larch's E0 and ranges); windows identical to 1e-15; χ(R) to 2e-13 relative.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
from larch import Group
from larch.xafs import ftwindow as larch_ftwindow
from larch.xafs import pre_edge as larch_pre_edge
from larch.xafs import xftf as larch_xftf

ROOT = Path(__file__).resolve().parents[1]
# aso_workflows.spectra.xafs needs only numpy/scipy: load it without the package's other dependencies
_spec = importlib.util.spec_from_file_location("aso_xafs", ROOT / "aso_workflows" / "spectra" / "xafs.py")
xafs = importlib.util.module_from_spec(_spec)
sys.modules["aso_xafs"] = xafs
_spec.loader.exec_module(xafs)


def main() -> None:
    e = np.round(
        np.concatenate(
            [np.arange(8133.0, 8313.0, 2.0), np.arange(8313.0, 8400.0, 0.5), np.arange(8400.0, 9000.0, 2.0)]
        ),
        6,
    )
    rel = e - 8333.0
    edge = 0.5 + np.arctan(rel / 1.5) / np.pi
    wiggle = 0.06 * np.sin(rel / 9.0) * np.exp(-np.clip(rel, 0, None) / 120.0) * (rel > 0)
    mu = 0.35 - 2e-5 * rel + 1.7 * (edge + wiggle) * (1 - 1.5e-4 * np.clip(rel, 0, None))
    g = Group(energy=e, mu=mu)
    larch_pre_edge(g)
    d = g.pre_edge_details
    ours = xafs.pre_edge(e, mu)
    print(f"E0        larch {g.e0:.3f}  ours {ours.e0:.3f} eV")
    print(f"edge step larch {g.edge_step:.5f}  ours {ours.edge_step:.5f}")
    print(
        f"ranges    larch {d.pre1:g} {d.pre2:g} {d.norm1:g} {d.norm2:g} nnorm {d.nnorm}"
        f"   ours {ours.pre1:g} {ours.pre2:g} {ours.norm1:g} {ours.norm2:g} nnorm {ours.nnorm}"
    )
    print(f"flat      max |ours − larch| = {np.max(np.abs(ours.flat - g.flat)):.2e} (defaults)")
    same = xafs.pre_edge(
        e, mu, e0=g.e0, pre1=d.pre1, pre2=d.pre2, norm1=d.norm1, norm2=d.norm2, nnorm=d.nnorm
    )
    print(f"flat      max |ours − larch| = {np.max(np.abs(same.flat - g.flat)):.2e} (Larch's E0 and ranges)")
    k = np.round(np.arange(0, 15, 0.05), 10)
    for win in ("hanning", "kaiser"):
        diff = np.max(
            np.abs(larch_ftwindow(k, xmin=3, xmax=12, dx=2.0, window=win) - xafs.ftwindow(k, 3, 12, 2.0, win))
        )
        print(f"{win:9s} window max |ours − larch| = {diff:.1e}")
    kk = np.round(np.arange(2.0, 14.0, 0.05), 10)
    chi = 0.3 * np.sin(2 * kk * 2.5 + 0.3) * np.exp(-0.01 * kk**2) + 0.1 * np.sin(2 * kk * 3.4)
    g2 = Group(k=kk, chi=chi)
    larch_xftf(g2, kmin=3, kmax=12, dk=1, kweight=2, window="hanning", rmax_out=6)
    r, chir = xafs.xftf(kk, chi * kk**2, rmax=6.0, kmin=3, kmax=12, dk=1, window="hanning")
    n = min(len(r), len(g2.r))
    rel_diff = np.max(np.abs(chir[:n] - g2.chir[:n])) / np.max(np.abs(g2.chir))
    print(f"chi(R)    max |ours − larch| / max = {rel_diff:.1e}")


if __name__ == "__main__":
    main()
