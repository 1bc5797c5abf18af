"""Migration barriers and diffusion: hops by symmetry, NEB on the EMT analogue, Arrhenius."""

import json
import math

import numpy as np
import pytest
from helpers import cu_au
from pymatgen.core import Lattice, Structure

from carrierflow.analysis.flags import Flag, FlagCode
from carrierflow.analysis.transport import (
    BOLTZMANN_EV_K,
    barriers,
    diffusion_coefficient,
    hop_counts,
    profile_flags,
)
from carrierflow.structures.defects import DefectCandidate, build_defect_cell, find_defects
from carrierflow.structures.hops import (
    LOCALIZED_MOVE_A,
    find_hops,
    hop_end_state,
    moving_atom_and_end,
    symmetry_image_hops,
)
from carrierflow.structures.supercells import choose_supercell, make_supercell
from carrierflow.workflows.cli import main

_CONVENTIONAL_FCC = Structure(
    Lattice.cubic(3.6), ["Cu"] * 4, [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]
)
_CONVENTIONAL_BCC = Structure(Lattice.cubic(3.51), ["Li"] * 2, [[0, 0, 0], [0.5, 0.5, 0.5]])
FCC = _CONVENTIONAL_FCC.get_primitive_structure()
BCC = _CONVENTIONAL_BCC.get_primitive_structure()


def _hops(host, name):
    candidates = find_defects(host, host[0].specie.symbol)
    start = next(c for c in candidates if c.name == name)
    return find_hops(host, start, [c for c in candidates if c.kind == start.kind])


@pytest.mark.parametrize(
    ("host", "defect", "multiplicity", "length"),
    [
        (FCC, "v_Cu_1a", 12, 3.6 / math.sqrt(2)),  # 12 nearest neighbours of fcc
        (BCC, "v_Li_1a", 8, 3.51 * math.sqrt(3) / 2),  # 8 of bcc
        (FCC, "Cu_i1", 8, 3.6 * math.sqrt(3) / 4),  # octahedral to its 8 tetrahedral sites
        (FCC, "Cu_i2", 4, 3.6 * math.sqrt(3) / 4),  # tetrahedral to its 4 octahedral sites
    ],
)
def test_nearest_neighbour_hops_follow_the_lattice_symmetry(host, defect, multiplicity, length):
    [hop] = _hops(host, defect)
    assert hop.multiplicity == multiplicity
    assert hop.length_A == pytest.approx(length, abs=1e-6)


def test_a_wider_shell_adds_the_second_neighbours():
    hops = find_hops(BCC, *_start_and_targets(BCC, "v_Li_1a"), max_length_A=3.6)
    assert [(h.multiplicity, round(h.length_A, 3)) for h in hops] == [(8, 3.04), (6, 3.51)]


def _start_and_targets(host, name):
    candidates = find_defects(host, host[0].specie.symbol)
    start = next(c for c in candidates if c.name == name)
    return start, [c for c in candidates if c.kind == start.kind]


@pytest.mark.parametrize("defect", ["v_Cu_1a", "Cu_i1"])
def test_a_hop_end_state_moves_one_atom_by_the_hop_length(defect):
    choice = choose_supercell(FCC, 7.0, 100)
    perfect = make_supercell(FCC, choice)
    start, _ = _start_and_targets(FCC, defect)
    cell = build_defect_cell(FCC, choice.matrix, perfect, start)
    [hop] = _hops(FCC, defect)
    index, end_cart = moving_atom_and_end(cell, FCC, hop)
    end = hop_end_state(cell.structure, index, end_cart)
    moved = [cell.structure[i].distance(end[i]) for i in range(len(end))]  # periodic distances
    assert np.count_nonzero(np.array(moved) > 1e-6) == 1
    assert moved[index] == pytest.approx(hop.length_A, abs=1e-6)


