import itertools

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from carrierflow.structures.sources import StructureError, load_fixture
from carrierflow.structures.supercells import choose_supercell, make_supercell, min_image_distance


def _brute_force_image_distance(lattice: Lattice) -> float:
    vectors = [
        np.dot(n, lattice.matrix) for n in itertools.product(range(-3, 4), repeat=3) if any(n)
    ]
    return float(min(np.linalg.norm(v) for v in vectors))


def test_min_image_distance_of_simple_lattices():
    assert min_image_distance(Lattice.cubic(3.0)) == pytest.approx(3.0)
    fcc = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.0), ["Cu"], [[0, 0, 0]])
    assert min_image_distance(fcc.get_primitive_structure().lattice) == pytest.approx(4.0 / 2**0.5)


@pytest.mark.parametrize("name", ["Li5In4", "Li3In2", "Li", "Cu3Au"])
def test_supercell_reaches_the_distance_and_records_it(name):
    host = load_fixture(name)[0].get_primitive_structure()
    choice = choose_supercell(host, 10.0, 250)
    supercell = make_supercell(host, choice)
    assert len(supercell) == choice.natoms
    assert abs(round(np.linalg.det(choice.matrix))) * len(host) == choice.natoms
    real = _brute_force_image_distance(supercell.lattice)
    assert real >= 10.0
    assert choice.min_image_distance_A == pytest.approx(real, abs=1e-3)


@pytest.mark.parametrize("name", ["Li5In4", "Li3In2", "Cu3Au"])
def test_supercell_is_no_larger_than_the_best_diagonal_one(name):
    host = load_fixture(name)[0].get_primitive_structure()
    choice = choose_supercell(host, 10.0, 400)
    diagonal = min(
        np.prod(n) * len(host)
        for n in itertools.product(range(1, 6), repeat=3)
        if _brute_force_image_distance(Lattice(np.diag(n) @ host.lattice.matrix)) >= 10.0
    )
    assert choice.natoms <= diagonal


def test_supercell_cap_too_small_is_a_clear_error():
    host = load_fixture("Li5In4")[0]
    with pytest.raises(StructureError, match="no supercell of at most 40 atoms reaches"):
        choose_supercell(host, 10.0, 40)
