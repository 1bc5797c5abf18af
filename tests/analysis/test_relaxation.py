import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from carrierflow.analysis.flags import FlagCode
from carrierflow.analysis.relaxation import (
    displacements,
    hold_far_atoms,
    interstitial_centre,
    mark_shared_final_states,
    reconstruction_evidence,
    vacancy_centre,
)


def _cubic(n=3, a=3.0):
    return Structure(Lattice.cubic(a), ["Cu"], [[0, 0, 0]]).make_supercell(
        [n, n, n], in_place=False
    )


def test_displacements_use_the_nearest_periodic_image():
    start = _cubic()
    moved = start.copy()
    moved.translate_sites([0], [-0.1, 0, 0], frac_coords=False, to_unit_cell=True)
    d = displacements(start, moved)
    assert d[0] == pytest.approx(0.1)
    assert np.allclose(d[1:], 0)


def test_a_refilled_vacancy_is_found_at_its_new_site():
    perfect = _cubic()
    defect = perfect.copy()
    defect.remove_sites([0])
    # a neighbour hops into the vacancy: the vacancy now sits at the neighbour's old site
    neighbour = int(
        np.argsort(
            perfect.lattice.get_all_distances([perfect.frac_coords[0]], perfect.frac_coords)[0]
        )[1]
    )
    defect.replace(neighbour - 1, "Cu", perfect.frac_coords[0])
    centre = vacancy_centre(defect, perfect, "Cu")
    assert np.allclose(centre, perfect.cart_coords[neighbour])


def test_interstitial_centre_is_the_atom_off_the_lattice():
    perfect = _cubic()
    defect = perfect.copy()
    defect.append("Cu", [0.5 / 3, 0.5 / 3, 0.5 / 3])
    assert np.allclose(interstitial_centre(defect, perfect), defect.cart_coords[-1])


def test_reconstruction_evidence():
    assert reconstruction_evidence(0.5, 0.1, 6.0, 0.5) == []
    assert "negative formation energy" in reconstruction_evidence(-0.03, 0.1, 6.0, 0.5)[0]
    far = reconstruction_evidence(0.12, 0.85, 6.0, 0.5)
    assert len(far) == 1 and "beyond 6 A moved up to 0.85 A" in far[0]
    # a pure phase cannot reorder: far-field moves there are elastic (a crowdion)
    assert reconstruction_evidence(0.12, 0.85, 6.0, 0.5, can_reorder=False) == []
    assert reconstruction_evidence(-0.1, 0.85, 6.0, 0.5, can_reorder=False) != []


def test_far_atoms_are_held_fixed():
    start = _cubic(4)
    held = hold_far_atoms(start, start.cart_coords[0], 4.0)
    distances = start.lattice.get_all_distances([start.frac_coords[0]], start.frac_coords)[0]
    for flags, distance in zip(held.site_properties["selective_dynamics"], distances, strict=True):
        assert all(flags) == (distance <= 4.0)
        assert any(flags) == (distance <= 4.0)


def test_candidates_that_relax_to_one_state_are_flagged(defect_outcome):
    outcome = defect_outcome
    defects = [
        outcome("v1", "vacancy", 0.5),
        outcome("i1", "interstitial", 0.3362),
        outcome("i2", "interstitial", 0.3365),
        outcome("i3", "interstitial", 0.5004),
    ]
    mark_shared_final_states(defects)
    assert [f.code for f in defects[2].flags] == [FlagCode.SHARED_STATE]
    assert defects[2].flags[0].text == "same relaxed energy as i1 (within 1 meV): one final state"
    assert defects[0].flags == defects[1].flags == defects[3].flags == []