def _image_hops(structure, perfect, kind="vacancy"):
    start = DefectCandidate(
        name="d",
        kind=kind,
        species=perfect[0].specie.symbol,
        frac_coords=[0, 0, 0],
        multiplicity=1,
        equivalent_frac_coords=[[0, 0, 0]],
        nearest_host_distance_A=1.0,
    )
    return symmetry_image_hops(perfect, structure, start)


def _rattled(structure, amplitude, seed=1):
    noise = np.random.default_rng(seed).normal(0, amplitude, (len(structure), 3))
    return Structure(
        structure.lattice,
        structure.species,
        structure.cart_coords + noise,
        coords_are_cartesian=True,
    )


@pytest.mark.parametrize(
    ("conventional", "cells", "multiplicity", "length"),
    [
        (_CONVENTIONAL_FCC, 2, 12, 3.6 / math.sqrt(2)),
        (_CONVENTIONAL_BCC, 3, 8, 3.51 * math.sqrt(3) / 2),
    ],
)
@pytest.mark.parametrize("noise", [0.0, 0.01])  # A, random: more than a relaxation leaves
def test_symmetry_images_of_a_vacancy_are_its_lattice_hops(
    conventional, cells, multiplicity, length, noise
):
    perfect = conventional * cells
    vacancy = perfect.copy()
    vacancy.remove_sites([0])
    hops = _image_hops(_rattled(vacancy, noise), perfect)
    # relaxation noise breaks the symmetry of the start, not the hops' equivalence
    [(hop, end)] = hops
    assert hop.multiplicity == multiplicity and hop.mechanism == "direct"
    assert hop.length_A == pytest.approx(length, abs=0.3 if noise else 1e-6)
    assert hop.symmetric and hop.moving_atoms == 1
    assert len(end) == len(vacancy)


def test_a_split_interstitial_hops_by_interstitialcy():
    """The <100> dumbbell of fcc: it jumps to 8 of its 12 nearest neighbour sites, with
    several atoms moving and one lattice spacing a/sqrt(2) of net transport."""
    perfect = _CONVENTIONAL_FCC * 2
    dumbbell = perfect.copy()
    dumbbell.remove_sites([0])
    half = 0.3 * 3.6 / dumbbell.lattice.c  # atoms 0.6 a apart along z around the vacant site
    dumbbell.append("Cu", [0, 0, half])
    dumbbell.append("Cu", [0, 0, -half])
    [(hop, end)] = _image_hops(dumbbell, perfect, kind="interstitial")
    assert hop.mechanism == "interstitialcy" and hop.moving_atoms >= 2
    assert hop.multiplicity == 8
    assert hop.length_A == pytest.approx(3.6 / math.sqrt(2), abs=1e-6)
    assert hop.largest_move_A > LOCALIZED_MOVE_A
    # the end state is the dumbbell on another site: the same set of distances
    assert sorted(np.round(end.distance_matrix.ravel(), 4)) == pytest.approx(
        sorted(np.round(dumbbell.distance_matrix.ravel(), 4)), abs=1e-3
    )


def test_a_defect_that_only_shifts_has_no_hop_length():
    """A crowdion spread over a small supercell shifts by small moves of many atoms: its
    barrier is kept, but it has no hop length and does not enter D."""
    from carrierflow.structures.hops import Hop
    from carrierflow.workflows.migration import assess_hop
    from carrierflow.workflows.schemas import PathDoc

    hop = Hop(
        name="Li_i1>Li_i1 interstitialcy 6.25A",
        kind="interstitial",
        species="Li",
        start="Li_i1",
        end="Li_i1",
        length_A=6.25,
        multiplicity=1,
        symmetric=True,
        mechanism="interstitialcy",
        moving_atoms=30,
        largest_move_A=0.58,
    )
    band = [BCC] * 3
    path = PathDoc(
        fingerprint="x",
        label="Li",
        calculator={},
        energies_eV=[-1.0, -0.9, -1.0],
        path_A=[0, 1, 2],
        images=band,
        converged=True,
        elapsed_s=1,
    )
    outcome = assess_hop.original(hop, path)
    assert not outcome.counts and outcome.barrier_eV == pytest.approx(0.1)
    assert outcome.flags[0].code == FlagCode.DELOCALIZED
    assert "no atom moves more than 0.58 A" in outcome.flags[0].text


