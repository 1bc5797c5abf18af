import subprocess
import sys

import numpy as np
import pytest
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from carrierflow.structures.defects import (
    build_defect_cell,
    find_interstitials,
    find_vacancies,
    rattle_near,
)
from carrierflow.structures.sources import StructureError, load_fixture
from carrierflow.structures.supercells import choose_supercell, make_supercell


def _distinct_sites(structure, species):
    symmetrized = SpacegroupAnalyzer(structure, symprec=0.01).get_symmetrized_structure()
    return sum(1 for group in symmetrized.equivalent_sites if group[0].specie.symbol == species)


@pytest.mark.parametrize(
    ("name", "species", "distinct"),
    [("Li5In4", "Li", 3), ("Li3In2", "Li", 2), ("Li", "Li", 1), ("Cu3Au", "Cu", 1)],
)
def test_one_vacancy_per_symmetry_distinct_site(name, species, distinct):
    host = load_fixture(name)[0].get_primitive_structure()
    vacancies = find_vacancies(host, species)
    assert len(vacancies) == distinct == _distinct_sites(host, species)
    # the orbits of the vacancies cover every atom of the species exactly once
    assert sum(v.multiplicity for v in vacancies) == host.composition[species]
    assert len({v.name for v in vacancies}) == len(vacancies)


def test_a_one_atom_cell_vacancy_sees_its_periodic_neighbours():
    conventional = SpacegroupAnalyzer(load_fixture("Cu")[0]).get_conventional_standard_structure()
    fcc = conventional.get_primitive_structure()
    assert len(fcc) == 1
    (vacancy,) = find_vacancies(fcc, "Cu")
    # the nearest neighbour of an fcc site is an image of itself, a / sqrt(2) away
    assert vacancy.nearest_host_distance_A == pytest.approx(conventional.lattice.a / np.sqrt(2))


@pytest.mark.parametrize("name", ["Li5In4", "Li3In2", "Li"])
def test_interstitials_are_distinct_and_not_on_top_of_atoms(name):
    host = load_fixture(name)[0].get_primitive_structure()
    candidates = find_interstitials(host, "Li", min_distance_A=1.5)
    assert candidates
    for c in candidates:
        assert c.nearest_host_distance_A >= 1.5
        assert c.multiplicity == len(c.equivalent_frac_coords)
    # no two candidates share a site: their orbits are disjoint
    orbits = [np.array(c.equivalent_frac_coords) for c in candidates]
    for i, a in enumerate(orbits):
        for b in orbits[i + 1 :]:
            distances = host.lattice.get_all_distances(a, b)
            assert distances.min() > 0.3


def test_defect_cells_remove_or_add_one_atom_of_the_species():
    host = load_fixture("Li3In2")[0].get_primitive_structure()
    choice = choose_supercell(host, 10.0, 250)
    perfect = make_supercell(host, choice)
    for candidate in find_vacancies(host, "Li") + find_interstitials(host, "Li"):
        cell = build_defect_cell(host, choice.matrix, perfect, candidate)
        change = 1 if candidate.kind == "interstitial" else -1
        assert len(cell.structure) == len(perfect) + change
        assert cell.structure.composition["Li"] == perfect.composition["Li"] + change
        kept = [k for k, i in enumerate(cell.host_indices) if i is not None]
        mapped = [cell.host_indices[k] for k in kept]
        assert len(mapped) == len(perfect) + min(change, 0)
        assert np.allclose(cell.structure.frac_coords[kept], perfect.frac_coords[mapped])


def test_rattle_is_local_and_reproducible():
    host = load_fixture("Cu3Au")[0]
    perfect = host.make_supercell([3, 3, 3], in_place=False)
    centre = perfect.cart_coords[0]
    a = rattle_near(perfect, centre, radius_A=4.0, amplitude_A=0.05, seed="x")
    b = rattle_near(perfect, centre, radius_A=4.0, amplitude_A=0.05, seed="x")
    c = rattle_near(perfect, centre, radius_A=4.0, amplitude_A=0.05, seed="y")
    assert np.allclose(a.cart_coords, b.cart_coords)
    assert not np.allclose(a.cart_coords, c.cart_coords)
    distances = perfect.lattice.get_all_distances([perfect.frac_coords[0]], perfect.frac_coords)[0]
    moved = np.linalg.norm(a.cart_coords - perfect.cart_coords, axis=1) > 1e-9
    assert moved[distances < 4.0].all()
    assert not moved[distances >= 4.0].any()


def test_species_absent_from_host_is_refused():
    host = load_fixture("Cu3Au")[0]
    with pytest.raises(StructureError, match="species Li is not in host Cu3Au"):
        find_vacancies(host, "Li")


def test_a_job_process_does_not_import_pymatgen_analysis_defects_until_it_finds_candidates():
    # every SLURM job and CLI call imports the jobs module; pymatgen-analysis-defects cost each
    # 1.3 s of its 2.65 s start (2026-12-06), and only the candidate search needs it
    code = (
        "import sys; import carrierflow.workflows.jobs, carrierflow.workflows.cli; "
        "print('pymatgen.analysis.defects' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
