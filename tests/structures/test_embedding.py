"""A defect relaxed in a small cell carried into a large one: near atoms move as in the small
cell, far atoms stay perfect, the defect sits where it relaxed."""

import numpy as np
import pytest

from carrierflow.structures.defects import build_defect_cell, find_defects
from carrierflow.structures.embedding import embed_relaxation
from carrierflow.structures.sources import load_fixture
from carrierflow.structures.supercells import (
    choose_supercell,
    make_supercell,
    min_image_distance,
)


def _cells(kind: str, distances=(7.0, 11.0)):
    host = load_fixture("Cu")[0].get_primitive_structure()
    candidate = next(c for c in find_defects(host, "Cu") if c.kind == kind)
    cells = []
    for distance in distances:
        choice = choose_supercell(host, distance, 500)
        cells.append(
            build_defect_cell(host, choice.matrix, make_supercell(host, choice), candidate)
        )
    return cells


def _relative(structure, site):
    vectors = structure.cart_coords - np.array(site)
    frac = structure.lattice.get_fractional_coords(vectors)
    return structure.lattice.get_cartesian_coords(frac - np.round(frac))


def _relax_radially(cell, shift_A: float, within_A: float = 3.0, defect_move=(0.0, 0.0, 0.0)):
    """A fake relaxation: neighbours of the defect pushed along their bond to it by
    ``shift_A``, the interstitial (the last atom) moved by ``defect_move``."""
    relaxed = cell.structure.copy()
    for index, vector in enumerate(_relative(relaxed, cell.site_cart)):
        distance = np.linalg.norm(vector)
        if 0.1 < distance < within_A:
            relaxed.translate_sites([index], vector / distance * shift_A, frac_coords=False)
        elif distance <= 0.1:
            relaxed.translate_sites([index], defect_move, frac_coords=False)
    return relaxed


def test_a_vacancys_neighbours_move_in_the_large_cell_as_they_moved_in_the_small_one():
    small, large = _cells("vacancy")
    assert len(large.structure) > 2 * len(small.structure)
    embedded = embed_relaxation(small, _relax_radially(small, -0.1), large)
    assert len(embedded) == len(large.structure)
    before = _relative(large.structure, large.site_cart)
    after = _relative(embedded, large.site_cart)
    distance = np.linalg.norm(before, axis=1)
    moved = np.linalg.norm(after - before, axis=1)
    near = distance < 3.0
    assert near.sum() == 12  # fcc: the vacancy's 12 nearest neighbours
    assert moved[near] == pytest.approx(0.1, abs=1e-9)
    # pulled in, towards the vacancy
    assert np.all(np.linalg.norm(after[near], axis=1) < distance[near])
    assert np.all(moved[~near] < 1e-9)


def test_an_interstitial_sits_where_it_relaxed_in_the_small_cell():
    small, large = _cells("interstitial")
    relaxed = _relax_radially(small, 0.05, defect_move=(0.2, 0.0, 0.0))
    embedded = embed_relaxation(small, relaxed, large)
    # the interstitial is the last atom of both cells
    shift = embedded.cart_coords[-1] - large.structure.cart_coords[-1]
    assert shift == pytest.approx([0.2, 0.0, 0.0], abs=1e-9)
    after = _relative(embedded, large.site_cart)
    before = _relative(large.structure, large.site_cart)
    pushed = (np.linalg.norm(before, axis=1) > 0.1) & (np.linalg.norm(before, axis=1) < 3.0)
    assert pushed.any()
    assert np.linalg.norm(after[pushed] - before[pushed], axis=1) == pytest.approx(0.05, abs=1e-9)


def test_atoms_beyond_half_the_small_cells_image_distance_keep_their_perfect_places():
    small, large = _cells("vacancy")
    # every atom of the small cell moved: only those within half its image distance count
    relaxed = small.structure.copy()
    relaxed.translate_sites(list(range(len(relaxed))), [0.05, 0.0, 0.0], frac_coords=False)
    embedded = embed_relaxation(small, relaxed, large)
    half = 0.5 * min_image_distance(small.structure.lattice)
    distance = np.linalg.norm(_relative(large.structure, large.site_cart), axis=1)
    delta = embedded.frac_coords - large.structure.frac_coords
    moved = np.linalg.norm(embedded.lattice.get_cartesian_coords(delta - np.round(delta)), axis=1)
    assert np.all(moved[distance > half + 1e-6] < 1e-9)
    assert np.all(moved[distance < 0.9 * half] == pytest.approx(0.05, abs=1e-9))


def test_a_relaxed_cell_of_another_defect_is_refused():
    small, large = _cells("vacancy")
    other, _ = _cells("interstitial")
    with pytest.raises(ValueError, match="atoms"):
        embed_relaxation(small, other.structure, large)