def _codes(flags):
    return [flag.code for flag in flags]


def test_profile_flags_name_what_is_wrong():
    assert profile_flags([0.0, 0.3, 0.6, 0.3, 0.0], symmetric=True) == []
    assert _codes(profile_flags([0.0, -0.1, -0.2], symmetric=False)) == [FlagCode.ENDPOINT_MAXIMUM]
    below = profile_flags([0.0, 0.2, -0.3, 0.2, 0.0], symmetric=True)
    assert _codes(below) == [FlagCode.ANOTHER_MINIMUM]
    assert "0.300 eV below both endpoints" in below[0].text
    dip = profile_flags([0.0, 0.4, 0.1, 0.4, 0.0], symmetric=True)
    assert _codes(dip) == [FlagCode.INTERMEDIATE_MINIMUM]
    [apart] = profile_flags([0, 0.5, 0.1], True)
    assert apart.code == FlagCode.ASYMMETRIC_ENDPOINTS and "0.100 eV apart" in apart.text


def test_a_hop_counts_unless_a_disqualifying_flag_says_otherwise_whatever_its_wording():
    endpoint = Flag(code=FlagCode.ENDPOINT_MAXIMUM, text="reworded")
    symmetric = Flag(code=FlagCode.ASYMMETRIC_ENDPOINTS, text="path maximum at an endpoint")
    assert hop_counts(True, [symmetric])
    assert not hop_counts(True, [endpoint])
    assert not hop_counts(False, [])
    assert barriers([0.0, 0.5, 0.2]) == pytest.approx((0.5, 0.3))


def test_diffusion_follows_the_arrhenius_form_it_states():
    z, a, ea, nu = 8, 3.0, 0.6, 1e13
    assert diffusion_coefficient([(z, a, 0.0)], 300, nu) == pytest.approx(
        z * (a * 1e-8) ** 2 * nu / 6
    )
    t1, t2 = 300.0, 600.0
    d1, d2 = (diffusion_coefficient([(z, a, ea)], t, nu) for t in (t1, t2))
    slope = math.log(d2 / d1) / (1 / t2 - 1 / t1)
    assert -slope * BOLTZMANN_EV_K == pytest.approx(ea, rel=1e-9)
    # two hops add
    both = diffusion_coefficient([(z, a, ea), (6, 3.5, 0.8)], t1, nu)
    assert both == pytest.approx(d1 + diffusion_coefficient([(6, 3.5, 0.8)], t1, nu))


def test_hops_start_from_the_lowest_defect_that_can_start_them(defect_outcome):
    from carrierflow.analysis.schemas import LocalRelaxation
    from carrierflow.workflows.migration import hop_start

    cell = FCC * 2
    local = LocalRelaxation(
        radius_A=5,
        energy_eV=0,
        formation_energy_eV=-0.5,
        converged=True,
        steps=1,
        max_displacement_A=0,
    )
    defects = [
        defect_outcome("v_a", "vacancy", 0.1, ended_at="v_b", structure=cell),  # refilled
        defect_outcome("v_b", "vacancy", 0.3, ended_at="v_b", structure=cell),
        defect_outcome("i_a", "interstitial", 0.2, ended_at="i_a", structure=cell, local=local),
        defect_outcome("i_b", "interstitial", 0.3, ended_at=None, structure=cell),  # split
        defect_outcome("i_c", "interstitial", 0.4, ended_at="i_c", structure=cell),
    ]
    vacancy, notes = hop_start(defects, "vacancy")
    assert vacancy.name == "v_b" and [n.code for n in notes] == [FlagCode.HOPS_FROM_ANOTHER]
    assert "v_a left its site" in notes[0].text
    # i_a reconstructed the host; i_b split, and hops to the symmetry images of its state
    interstitial, notes = hop_start(defects, "interstitial")
    assert interstitial.name == "i_b"
    assert [n.code for n in notes] == [FlagCode.HOPS_FROM_ANOTHER, FlagCode.HOPS_FROM_RELAXED_STATE]
    assert "i_a reconstructed the host" in notes[0].text
    assert "i_b left its site" in notes[1].text and "symmetry images" in notes[1].text
    none, notes = hop_start(defects[:1], "vacancy")
    assert none is None and [n.code for n in notes] == [FlagCode.NO_HOPS]
    assert "no vacancy stayed on its site" in notes[0].text


