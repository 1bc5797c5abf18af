"""Discrete choices that rounding cannot change: a host strained and shaken by noise (a
relaxation's last digits, another CPU's kernels) gets the same supercell, candidates, names,
multiplicities and representatives."""

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from carrierflow.structures.sources import load_fixture
from carrierflow.structures.supercells import canonical_basis
from carrierflow.structures.symmetry import symmetrize, tolerant_rank
from carrierflow.workflows.jobs import plan_defects
from carrierflow.workflows.schemas import DefectSettings


def _noisy(structure: Structure, rng, relative: float = 1e-5) -> Structure:
    """The structure with its lattice strained and its atoms moved by ``relative`` noise."""
    strain = np.eye(3) + relative * rng.normal(size=(3, 3))
    shaken = structure.frac_coords + relative * rng.normal(size=structure.frac_coords.shape)
    return Structure(Lattice(structure.lattice.matrix @ strain), structure.species, shaken)


def _choices(plan) -> dict:
    return {
        "supercell": plan.choice.matrix,
        "natoms": plan.choice.natoms,
        "candidates": [(c.name, c.kind, c.multiplicity) for c in plan.candidates],
    }


@pytest.mark.parametrize(
    ("name", "species"),
    [("Li5In4", "Li"), ("Li3In2", "Li"), ("Li", "Li"), ("Cu3Au", "Cu"), ("Cu", "Cu")],
)
def test_a_host_with_noise_gets_the_same_supercell_candidates_and_representatives(name, species):
    given = load_fixture(name)[0].get_primitive_structure()
    settings = DefectSettings(species=species, min_image_distance_A=10.0)
    reference = plan_defects(name, given, settings, given)
    rng = np.random.default_rng(19)
    for _ in range(6):
        plan = plan_defects(name, _noisy(given, rng), settings, given)
        assert _choices(plan) == _choices(reference)
        for got, want in zip(plan.candidates, reference.candidates, strict=True):
            # the same representative of each orbit, up to the noise itself
            distance = reference.host.lattice.get_all_distances(
                [got.frac_coords], [want.frac_coords]
            )[0, 0]
            assert distance < 1e-3, (got.name, got.frac_coords, want.frac_coords)
        # so the rattled starts put the same atoms at the same places (periodic images count)
        for got, want in zip(plan.starts, reference.starts, strict=True):
            delta = got.frac_coords - want.frac_coords
            moved = want.lattice.get_cartesian_coords(delta - np.round(delta))
            assert np.linalg.norm(moved, axis=1).max() < 1e-3


def test_symmetrizing_removes_symmetry_breaking_noise_and_keeps_the_setting():
    given = load_fixture("Li5In4")[0]
    noisy = _noisy(given, np.random.default_rng(1))
    clean = symmetrize(noisy)
    assert len(clean) == len(given) and clean.species == given.species
    # the hexagonal cell is exactly hexagonal again, in the same setting and atom order
    assert clean.lattice.a == pytest.approx(clean.lattice.b, abs=1e-12)
    assert clean.lattice.gamma == pytest.approx(120, abs=1e-9)
    assert np.abs(clean.frac_coords - given.frac_coords).max() < 1e-4


def test_the_supercell_basis_does_not_depend_on_the_basis_it_starts_from():
    host = load_fixture("Cu3Au")[0]
    hnf = np.array([[2, 0, 0], [0, 2, 0], [0, 0, 2]])
    equivalent = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1]]) @ hnf  # same lattice, skewed basis
    assert (
        canonical_basis(hnf, host.lattice).tolist()
        == canonical_basis(equivalent, host.lattice).tolist()
    )
    matrix = canonical_basis(hnf, host.lattice)
    assert round(np.linalg.det(matrix)) == 8


def test_values_closer_than_the_tolerance_share_a_rank():
    assert tolerant_rank([1.0, 1.0 + 1e-7, 2.0, 1.0 - 1e-7]).tolist() == [0, 0, 1, 0]
    assert tolerant_rank([3.0, 1.0, 2.0]).tolist() == [2, 0, 1]
