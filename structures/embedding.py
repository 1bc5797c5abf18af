"""A defect relaxed in a small supercell, carried into a larger one.

A structure search is cheap in a small cell and the verdict needs a large one (measured here:
7net-l3i5 vacancy E_f in a 36-atom Li5In4 cell within 0.03 eV of a 162-atom cell's, but one
relaxation of a 162-atom cell costs about five of the small one). The large cell's relaxation
then starts from the small cell's answer: every atom within half the small cell's image
distance of the defect moves as its counterpart moved in the small cell (farther atoms feel the
small cell's periodic images, so their displacement is not the defect's own), and the defect
itself (the interstitial atom, or the vacancy's missing atom) sits where it relaxed.
"""

from __future__ import annotations

import numpy as np
from pymatgen.core import Lattice, Structure

from carrierflow.structures.defects import DefectCell
from carrierflow.structures.supercells import min_image_distance

# counterparts in the two cells sit at the same place relative to the defect: to rounding
MATCH_TOLERANCE_A = 0.05


def _minimum_image(lattice: Lattice, vectors: np.ndarray) -> np.ndarray:
    """Cartesian vectors brought to their shortest periodic image (reduced cells, where the
    nearest of the 27 neighbouring images is the shortest)."""
    frac = lattice.get_fractional_coords(vectors)
    frac -= np.round(frac)
    shifts = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)])
    images = (frac[:, None, :] + shifts[None, :, :]) @ lattice.matrix
    best = np.argmin(np.linalg.norm(images, axis=2), axis=1)
    return images[np.arange(len(frac)), best]


def embed_relaxation(small: DefectCell, relaxed: Structure, large: DefectCell) -> Structure:
    """The large defect cell with the displacements of the small cell's relaxation.

    ``small`` and ``large`` are one candidate placed in two supercells of the same host
    (:func:`carrierflow.structures.defects.build_defect_cell`); ``relaxed`` is the small cell's
    relaxed structure, its atoms in the order of ``small.structure``.
    """
    if len(relaxed) != len(small.structure):
        raise ValueError(
            f"{small.name}: the relaxed small cell has {len(relaxed)} atoms, its defect cell "
            f"{len(small.structure)}"
        )
    radius = 0.5 * min_image_distance(small.structure.lattice)
    small_lattice, large_lattice = small.structure.lattice, large.structure.lattice
    moved = _minimum_image(small_lattice, relaxed.cart_coords - small.structure.cart_coords)
    # where every atom of the large cell sits relative to its defect
    around = _minimum_image(large_lattice, large.structure.cart_coords - np.array(large.site_cart))
    near = np.linalg.norm(around, axis=1) < radius
    # the same places relative to the small cell's defect, matched to its atoms periodically
    targets = small_lattice.get_fractional_coords(np.array(small.site_cart) + around[near])
    distances = small_lattice.get_all_distances(targets, small.structure.frac_coords)
    matches = np.argmin(distances, axis=1)
    positions = large.structure.cart_coords.copy()
    for index, match, distance in zip(
        np.flatnonzero(near), matches, distances[np.arange(len(matches)), matches], strict=True
    ):
        site = large.structure[int(index)]
        if distance > MATCH_TOLERANCE_A or small.structure[int(match)].specie != site.specie:
            raise ValueError(
                f"{small.name}: no counterpart in the small cell of the large cell's "
                f"{site.specie.symbol} at {around[index].round(3).tolist()} A from the defect"
            )
        positions[index] += moved[match]
    return Structure(
        large_lattice,
        large.structure.species,
        positions,
        coords_are_cartesian=True,
        to_unit_cell=True,
    )