def _phases(results):
    return [results["reference"], *results["hosts"]]


def _carrier(phase, kind):
    return next(c for c in phase["transport"]["carriers"] if c["kind"] == kind)


def test_copper_vacancy_hop_is_symmetric_and_physical(emt_migration):
    vacancy = _carrier(emt_migration["results"]["reference"], "vacancy")
    [hop] = vacancy["hops"]
    assert hop["symmetric"] and hop["multiplicity"] == 12 and hop["counts"]
    assert hop["flags"] == []
    assert hop["barrier_eV"] == pytest.approx(hop["reverse_barrier_eV"], abs=0.02)
    assert 0.2 < hop["barrier_eV"] < 1.5  # metals: a few tenths of an eV to about one eV
    assert hop["energies_eV"][0] == 0.0
    assert max(hop["energies_eV"]) == pytest.approx(hop["barrier_eV"])


def test_a_split_interstitial_hops_to_the_symmetry_images_of_its_state(emt_migration):
    # EMT's Cu interstitial in Cu3Au leaves its site: no end state is relaxed, the end is the
    # start moved by a symmetry operation, so both ends have the same energy
    [host] = emt_migration["results"]["hosts"]
    carrier = _carrier(host, "interstitial")
    assert any(note["code"] == "hops-from-relaxed-state" for note in carrier["flags"])
    assert carrier["hops"]
    for hop in carrier["hops"]:
        assert hop["symmetric"] and hop["start"] == hop["end"] == carrier["defect"]
        assert "end" not in hop["provenance"]
        assert hop["energies_eV"][-1] == pytest.approx(0, abs=0.02)
        assert hop["mechanism"] == ("interstitialcy" if hop["moving_atoms"] > 1 else "direct")


def test_every_hop_has_a_converged_barrier_or_a_flag(emt_migration):
    hops = [
        hop
        for phase in _phases(emt_migration["results"])
        for carrier in phase["transport"]["carriers"]
        for hop in carrier["hops"]
    ]
    assert hops
    for hop in hops:
        assert (hop["counts"] and hop["barrier_eV"] >= 0) or hop["flags"], hop["name"]


def test_activation_energy_and_diffusion_follow_from_the_hops(emt_migration):
    results = emt_migration["results"]
    nu = results["migration"]["attempt_frequency_Hz"]
    for phase in _phases(results):
        transport = phase["transport"]
        assert transport["temperature_K"] == results["temperature_K"]
        known = {}
        for carrier in transport["carriers"]:
            usable = [h for h in carrier["hops"] if h["counts"]]
            assert all(h["converged"] for h in usable)
            if carrier["diffusion_cm2_s"] is None:
                assert not usable or carrier["formation_energy_eV"] is None
                continue
            for hop in usable:
                expected = carrier["formation_energy_eV"] + hop["barrier_eV"]
                assert hop["activation_energy_eV"] == pytest.approx(expected)
            assert carrier["activation_energy_eV"] == min(h["activation_energy_eV"] for h in usable)
            d = diffusion_coefficient(
                [(h["multiplicity"], h["length_A"], h["activation_energy_eV"]) for h in usable],
                results["temperature_K"],
                nu,
            )
            assert carrier["diffusion_cm2_s"] == pytest.approx(d)
            known[carrier["kind"]] = carrier["diffusion_cm2_s"]
        if len(known) == 2:
            assert transport["dominant_transport_carrier"] == max(known, key=known.get)


