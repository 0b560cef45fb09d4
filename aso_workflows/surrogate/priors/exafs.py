"""The EXAFS prior: FEFF's scattering paths of a reference structure, re-summed for a candidate's geometry.

FEFF's ``chi.dat`` of an absorber is the sum of its paths' ``chipNNNN.dat`` (checked: 2.5e-7 relative),
each ``Im[N S0² |f(k)| / (k R²) · exp(−2R/λ − 2p²σ² + i(2kR + φ(k)))]`` with the complex momentum
``p = rep + i/λ`` and ``|f|``, ``φ``, ``rep``, ``λ`` from its ``feffNNNN.dat`` (FEFF's ``ff2x`` has no
``−4pσ²/R`` phase term, unlike Larch's FEFFIT equation: with it a single path is 4–8 % off FEFF's
``chip``, without it 0.1–0.4 %). A candidate changes the path lengths: as FEFFIT does, each path keeps
its amplitude and phase and moves by ``ΔR = R − R_ref`` (``exp(2ipΔR)``, ``1/R²``).

What the prior adds to FEFFIT's picture:

* **Degenerate paths split.** FEFF merges equivalent paths (the six Ni–O of undistorted LiNiO2 are one
  path of degeneracy 6); a Jahn–Teller candidate has four short and two long bonds. Each single- and
  double-scattering path (2 and 3 legs) is expanded into its geometric instances in the reference
  structure (the same elements at the same leg lengths, ±:data:`MATCH` Å) when their number equals
  FEFF's degeneracy; each instance then has its own length in a candidate. Longer paths keep their
  representative geometry and degeneracy.
* **σ² from the correlated Debye model** at the simulator's ``debye: (T, θ)``, per path, with Larch's
  ``sigma2_debye`` (FEFF's own ``sigms`` code: the σ² FEFF lists in ``chi.dat`` agree to 1e-5 Å²),
  evaluated on the reference geometry.
* **S0²** per absorber, fitted (least squares) to the reference's own FEFF spectrum: FEFF computes it
  (``S02 0``) but does not write it with the paths.
* **The reference** is a structure the campaign has simulated with its paths kept
  (``keep_paths``): the first one in evaluation order that lies within ``refresh_distance`` (RMS Å) of
  the best structure so far, so the paths are refreshed when the search moves that far from the
  geometry they were computed for (``docs/surrogate.md`` has the measurement behind the default).

Per-absorber rows (the absorbers the campaign simulates) are the node-level rows the GNN's residual is
learned on; their mean is the spectrum, ``k^w χ(k)`` on the surrogate's grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from pymatgen.core import Structure

from aso_workflows.errors import InputError
from aso_workflows.spectra.spectrum import Spectrum
from aso_workflows.surrogate.priors.base import PhysicsPrior

__all__ = ["EXAFSPrior", "MATCH", "REFRESH_DISTANCE"]

#: Å: two leg lengths (or an atom and a path atom's position) match within this
MATCH = 0.02
#: default RMS distance (Å) of the best structure from the reference beyond which the paths are refreshed
REFRESH_DISTANCE = 0.05


def _locate(structure: Structure, site: int, xyz: np.ndarray) -> tuple[int, tuple[int, ...]]:
    """The atom (index, lattice image) at Cartesian ``xyz`` relative to ``site``."""
    lat = structure.lattice
    target = structure.cart_coords[site] + xyz
    frac = lat.get_fractional_coords(target)
    d = frac[None] - structure.frac_coords
    image = np.round(d)
    cart = lat.get_cartesian_coords(d - image)
    j = int(np.argmin(np.linalg.norm(cart, axis=1)))
    if float(np.linalg.norm(cart[j])) > MATCH:
        raise InputError(
            "feff_paths",
            f"a path atom at {xyz.round(3).tolist()} Å from site {site} is no atom of the structure",
        )
    return j, tuple(int(x) for x in image[j])


def _neighbours(
    structure: Structure, site: int, radius: float
) -> list[tuple[int, tuple[int, ...], np.ndarray]]:
    """Atoms (index, image, Cartesian offset from ``site``) within ``radius`` of ``site``, itself excluded."""
    out = []
    for nb in structure.get_neighbors(structure[site], radius):
        out.append((int(nb.index), tuple(int(x) for x in nb.image), nb.coords - structure.cart_coords[site]))
    return out


def _instances(structure: Structure, site: int, path: Any) -> list[list[tuple[int, tuple[int, ...]]]]:
    """The geometric instances of a path (each a chain of atoms from the absorber), or its representative
    alone when it cannot be expanded to exactly FEFF's degeneracy."""
    rep = [_locate(structure, site, np.asarray(g[4:7], dtype=float)) for g in path.geom]
    symbols = [g[0] for g in path.geom]
    legs = path.distances()
    n = round(path.degen)
    if path.nleg == 2:
        found = [
            [rep[0], (j, im)]
            for j, im, off in _neighbours(structure, site, legs[0] + MATCH)
            if structure[j].specie.symbol == symbols[1] and abs(np.linalg.norm(off) - legs[0]) <= MATCH
        ]
    elif path.nleg == 3:
        near = [
            (j, im, off)
            for j, im, off in _neighbours(structure, site, max(legs[0], legs[2]) + MATCH)
            if structure[j].specie.symbol in (symbols[1], symbols[2])
        ]
        found = []
        for j1, im1, o1 in near:
            for j2, im2, o2 in near:
                if (j1, im1) == (j2, im2) or structure[j1].specie.symbol != symbols[1]:
                    continue
                if structure[j2].specie.symbol != symbols[2]:
                    continue
                lengths = (np.linalg.norm(o1), np.linalg.norm(o2 - o1), np.linalg.norm(o2))
                if all(abs(a - b) <= MATCH for a, b in zip(lengths, legs, strict=True)):
                    found.append([rep[0], (j1, im1), (j2, im2)])
    else:
        found = []
    return found if len(found) == n else [rep]


