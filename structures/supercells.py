"""One supercell per host, chosen by its minimum periodic-image distance under an atom cap."""

from __future__ import annotations

import itertools

import numpy as np
from pydantic import BaseModel
from pymatgen.core import Lattice, Structure

from carrierflow.structures.sources import StructureError

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
    structure: Structure, min_image_distance_A: float = 10.0, max_atoms: int = 250
) -> SupercellChoice:
    """The smallest supercell whose periodic images are at least ``min_image_distance_A`` apart.

    All supercells up to ``max_atoms`` are searched in order of size (Hermite normal forms),
    so the cell is the cheapest that reaches the distance; among equally small ones the one
    with the largest image distance wins. pymatgen-analysis-defects' ``get_sc_fromstruct``
    optimises cubicity instead, which can cost twice the atoms for the same distance.
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
        best = None
        # the short combinations bound each form's image distance from above: check the most
        # promising forms first and stop once no remaining bound can beat the best found
        for index in np.argsort(-bound, kind="stable"):
            if bound[index] < target or (best is not None and bound[index] <= best[1]):
                break
            distance = min_image_distance(Lattice(vectors[index]))
            if distance >= target and (best is None or distance > best[1]):
                best = (forms[index], distance)
        if best is not None:
            matrix = _reduce_matrix(best[0], structure.lattice)
            return SupercellChoice(
                matrix=matrix.tolist(), natoms=det * natoms, min_image_distance_A=round(best[1], 4)
            )
    raise StructureError(
        f"{structure.composition.reduced_formula}: no supercell of at most {max_atoms} atoms "
        f"reaches a minimum image distance of {min_image_distance_A:g} A "
        "(raise --max-atoms or lower --min-image-distance)"
    )


def _reduce_matrix(hnf: np.ndarray, lattice: Lattice) -> np.ndarray:
    """An equivalent supercell matrix whose lattice vectors are LLL-reduced (compact cells)."""
    super_lattice = Lattice(hnf @ lattice.matrix)
    reduced = super_lattice.get_lll_reduced_lattice().matrix
    matrix = np.rint(reduced @ np.linalg.inv(lattice.matrix)).astype(int)
    if np.linalg.det(matrix) < 0:
        matrix = -matrix
    return matrix


def make_supercell(structure: Structure, choice: SupercellChoice) -> Structure:
    """The perfect supercell of ``structure`` for a chosen matrix."""
    return structure.make_supercell(choice.matrix, in_place=False)
