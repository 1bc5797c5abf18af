"""A relaxation whose atoms ran together (a hole in the model) is flagged and never ranked.

Found with the fine-tuned 7net-li-in: a Li5In4 vacancy start with its neighbours pushed out by 30 %
relaxed to -1e17 eV in 500 steps; unguarded it would have been the lowest state of the search."""

from pymatgen.core import Lattice, Structure

from carrierflow.analysis.flags import Flag, FlagCode
from carrierflow.analysis.relaxation import collapse
from carrierflow.analysis.verdict import _lowest, defect_entry
from carrierflow.workflows.jobs import lowest_start
from carrierflow.workflows.refine import lowest_defects

RAN_TOGETHER = Flag(code=FlagCode.COLLAPSED, text="atoms ran together")


def test_atoms_that_ran_together_are_named_and_a_relaxed_cell_is_not():
    perfect = Structure(Lattice.cubic(3.51), ["Li", "Li"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    perfect.make_supercell(2)
    relaxed = perfect.copy()
    relaxed.translate_sites([0], [0.02, 0.01, 0.0])
    assert collapse(relaxed, perfect) is None
    relaxed.translate_sites([1], relaxed[0].coords - relaxed[1].coords + [0.3, 0, 0], False)
    assert "0.30 A apart" in collapse(relaxed, perfect)


def test_a_collapsed_start_never_wins_and_stays_out_of_the_spread(defect_outcome):
    outcomes = [
        defect_outcome("i1", "interstitial", 0.62),
        defect_outcome("i1", "interstitial", -1e17, flags=[RAN_TOGETHER]),
        defect_outcome("i1", "interstitial", 0.55),
    ]
    winner = lowest_start.original(["small", "neighbours +30%", "split"], outcomes)
    assert winner.formation_energy_eV == 0.55 and winner.search.winner == "split"
    assert winner.search.collapsed == ["neighbours +30%"]
    assert winner.search.starts == ["small", "split"]
    assert abs(winner.search.spread_eV - 0.07) < 1e-9


def test_a_collapsed_defect_is_in_the_results_but_not_in_the_verdict(defect_outcome):
    good = defect_outcome("v1", "vacancy", 0.4)
    hole = defect_outcome("v2", "vacancy", -1e17, flags=[RAN_TOGETHER])
    assert _lowest([good, hole], "vacancy") is good
    assert _lowest([hole], "vacancy") is None
    assert defect_entry(hole, 300.0)["site_fraction"] is None
    assert [d.name for d in lowest_defects([good, hole], 2)] == ["v1"]


def _run(job, store=None):
    from jobflow import JobStore, run_locally
    from maggma.stores import MemoryStore

    store = store if store is not None else JobStore(MemoryStore())
    responses = run_locally(job, store=store, ensure_success=True)
    return responses[job.uuid][1].output


def _lj_relax(epsilon: float, steps: int = 300):
    from atomate2.ase.jobs import LennardJonesRelaxMaker

    # Lennard-Jones with a negative epsilon: the r^-12 term attracts, so the energy falls without
    # bound as two atoms meet -- the shape of the hole found in 7net-li-in, in three lines
    return LennardJonesRelaxMaker(
        calculator_kwargs={"epsilon": epsilon, "sigma": 2.0, "rc": 6.0},
        relax_kwargs={"fmax": 0.01, "final_atoms_object_file": None},
        steps=steps,
    )


def _cu_cell() -> Structure:
    fcc = [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    cell = Structure(Lattice.cubic(3.61), ["Cu"] * 4, fcc)
    cell.make_supercell(2)
    cell.translate_sites([0], [0.03, 0.02, 0.01])
    return cell


def test_a_relaxation_whose_atoms_run_together_stops_itself_and_is_kept_as_not_converged():
    from carrierflow.analysis.relaxation import STOP_FRACTION, shortest_distance
    from carrierflow.workflows.calculators import Calculator
    from carrierflow.workflows.engine import calculation

    start = _cu_cell()
    emt = Calculator("emt")
    doc = _run(calculation(emt, "ion_relax", start, "hole", makers=[_lj_relax(-1.0)]))
    assert doc.stopped.startswith("atoms ran together")
    assert not doc.converged and doc.steps < 300
    assert shortest_distance(doc.structure) < STOP_FRACTION * shortest_distance(start)
    # a potential with a wall relaxes the same start to its end, unstopped
    sound = _run(calculation(emt, "ion_relax", start, "wall", makers=[_lj_relax(0.01)]))
    assert sound.stopped is None and sound.converged


def test_a_stopped_relaxation_is_reused_on_a_rerun_with_its_reason():
    from jobflow import JobStore
    from maggma.stores import MemoryStore

    from carrierflow.workflows.calculators import Calculator
    from carrierflow.workflows.engine import calculation

    store, start = JobStore(MemoryStore()), _cu_cell()

    def hole():
        return calculation(Calculator("emt"), "ion_relax", start, "hole", makers=[_lj_relax(-1.0)])

    first = _run(hole(), store)
    again = _run(hole(), store)
    assert again.reused and not first.reused
    assert again.stopped == first.stopped and again.energy_eV == first.energy_eV
