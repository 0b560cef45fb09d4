"""Symmetry constraints: the free parameters of a structure in a space group, as PDFgui refines them.

A crystal refined against a PDF (PDFgui, pdffit2) does not move every coordinate of a P1 cell: atoms
related by the space group move together, atoms on special positions keep the coordinates the site
symmetry fixes, the cell keeps the lengths and angles its lattice system ties, and the displacement
parameters (ADPs) of a site obey its site symmetry. :class:`SymmetryConstraints` is that reduction for one
structure and one group of operations:

* **positions**: ``frac = reference + (B p)`` with ``p`` the free coordinates (``x(O2)``, ``z(La1)`` ...)
  and ``B`` a fixed ``[3N, P]`` matrix: a linear — hence differentiable — map from free parameters to
  positions (:meth:`SymmetryConstraints.positions`, :meth:`torch_projector` for the gradient proposals);
* **lattice**: which of a, b, c are equal and which angles may change (:attr:`length_groups`,
  :attr:`angle_groups`);
* **ADPs**: per orbit of equivalent atoms the Uij (CIF convention, as pdffit2 and diffpy.structure use
  them) allowed by the site symmetry, and the transform that gives every member's Uij
  (:meth:`adp_basis`).

The operations come from spglib (through the structure's own symmetry, ``spacegroup=None``), or — to
search in a **subgroup** the user names (``"Pbnm"`` for the tilted, Jahn–Teller distorted perovskite
started from ideal positions) — from spglib's table of that group in every setting it lists, placed at
the first origin (on a 1/8 grid) where every operation maps the structure onto itself. The subgroup's
operations must be symmetries of the start: an ideal structure has more symmetry than the distorted one,
never less.

Why written here rather than taken from ``diffpy.structure.SymmetryConstraints`` (PDFgui's own): that
class works from a space-group object and formula strings; the search needs the linear map itself
(numbers, not formulas) for supercells and subgroups in any setting, and the pdffit2 constraints are
written from the same matrices (:mod:`aso_workflows.spectra.fit.pdffit`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from pymatgen.core import Structure

from aso_workflows.errors import InputError

if TYPE_CHECKING:
    import torch

__all__ = ["SymmetryConstraints", "symmetry_constraints", "SYMPREC"]

SYMPREC = 1e-3
"""Position tolerance (fractional, and spglib's in Å) for an operation to map an atom onto another."""

_U_INDEX = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))
"""The six independent Uij, in pdffit2's order u11, u22, u33, u12, u13, u23."""


def _null_space(a: np.ndarray, tol: float = 1e-8) -> np.ndarray:
    """An orthonormal basis ``[n, k]`` of the null space of ``a`` ``[m, n]`` (k = 0 possible)."""
    if a.size == 0:
        return np.eye(a.shape[1])
    a = np.unique(np.round(a, 12), axis=0)  # supercells repeat each rotation once per translation
    _, s, vt = np.linalg.svd(a, full_matrices=a.shape[0] < a.shape[1])
    rank = int(np.sum(s > tol * max(1.0, float(s.max()) if s.size else 1.0)))
    return vt[rank:].T.copy()


def _echelon(basis: np.ndarray) -> np.ndarray:
    """The same column space, reduced so that each column has a 1 on its own pivot coordinate.

    Free parameters then read as coordinates (``x``, ``y``, ``z`` of a site; ``U11``, ``U12`` ...):
    parameter k moves pivot coordinate k by exactly its own change.
    """
    if basis.shape[1] == 0:
        return basis
    m = basis.T.copy()  # [k, n] rows
    pivots = []
    row = 0
    for col in range(m.shape[1]):
        if row == m.shape[0]:
            break
        p = row + int(np.argmax(np.abs(m[row:, col])))
        if abs(m[p, col]) < 1e-9:
            continue
        m[[row, p]] = m[[p, row]]
        m[row] /= m[row, col]
        for r in range(m.shape[0]):
            if r != row:
                m[r] -= m[r, col] * m[row]
        pivots.append(col)
        row += 1
    m[np.abs(m) < 1e-12] = 0.0
    return m.T


def _wrap(d: np.ndarray) -> np.ndarray:
    return d - np.round(d)