class EXAFSPrior(PhysicsPrior):
    """k^w χ(k) of a candidate from FEFF's paths of a reference structure (module docstring).

    Parameters
    ----------
    settings
        The EXAFS simulator's settings (``kweight``, ``debye``; ``keep_paths`` must be on).
    species
        Element of every site, in the campaign's site order.
    grid
        The surrogate's k grid (Å⁻¹).
    refresh_distance
        RMS distance (Å) from the best structure beyond which another reference is taken.
    """

    kind: ClassVar[str] = "exafs"

    def __init__(
        self,
        settings: dict[str, Any],
        species: list[str],
        grid: list[float] | np.ndarray,
        refresh_distance: float = REFRESH_DISTANCE,
    ):
        self.settings = dict(settings)
        if not self.settings.get("keep_paths"):
            raise InputError("keep_paths", "the EXAFS prior needs the simulator's keep_paths: true")
        self.species = [str(s) for s in species]
        self.grid = np.asarray(grid, dtype=float)
        self.output_dim = len(self.grid)
        self.refresh_distance = float(refresh_distance)
        self.reference: dict[str, Any] | None = None  # structure, paths, s02 per site
        self._tables: dict[str, torch.Tensor] = {}

    # ---- choosing the reference ------------------------------------------------------------------
    def prepare(
        self, structures: Sequence[Structure], spectra: Sequence[Spectrum], objectives: Sequence[float] | None
    ) -> None:
        """Take the reference: the first structure with paths within ``refresh_distance`` of the best."""
        from aso_workflows.spectra.feff_paths import paths_of

        have = [k for k, sp in enumerate(spectra) if sp.extra.get("feff_paths")]
        if not have:
            raise InputError("spectra", "no training spectrum carries FEFF paths (keep_paths)")
        best = min(have, key=lambda k: objectives[k]) if objectives is not None else have[0]
        ref = next(k for k in have if _rms(structures[k], structures[best]) <= self.refresh_distance)
        extra = spectra[ref].extra
        self._build(structures[ref], paths_of(extra), extra.get("feff_chi_paths"), spectra[ref])
        assert self.reference is not None
        self.reference["index"] = ref

    def _build(
        self,
        structure: Structure,
        paths: list[Any],
        chi: list[dict[str, Any]] | None,
        spectrum: Spectrum | None,
    ) -> None:
        """Tables for ``paths`` of ``structure``: the paths FEFF summed in each absorber's ``chi.dat``
        with its σ² and S0² (``chi``); without them (spectra kept before this was stored) every path,
        σ² of the correlated Debye model and S0² fitted to ``spectrum``."""
        listed = {int(c["site"]): c for c in chi or []}
        rows = []
        for p in paths:
            sig2 = (listed.get(p.site) or {}).get("sig2")
            if sig2 is not None:
                if str(p.index) not in sig2:
                    continue  # below FEFF's importance filter: not in its chi.dat
                sigma2 = float(sig2[str(p.index)])
            else:
                sigma2 = self._debye_sigma2(p)
            chains = _instances(structure, p.site, p)
            for chain in chains:
                rows.append((p, chain, p.degen / len(chains), sigma2))
        self._make_tables(structure, rows)
        s02 = {s: listed[s]["s02"] for s in self._site_list if s in listed and listed[s].get("s02")}
        if len(s02) < len(self._site_list):
            if spectrum is None:
                raise InputError("prior", "the EXAFS prior's state lacks S0² and no spectrum to fit it on")
            s02 = {**self._fit_s02(structure, spectrum, self._site_list), **s02}
        self.reference = {
            "structure": structure.as_dict(),
            "paths": [p.model_dump() for p in paths],
            "chi": chi,
            "s02": {int(k): float(v) for k, v in s02.items()},
        }
        self._tables["s02"] = torch.tensor([float(s02[s]) for s in self._site_list], dtype=torch.float64)

    def _debye_sigma2(self, path: Any) -> float:
        """σ² of the correlated Debye model at the simulator's ``debye`` (Larch's copy of FEFF's code)."""
        debye = self.settings.get("debye")
        if not debye:
            return 0.0
        from larch.xafs.sigma2_models import sigma2_correldebye

        g = path.geom
        rnorm = float(path.header.get("rnorman") or 0.0)
        xyz = [[float(a[4]), float(a[5]), float(a[6])] for a in g]
        return float(
            sigma2_correldebye(
                len(g),
                float(debye[0]),
                float(debye[1]),
                rnorm,
                *zip(*xyz, strict=True),
                [float(a[3]) for a in g],
            )
        )

    def _make_tables(self, structure: Structure, rows: list[tuple[Any, list, float, float]]) -> None:
        """Per instance: the atom chain (padded), the site row, and the constant complex factors on the grid."""
        from scipy.interpolate import CubicSpline

        k = self.grid
        sites = sorted({p.site for p, *_ in rows})
        self._site_list = sites
        legs = max(len(chain) for _, chain, _, _ in rows)
        atoms = np.zeros((len(rows), legs), dtype=np.int64)
        images = np.zeros((len(rows), legs, 3))
        count = np.zeros(len(rows), dtype=np.int64)
        row = np.zeros(len(rows), dtype=np.int64)
        amp = np.zeros((len(rows), len(k)))
        const = np.zeros((len(rows), len(k)), dtype=np.complex128)
        rep = np.zeros((len(rows), len(k)))
        lam = np.zeros((len(rows), len(k)))
        r_ref = np.zeros(len(rows))
        for i, (p, chain, weight, sigma2) in enumerate(rows):
            for m, (j, im) in enumerate(chain):
                atoms[i, m], images[i, m] = j, im
            count[i] = len(chain)
            row[i] = sites.index(p.site)

            def table(values: list[float], p: Any = p) -> np.ndarray:
                return CubicSpline(np.asarray(p.k), np.asarray(values))(k)

            a = table((np.asarray(p.mag_feff) * np.asarray(p.red_fact)).tolist())
            phase = table((np.asarray(p.real_phc) + np.asarray(p.pha_feff)).tolist())
            rep[i], lam[i] = table(p.rep), table(p.lam)
            r0 = _chain_length(structure, chain) / 2.0
            r_ref[i] = r0
            pc = rep[i] + 1j / lam[i]
            const[i] = np.exp(-2 * r0 / lam[i] - 2 * pc * pc * sigma2 + 1j * (2 * k * r0 + phase))
            amp[i] = weight * a / k
        self._tables = {
            "atoms": torch.from_numpy(atoms),
            "images": torch.from_numpy(images),
            "count": torch.from_numpy(count),
            "row": torch.from_numpy(row),
            "amp": torch.from_numpy(amp),
            "const": torch.from_numpy(const),
            "rep": torch.from_numpy(rep),
            "lam": torch.from_numpy(lam),
            "r_ref": torch.from_numpy(r_ref),
        }

    def _fit_s02(self, structure: Structure, spectrum: Spectrum, sites: list[int]) -> dict[int, float]:
        """S0² per absorber: least squares of the path sum (S0² = 1) on the reference's own FEFF rows."""
        self._tables["s02"] = torch.ones(len(sites), dtype=torch.float64)
        pos, lat = self.tensors([structure])
        with torch.no_grad():
            rows = self._site_rows(pos, lat)[0].numpy()  # [A, K], S0² = 1
        values = np.asarray(spectrum.site_values if spectrum.site_values is not None else [spectrum.values])
        listed = list(spectrum.absorber_sites or sites)
        out = {}
        for a, s in enumerate(sites):
            y = values[listed.index(s)] if s in listed else np.asarray(spectrum.values)
            x = rows[a]
            out[s] = float(x @ y / max(float(x @ x), 1e-300))
        return out

    def summary(self) -> dict[str, Any]:
        ref = self.reference or {}
        return {
            "reference_index": ref.get("index"),
            "paths": len(ref.get("paths") or []),
            "instances": int(len(self._tables["amp"])) if "amp" in self._tables else 0,
            "s02": ref.get("s02"),
        }

    # ---- prediction ----------------------------------------------------------------------------------
    def _site_rows(self, positions: torch.Tensor, lattice: torch.Tensor) -> torch.Tensor:
        """k^w χ(k) per absorber of the reference, ``[B, A, M]``."""
        t = self._tables
        if not t:
            raise InputError(
                "prior", "the EXAFS prior has no reference yet (prepare it on simulated spectra)"
            )
        dev, dtype = positions.device, positions.dtype
        atoms, images = t["atoms"].to(dev), t["images"].to(dev, dtype)
        xyz = positions[:, atoms] + torch.einsum("imx,bxy->bimy", images, lattice)  # [B, I, L, 3]
        legs = torch.arange(atoms.shape[1], device=dev)
        count = t["count"].to(dev)
        nxt = torch.where(legs[None] + 1 < count[:, None], legs[None] + 1, torch.zeros_like(legs[None]))
        seg = xyz[:, torch.arange(len(atoms), device=dev)[:, None], nxt] - xyz  # [B, I, L, 3]
        valid = (legs[None] < count[:, None]).to(dtype)
        r = 0.5 * (seg.norm(dim=-1) * valid).sum(-1)  # [B, I]
        dr = (r - t["r_ref"].to(dev, dtype))[..., None]
        rep, lam = t["rep"].to(dev, dtype), t["lam"].to(dev, dtype)
        const = t["const"].to(dev)
        phase = 2.0 * rep * dr
        chi = (const.real * torch.sin(phase) + const.imag * torch.cos(phase)).to(dtype)  # Im[C e^{iφ}]
        chi = chi * torch.exp(-2.0 * dr / lam) * t["amp"].to(dev, dtype) / (r * r)[..., None]
        n_sites = len(self._site_list)
        out = chi.new_zeros(positions.shape[0], n_sites, self.output_dim)
        out = out.index_add(1, t["row"].to(dev), chi)
        kw = torch.as_tensor(self.grid, dtype=dtype, device=dev) ** float(self.settings.get("kweight", 2.0))
        return out * t["s02"].to(dev, dtype)[None, :, None] * kw

    def predict_torch(self, positions: torch.Tensor, lattice: torch.Tensor) -> torch.Tensor:
        return self._site_rows(positions, lattice).mean(1)

    def rows_torch(self, positions: torch.Tensor, lattice: torch.Tensor) -> torch.Tensor | None:
        """Rows ``[B, N, M]`` indexed by site: each absorber of the reference its own, the others zero."""
        rows = self._site_rows(positions, lattice)
        out = rows.new_zeros(rows.shape[0], len(self.species), rows.shape[2])
        out[:, self._site_list] = rows
        return out

    # ---- persistence -------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "species": self.species,
            "grid": self.grid.tolist(),
            "refresh_distance": self.refresh_distance,
            "reference": self.reference,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> EXAFSPrior:
        from aso_workflows.spectra.feff_paths import FeffPath

        obj = cls(
            state["settings"],
            state["species"],
            state["grid"],
            state.get("refresh_distance", REFRESH_DISTANCE),
        )
        ref = state.get("reference")
        if ref is not None:
            paths = [FeffPath.model_validate(p) for p in ref["paths"]]
            chi = [dict(c) for c in ref.get("chi") or []]
            for c in chi:  # the fitted S0² when FEFF's was not stored
                c.setdefault("s02", ref["s02"].get(str(c["site"]), ref["s02"].get(c["site"])))
            if not chi:
                chi = [{"site": int(k), "s02": float(v), "sig2": None} for k, v in ref["s02"].items()]
            obj._build(Structure.from_dict(ref["structure"]), paths, chi, None)
            assert obj.reference is not None
            obj.reference["index"] = ref.get("index")
        return obj


def _chain_length(structure: Structure, chain: list[tuple[int, tuple[int, ...]]]) -> float:
    """Total length (Å) of the closed path through the chain's atoms."""
    lat = structure.lattice.matrix
    xyz = [structure.cart_coords[j] + np.asarray(im) @ lat for j, im in chain]
    ring = xyz + xyz[:1]
    return float(sum(np.linalg.norm(b - a) for a, b in zip(ring[:-1], ring[1:], strict=True)))


def _rms(a: Structure, b: Structure) -> float:
    """RMS displacement (Å) between two structures of one campaign: each atom to its nearest image, the
    mean displacement (a global translation) removed."""
    d = b.frac_coords - a.frac_coords
    d -= np.round(d)
    cart = d @ a.lattice.matrix
    cart -= cart.mean(0)
    return float(np.sqrt((cart**2).sum(1).mean()))
