"""One supercell per host, chosen by its minimum periodic-image distance under an atom cap."""

from __future__ import annotations

import itertools

import numpy as np
from pydantic import BaseModel
from pymatgen.core import Lattice, Structure

from carrierflow.structures.sources import StructureError
from carrierflow.structures.symmetry import LENGTH_TOL_A, tolerant_rank

_SHORT_VECTORS = np.array([n for n in itertools.product(range(-2, 3), repeat=3) if any(n)])


class SupercellChoice(BaseModel):
    """The supercell shared by a host's perfect and defect cells."""

    matrix: list[list[int]]
    natoms: int
    min_image_distance_A: float


def min_image_distance(lattice: Lattice) -> float:
    """Length of the shortest non-zero lattice vector: the distance between periodic images."""
    reduced = lattice.get_lll_reduced_lattice().matrix
    return float(np.min(np.linalg.norm(_SHORT_VECTORS @ reduced, axis=1)))


def _hermite_normal_forms(det: int, smallest_a: int = 1) -> np.ndarray:
    """Lower-triangular Hermite normal forms of determinant ``det`` whose first diagonal
    element is at least ``smallest_a``, shape (n, 3, 3)."""
    blocks = []
    for a in range(smallest_a, det + 1):
        if det % a:
            continue
        for c in range(1, det // a + 1):
            if (det // a) % c:
                continue
            f = det // (a * c)
            b, d, e = (g.ravel() for g in np.meshgrid(range(a), range(a), range(c), indexing="ij"))
            forms = np.zeros((len(b), 3, 3), dtype=int)
            forms[:, 0, 0], forms[:, 1, 1], forms[:, 2, 2] = a, c, f
            forms[:, 1, 0], forms[:, 2, 0], forms[:, 2, 1] = b, d, e
            blocks.append(forms)
    return np.concatenate(blocks) if blocks else np.zeros((0, 3, 3), dtype=int)


def _pairwise_reduce(vectors: np.ndarray, rounds: int = 4) -> np.ndarray:
    """Shorten many bases at once (n, 3, 3) by integer pairwise reduction; same lattices."""
    reduced = vectors.astype(float)
    for _ in range(rounds):
        for i, j in itertools.permutations(range(3), 2):
            overlap = np.einsum("nx,nx->n", reduced[:, i], reduced[:, j])
            norm = np.einsum("nx,nx->n", reduced[:, j], reduced[:, j])
            reduced[:, i] -= np.rint(overlap / norm)[:, None] * reduced[:, j]
    return reduced


def choose_supercell(
    structure: Structure,
    min_image_distance_A: float = 10.0,
    max_atoms: int = 250,
    options: tuple[str, str] = ("--max-atoms", "--min-image-distance"),
) -> SupercellChoice:
    """The smallest supercell whose periodic images are at least ``min_image_distance_A`` apart.

    All supercells up to ``max_atoms`` are searched in order of size (Hermite normal forms),
    so the cell is the cheapest that reaches the distance; among equally small ones the one
    with the largest image distance wins. pymatgen-analysis-defects' ``get_sc_fromstruct``
    optimises cubicity instead, which can cost twice the atoms for the same distance.

    The choice does not depend on rounding: distances within ``LENGTH_TOL_A`` count as equal
    (symmetry-equivalent supercells have equal distances up to the host's noise), the tie goes
    to the lexicographically smallest Hermite normal form, and the matrix is the canonical
    reduced basis of that supercell (:func:`canonical_basis`). Two relaxations of one host
    that differ in the 6th digit get the same matrix. ``options``: the cap's and the
    distance's command-line options, named when no supercell fits.
    """
    natoms = len(structure)
    target = min_image_distance_A - 1e-6
    # points at least d apart need a volume of d^3/sqrt(2) each (the fcc packing)
    smallest = max(1, int(min_image_distance_A**3 / np.sqrt(2) / structure.volume))
    for det in range(smallest, max_atoms // natoms + 1):
        # the first supercell vector is a multiple of the first lattice vector
        forms = _hermite_normal_forms(det, int(np.ceil(target / structure.lattice.abc[0])))
        vectors = _pairwise_reduce(forms @ structure.lattice.matrix)
        # any short combination of the basis rules a form out before the exact (LLL) check
        short = np.linalg.norm(np.einsum("kj,njx->nkx", _SHORT_VECTORS[:62], vectors), axis=2)
        bound = short.min(axis=1)
        reaching: list[tuple[float, np.ndarray]] = []
        best = -np.inf
        # the short combinations bound each form's image distance from above: check the most
        # promising forms first and stop once no remaining bound can reach the best found
        for index in np.argsort(-bound, kind="stable"):
            if bound[index] < target or bound[index] < best - LENGTH_TOL_A:
                break
            distance = min_image_distance(Lattice(vectors[index]))
            if distance >= target:
                reaching.append((distance, forms[index]))
                best = max(best, distance)
        if reaching:
            tied = [form for distance, form in reaching if distance >= best - LENGTH_TOL_A]
            hnf = min(tied, key=lambda f: tuple(f[np.tril_indices(3)]))
            return SupercellChoice(
                matrix=canonical_basis(hnf, structure.lattice).tolist(),
                natoms=det * natoms,
                min_image_distance_A=round(best, 4),
            )
    raise StructureError(
        f"{structure.composition.reduced_formula}: no supercell of at most {max_atoms} atoms "
        f"reaches a minimum image distance of {min_image_distance_A:g} A "
        f"(raise {options[0]} or lower {options[1]})"
    )


def canonical_basis(hnf: np.ndarray, lattice: Lattice) -> np.ndarray:
    """The supercell matrix of the superlattice ``hnf`` with the shortest basis vectors (compact
    cells), chosen without rounding noise: candidate vectors are ranked by length with ties
    within ``LENGTH_TOL_A`` broken by their integer coordinates, each with its first non-zero
    coordinate positive, and the first three in that order that span the superlattice form
    the basis (right-handed: the last one is negated if needed)."""
    det = round(abs(np.linalg.det(hnf)))
    reduced = Lattice(hnf @ lattice.matrix).get_lll_reduced_lattice().matrix
    start = np.rint(reduced @ np.linalg.inv(lattice.matrix)).astype(int)
    # every vector up to the third successive minimum has coordinates -2..2 in a reduced basis
    integer = np.unique(_SHORT_VECTORS @ start, axis=0)
    first = integer[np.arange(len(integer)), np.argmax(integer != 0, axis=1)]
    integer = integer[first > 0]
    ranks = tolerant_rank(np.linalg.norm(integer @ lattice.matrix, axis=1))
    order = sorted(range(len(integer)), key=lambda i: (ranks[i], *integer[i]))
    for i, j, k in itertools.combinations(order, 3):
        matrix = integer[[i, j, k]]
        if round(abs(np.linalg.det(matrix))) == det:
            if np.linalg.det(matrix) < 0:
                matrix[2] = -matrix[2]
            return matrix
    raise AssertionError("a reduced basis spans its lattice")  # pragma: no cover


def make_supercell(structure: Structure, choice: SupercellChoice) -> Structure:
    """The perfect supercell of ``structure`` for a chosen matrix."""
    return structure.make_supercell(choice.matrix, in_place=False)