def _site_map(rot: np.ndarray, trans: np.ndarray, frac: np.ndarray, numbers: np.ndarray) -> np.ndarray | None:
    """``perm[i] = j`` with ``R x_i + t ≡ x_j`` (same species), or ``None`` if the operation is not a
    symmetry of the structure."""
    img = frac @ rot.T + trans
    d = _wrap(img[:, None, :] - frac[None, :, :])  # [N, N, 3]
    dist = np.abs(d).max(-1)
    dist[numbers[:, None] != numbers[None, :]] = np.inf
    perm = np.argmin(dist, axis=1)
    if np.any(dist[np.arange(len(frac)), perm] > SYMPREC * 10):
        return None
    if len(set(perm.tolist())) != len(perm):
        return None
    return perm


@dataclass
class SymmetryConstraints:
    """The free parameters of one structure under one group of symmetry operations (module docstring).

    Attributes
    ----------
    spacegroup, number
        The group's symbol (as given, or spglib's) and international number.
    rotations, translations
        The operations ``x → R x + t`` in the structure's own fractional basis, ``[K, 3, 3]``, ``[K, 3]``.
    reference
        Fractional coordinates ``[N, 3]`` the free parameters are measured from (the structure's own,
        symmetrised).
    basis
        ``[3N, P]``: ``frac = reference + (basis @ p).reshape(N, 3)``.
    names
        Name of each free parameter: ``"x(O2)"`` (coordinate x of the second oxygen site).
    labels
        Per atom, the label of its site (orbit): ``"La1"``, ``"O1"``, ``"O2"``.
    orbits
        Atom indices of each site (orbit of equivalent atoms), in order of first appearance.
    length_groups, angle_groups
        Indices (0–2) of a, b, c that must stay equal; of α, β, γ that may change, grouped by equality
        (an angle in no group is fixed by the lattice system).
    """

    spacegroup: str
    number: int
    rotations: np.ndarray
    translations: np.ndarray
    reference: np.ndarray
    basis: np.ndarray
    names: list[str]
    labels: list[str]
    orbits: list[list[int]]
    length_groups: list[list[int]]
    angle_groups: list[list[int]]
    lattice_matrix: np.ndarray
    _member_ops: list[int] = field(default_factory=list, repr=False)

    @property
    def n_free(self) -> int:
        """Number of free position parameters."""
        return int(self.basis.shape[1])

    # ---- positions ------------------------------------------------------------------------------
    def positions(self, p: np.ndarray) -> np.ndarray:
        """Fractional coordinates ``[N, 3]`` for free parameters ``p`` ``[P]``."""
        return self.reference + (self.basis @ np.asarray(p, dtype=float)).reshape(-1, 3)

    def parameters(self, frac: np.ndarray) -> np.ndarray:
        """The free parameters closest (least squares, periodic) to fractional coordinates ``frac``."""
        if self.n_free == 0:
            return np.zeros(0)
        d = _wrap(np.asarray(frac, dtype=float) - self.reference).reshape(-1)
        return np.linalg.lstsq(self.basis, d, rcond=None)[0]

    def symmetrised(self, structure: Structure) -> Structure:
        """``structure`` projected onto the constrained positions (same lattice, species, order)."""
        frac = self.positions(self.parameters(structure.frac_coords))
        return Structure(
            structure.lattice,
            structure.species,
            frac,
            to_unit_cell=True,
            site_properties=structure.site_properties or None,
        )

    def deviation(self, structure: Structure) -> float:
        """Largest distance (Å) of an atom of ``structure`` from its symmetrised position."""
        d = _wrap(np.asarray(structure.frac_coords) - self.symmetrised(structure).frac_coords)
        return float(np.abs(d @ np.asarray(structure.lattice.matrix)).max()) if len(structure) else 0.0

    def random_displacement(self, rng: np.random.Generator, rms: float, lattice: np.ndarray) -> np.ndarray:
        """Free parameters of a random direction whose RMS atomic displacement (Å) is ``rms``."""
        if self.n_free == 0:
            return np.zeros(0)
        p = rng.normal(size=self.n_free)
        cart = (self.basis @ p).reshape(-1, 3) @ lattice
        size = float(np.sqrt((cart**2).sum(-1).mean()))
        return p * (rms / size) if size > 0 else p

    def torch_projector(self, lattice: np.ndarray) -> SymmetricPositions:
        """The differentiable map the gradient proposals apply to Cartesian positions (see
        :class:`SymmetricPositions`)."""
        return SymmetricPositions(self, np.asarray(lattice, dtype=float))

    # ---- ADPs -------------------------------------------------------------------------------------
    def adp_basis(self, orbit: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """The Uij (CIF convention) an orbit's first atom may have, and every member's transform.

        Returns ``(basis [6, k], transforms)``: the first atom's six Uij (u11, u22, u33, u12, u13, u23)
        are ``basis @ q`` for k free values ``q``; member ``m`` of the orbit has
        ``U_m = M U M^T`` with ``M = transforms[m]`` (``N^-1 R N``, ``N`` the reciprocal lengths).
        """
        rep = self.orbits[orbit][0]
        lat = np.asarray(self.lattice_matrix)
        recip = np.linalg.norm(np.linalg.inv(lat).T, axis=1)  # |a*|, |b*|, |c*|
        n, n_inv = np.diag(recip), np.diag(1.0 / recip)
        rows = []
        for k in self._stabiliser(rep):
            m = n_inv @ self.rotations[k] @ n
            rows.append(_sym_op_matrix(m) - np.eye(6))
        basis = _echelon(_null_space(np.vstack(rows) if rows else np.zeros((0, 6))))
        transforms = [n_inv @ self.rotations[self._member_ops[a]] @ n for a in self.orbits[orbit]]
        return basis, transforms

    def _stabiliser(self, atom: int) -> list[int]:
        frac = self.reference
        out = []
        for k, (r, t) in enumerate(zip(self.rotations, self.translations, strict=True)):
            if np.abs(_wrap(r @ frac[atom] + t - frac[atom])).max() < SYMPREC * 10:
                out.append(k)
        return out


def _sym_op_matrix(m: np.ndarray) -> np.ndarray:
    """The 6×6 matrix of ``U → M U M^T`` on the six independent Uij (pdffit2 order)."""
    out = np.zeros((6, 6))
    for col, (a, b) in enumerate(_U_INDEX):
        u = np.zeros((3, 3))
        u[a, b] = u[b, a] = 1.0
        v = m @ u @ m.T
        out[:, col] = [v[i, j] for i, j in _U_INDEX]
    return out


class SymmetricPositions:
    """Cartesian positions → the nearest positions the symmetry allows, differentiably.

    ``pos → ref + P (pos − ref)`` with ``P`` the orthogonal projector (Cartesian metric of the start's
    lattice) onto the allowed displacements and the difference taken to the nearest periodic image: an
    Adam step on unconstrained displacements then moves only the free parameters, and the proposals
    stay in the group. Used through the single hook of
    :class:`~aso_workflows.optimizers.aso.proposal.GradientProposer` (its ``constraint``).
    """

    def __init__(self, constraints: SymmetryConstraints, lattice: np.ndarray) -> None:
        self.constraints = constraints
        cart_basis = np.einsum("ipk,pj->ijk", constraints.basis.reshape(-1, 3, constraints.n_free), lattice)
        flat = cart_basis.reshape(-1, constraints.n_free)
        q = np.linalg.qr(flat)[0] if constraints.n_free else np.zeros((flat.shape[0], 0))
        self._q = q
        self._ref = constraints.reference @ lattice
        self._lattice = np.array(lattice, dtype=float)  # writable: torch refuses read-only arrays

    def positions(self, pos: torch.Tensor, lattice: torch.Tensor) -> torch.Tensor:
        """Project Cartesian positions ``[B, N, 3]`` (cells ``[B, 3, 3]``) onto the symmetric ones."""
        import torch

        q = torch.as_tensor(self._q, dtype=pos.dtype, device=pos.device)
        ref = torch.as_tensor(self._ref, dtype=pos.dtype, device=pos.device)
        lat0 = torch.as_tensor(self._lattice, dtype=pos.dtype, device=pos.device)
        # nearest image of pos − ref in the start's cell (round has no gradient: the map stays linear)
        frac = (pos - ref) @ torch.linalg.inv(lat0)
        d = (frac - torch.round(frac)) @ lat0
        flat = d.reshape(d.shape[0], -1)
        proj = (flat @ q) @ q.T
        out = ref + proj.reshape(d.shape)
        # a strained cell (proposal.optimise_lattice) carries the same fractional coordinates
        return (out @ torch.linalg.inv(lat0)) @ lattice

    def penalty(self, pos: torch.Tensor, lattice: torch.Tensor) -> torch.Tensor:
        """No extra penalty (restraints add theirs)."""
        return pos.new_zeros(pos.shape[0])


# ---- construction --------------------------------------------------------------------------------------
def _numbers(structure: Structure) -> np.ndarray:
    return np.array([site.specie.Z for site in structure])


def _spglib() -> Any:
    """spglib, untyped (its stubs declare Optional results and list arguments that numpy arrays fill)."""
    import spglib
    import spglib.error

    spglib.error.OLD_ERROR_HANDLING = False  # raise instead of returning None (and warning on each call)
    return spglib


def _own_operations(structure: Structure, symprec: float) -> tuple[np.ndarray, np.ndarray, str, int]:
    spglib = _spglib()

    cell = (np.asarray(structure.lattice.matrix), np.asarray(structure.frac_coords), _numbers(structure))
    try:
        data = spglib.get_symmetry_dataset(cell, symprec=symprec)
    except Exception as exc:  # spglib.error.SpglibError
        raise InputError("symmetry", f"spglib found no symmetry of the structure ({exc})") from None
    return (
        np.asarray(data.rotations),
        np.asarray(data.translations),
        str(data.international),
        int(data.number),
    )


def _norm_symbol(symbol: str) -> str:
    return symbol.replace(" ", "").replace("_", "").lower()


def _named_operations(structure: Structure, spacegroup: str | int) -> tuple[np.ndarray, np.ndarray, str, int]:
    """The operations of the named group, in a setting and at an origin where they are symmetries of
    ``structure`` (module docstring)."""
    spglib = _spglib()

    want = str(spacegroup).strip()
    halls = []
    for hall in range(1, 531):
        t = spglib.get_spacegroup_type(hall)
        names = {
            _norm_symbol(t.international),
            _norm_symbol(t.international_short),
            _norm_symbol(t.international_full),
        }
        if _norm_symbol(want) in names or (want.isdigit() and int(want) == t.number):
            halls.append((hall, t))
    if not halls:
        raise InputError(
            "symmetry", f"unknown space group {want!r}; expected a symbol such as 'Pbnm' or a number"
        )
    frac = np.asarray(structure.frac_coords)
    numbers = _numbers(structure)
    grid = [np.array(s) / 8.0 for s in itertools.product(range(8), repeat=3)]
    for hall, t in halls:
        ops = spglib.get_symmetry_from_database(hall)
        rots, trans = np.asarray(ops["rotations"]), np.asarray(ops["translations"], dtype=float)
        for shift in grid:
            # the group placed with its origin at `shift`: x → R (x − s) + t + s
            moved = trans + shift - np.einsum("kij,j->ki", rots, shift)
            if all(_site_map(r, tr, frac, numbers) is not None for r, tr in zip(rots, moved, strict=True)):
                return rots, _wrap(moved), t.international.replace(" ", ""), int(t.number)
    raise InputError(
        "symmetry",
        f"space group {want} (in none of its settings, at no origin on a 1/8 grid) maps the start "
        "structure onto itself; give the start in a cell of that group (e.g. ideal positions in the "
        "distorted cell)",
    )


def symmetry_constraints(
    structure: Structure, spacegroup: str | int | None = None, symprec: float = SYMPREC
) -> SymmetryConstraints:
    """The :class:`SymmetryConstraints` of ``structure`` in its own space group or in ``spacegroup``.

    Raises
    ------
    InputError
        On ``symmetry``: an unknown group, or one that is not a symmetry of the structure.
    """
    if spacegroup is None:
        rots, trans, symbol, number = _own_operations(structure, symprec)
    else:
        rots, trans, symbol, number = _named_operations(structure, spacegroup)
    frac = np.asarray(structure.frac_coords, dtype=float)
    numbers = _numbers(structure)
    perms = []
    for r, t in zip(rots, trans, strict=True):
        perm = _site_map(r, t, frac, numbers)
        if perm is None:
            raise InputError("symmetry", f"an operation of {symbol} does not map the structure onto itself")
        perms.append(perm)
    n = len(structure)
    orbits, member_op = _orbits(perms, n)
    # symmetrise the reference: each member exactly the image of its orbit's first atom
    ref = frac.copy()
    for orbit in orbits:
        rep = orbit[0]
        for j in orbit:
            k = member_op[j]
            img = rots[k] @ frac[rep] + trans[k]
            ref[j] = frac[j] + _wrap(img - frac[j])
    columns, names, labels = [], [], [""] * n
    count: dict[str, int] = {}
    for orbit in orbits:
        rep = orbit[0]
        element = structure[rep].specie.symbol
        count[element] = count.get(element, 0) + 1
        label = f"{element}{count[element]}"
        for j in orbit:
            labels[j] = label
        stab = [k for k, perm in enumerate(perms) if perm[rep] == rep]
        cond = np.vstack([rots[k] - np.eye(3) for k in stab]) if stab else np.zeros((0, 3))
        free = _echelon(_null_space(cond))  # [3, m]
        for c in range(free.shape[1]):
            col = np.zeros((n, 3))
            for j in orbit:
                col[j] = rots[member_op[j]] @ free[:, c]
            columns.append(col.reshape(-1))
            axis = "xyz"[int(np.argmax(np.abs(free[:, c])))]
            names.append(f"{axis}({label})")
    basis = np.stack(columns, axis=1) if columns else np.zeros((3 * n, 0))
    basis, names = _fix_floating_origin(basis, names, rots, n)
    lengths, angles = _lattice_groups(rots, np.asarray(structure.lattice.matrix))
    return SymmetryConstraints(
        spacegroup=symbol,
        number=number,
        rotations=rots,
        translations=trans,
        reference=ref,
        basis=basis,
        names=names,
        labels=labels,
        orbits=orbits,
        length_groups=lengths,
        angle_groups=angles,
        lattice_matrix=np.asarray(structure.lattice.matrix, dtype=float),
        _member_ops=member_op,
    )


def _orbits(perms: list[np.ndarray], n: int) -> tuple[list[list[int]], list[int]]:
    """The orbits of the ``n`` sites under the site permutations ``perms`` (each sorted, in the order
    of their first site), and for each site the index of an operation that maps its orbit's first site
    onto it."""
    orbit_of = [-1] * n
    orbits: list[list[int]] = []
    member_op = [0] * n
    for i in range(n):
        if orbit_of[i] >= 0:
            continue
        members = []
        for k, perm in enumerate(perms):
            j = int(perm[i])
            if orbit_of[j] < 0:
                orbit_of[j] = len(orbits)
                member_op[j] = k
                members.append(j)
        orbits.append(sorted(members))
    return orbits, member_op


def _fix_floating_origin(
    basis: np.ndarray, names: list[str], rots: np.ndarray, n: int
) -> tuple[np.ndarray, list[str]]:
    """Drop one parameter per direction along which the whole structure may slide (polar groups such
    as P6₃mc: moving every atom along c changes nothing), as PDFgui fixes Cd z and refines Se z."""
    slide = _null_space(np.vstack([r - np.eye(3) for r in rots]))  # [3, k] invariant translations
    keep = list(range(basis.shape[1]))
    for c in range(slide.shape[1]):
        uniform = np.tile(slide[:, c], n)
        for k in keep:
            if abs(float(basis[:, k] @ uniform)) > 1e-9:
                keep.remove(k)
                break
    return basis[:, keep], [names[k] for k in keep]


def _lattice_groups(rots: np.ndarray, matrix: np.ndarray) -> tuple[list[list[int]], list[list[int]]]:
    """Which of a, b, c are tied and which angles are free under the operations' point group.

    The metric ``G = A Aᵀ`` must satisfy ``Rᵀ G R = G``; the null space of that linear condition on
    (G11, G22, G33, G12, G13, G23) says which lengths move together (equal components in every null
    vector) and which angles are free (a null vector with zero diagonal and that off-diagonal non-zero).
    """
    index = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))
    rows = []
    for r in np.unique(rots, axis=0):
        m = np.zeros((6, 6))
        for col, (a, b) in enumerate(index):
            g = np.zeros((3, 3))
            g[a, b] = g[b, a] = 1.0
            v = r.T @ g @ r
            m[:, col] = [v[i, j] for i, j in index]
        rows.append(m - np.eye(6))
    null = _null_space(np.vstack(rows))  # [6, k]
    lengths: list[list[int]] = []
    for i in range(3):
        for group in lengths:
            if np.allclose(null[i], null[group[0]], atol=1e-8):
                group.append(i)
                break
        else:
            lengths.append([i])
    # angles α (b,c) β (a,c) γ (a,b): G23, G13, G12
    off = {0: 5, 1: 4, 2: 3}
    diag_free = null[:3]
    # null vectors with zero diagonal: the part of the null space orthogonal to the diagonal directions
    if null.shape[1]:
        sub = _null_space(diag_free) if diag_free.size else np.eye(null.shape[1])
        pure = null @ sub
    else:
        pure = np.zeros((6, 0))
    angles: list[list[int]] = []
    for ang in range(3):
        row = pure[off[ang]]
        if pure.shape[1] == 0 or np.abs(row).max() < 1e-8:
            continue
        for group in angles:
            if np.allclose(row, pure[off[group[0]]], atol=1e-8):
                group.append(ang)
                break
        else:
            angles.append([ang])
    del matrix  # the groups depend on the operations only
    return lengths, angles