def test_barrier_does_not_depend_on_the_number_of_images(emt_migration):
    out = emt_migration["root"] / "three-images"
    args = cu_au("run", str(emt_migration["store"]), str(out), "--migration", "--images", "3")
    assert main(args) == 0
    three = json.loads((out / "results.json").read_text())
    [five_hop] = _carrier(emt_migration["results"]["reference"], "vacancy")["hops"]
    [three_hop] = _carrier(three["reference"], "vacancy")["hops"]
    assert len(three_hop["energies_eV"]) == 5 and len(five_hop["energies_eV"]) == 7
    assert three_hop["barrier_eV"] == pytest.approx(five_hop["barrier_eV"], abs=0.03)


def test_report_shows_transport_and_plots_every_profile(emt_migration):
    out = emt_migration["root"] / "out"
    table = (out / "results.md").read_text()
    assert "## Transport at T = 300 K" in table and "dominant in transport" in table
    assert (out / "barriers.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--refine", "gpaw"], "--migration with --refine is not available yet"),
        (["--images", "0"], "images"),
    ],
)
def test_bad_migration_options_end_in_one_line(tmp_path, capsys, extra, message):
    args = cu_au("run", str(tmp_path / "s"), str(tmp_path / "o"), "--migration", *extra)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_neb_with_a_dft_code_is_refused_by_name():
    from carrierflow.workflows.calculators import Calculator, CalculatorError

    with pytest.raises(CalculatorError, match="NEB with 'gpaw' is not available yet"):
        Calculator("gpaw", command="python3").neb_makers(0.05, 100)


@pytest.mark.slow
def test_li_in_migration_completes_with_a_barrier_or_a_flag_for_every_hop(tmp_path):
    """Li-In with the cheap SevenNet-0 (about 20 min on 2 cores): the flow finishes, every
    carrier of every phase has hops or says why not, and every hop has a converged barrier or
    says why not (split interstitials hop by interstitialcy to the images of their state)."""
    args = [
        *("run", "--system", "Li-In", "--model", "7net-0", "--migration"),
        *("--images", "3", "--max-hops", "1", "--neb-fmax", "0.1", "--neb-steps", "150"),
        *("--store", str(tmp_path / "store"), "--output", str(tmp_path / "out")),
    ]
    assert main(args) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    for phase in _phases(results):
        carriers = phase["transport"]["carriers"]
        assert {c["kind"] for c in carriers} == {"vacancy", "interstitial"}
        for carrier in carriers:
            assert carrier["hops"] or carrier["flags"], (phase["formula"], carrier["kind"])
            for hop in carrier["hops"]:
                assert (hop["counts"] and hop["barrier_eV"] >= 0) or hop["flags"], hop["name"]
    assert (tmp_path / "out" / "barriers.png").exists()


def test_with_starts_the_hops_start_from_the_searched_ground_state(tmp_path):
    # EMT Cu: the single start stays on the octahedral site, the split starts find the <100>
    # dumbbell lower (README, several starts); the hops must start from the searched state
    extra = ("--starts", "3", "--migration", "--defects", "interstitial", "--max-hops", "1")
    assert main(cu_au("run", tmp_path / "store", tmp_path / "out", *extra)) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    copper = results["reference"]
    lowest = min(copper["defects"], key=lambda d: d["formation_energy_eV"])
    assert lowest["search"]["winner"] != lowest["search"]["starts"][0]
    carrier = _carrier(copper, "interstitial")
    assert carrier["defect"] == lowest["name"]
    assert carrier["formation_energy_eV"] == pytest.approx(lowest["formation_energy_eV"])
    assert carrier["hops"]
