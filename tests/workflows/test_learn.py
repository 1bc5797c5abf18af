"""The screen learns from DFT: frames chosen per calculation, whole calculations validate, a
learning round refines only what DFT has not seen, and a tiny real loop (bcc Li, GPAW, 7net-0)
fine-tunes, screens again and is reused by a rerun."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from helpers import run_bcc_li
from jobflow import JobStore
from maggma.stores import MemoryStore

from carrierflow.analysis.relaxation import COLLAPSE_FRACTION, shortest_distance
from carrierflow.analysis.report import markdown_table, write_report
from carrierflow.analysis.schemas import HostOutcome
from carrierflow.structures.sources import load_fixture
from carrierflow.structures.supercells import SupercellChoice
from carrierflow.workflows.calculators import Calculator, file_sha256
from carrierflow.workflows.cli import main
from carrierflow.workflows.finetune import FineTuneError
from carrierflow.workflows.flows import Phase
from carrierflow.workflows.gpaw_makers import python_with_gpaw
from carrierflow.workflows.learn import (
    LearningFlowMaker,
    learning_sets,
    not_refined,
    pinned_frames,
    rattled_hosts,
    spread,
)
from carrierflow.workflows.schemas import (
    DefectSettings,
    FineTuneSettings,
    LearnSettings,
    RefineSettings,
)

TINY = {"encut_eV": 250.0, "kspacing": 0.1, "ediff_eV": 1e-4}


def _frames(fingerprint: str, energies: list[float], run: str = "relax") -> list[Atoms]:
    frames = []
    for step, energy in enumerate(energies, start=1):
        atoms = Atoms("Li", positions=[[0, 0, 0]], cell=[3, 3, 3], pbc=True)
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=np.zeros((1, 3)))
        atoms.info.update({"fingerprint": fingerprint, "run": run, "step": step})
        frames.append(atoms)
    return frames


def test_spread_keeps_both_ends_of_a_relaxation_and_spaces_the_rest_in_energy():
    # a relaxation that drops fast, then crawls: the tail is all alike
    energies = [0.0, -0.5, -0.8, -0.9, -0.95, -0.97, -0.98, -0.99, -0.995, -1.0]
    kept = [a.info["step"] for a in spread(_frames("a", energies), 4)]
    assert kept[0] == 1 and kept[-1] == 10 and len(kept) == 4
    assert kept == sorted(set(kept))
    # the middle frames sit near -1/3 and -2/3 eV: from the fast part, not the tail
    assert kept[1:3] == [2, 3]
    assert len(spread(_frames("b", [0.0, -1.0]), 4)) == 2


def test_whole_calculations_validate_never_single_steps_of_one_relaxation():
    frames = [f for i in range(7) for f in _frames(f"fp{i}", [0.0, -0.1, -0.2])]
    train, valid = learning_sets(frames, per_calculation=3)
    trained = {a.info["fingerprint"] for a in train}
    validated = {a.info["fingerprint"] for a in valid}
    assert trained and validated and not trained & validated
    assert validated == {"fp0", "fp5"}  # every fifth, in fingerprint order: reproducible
    assert len(train) + len(valid) == 21
    with pytest.raises(FineTuneError, match="at least two calculations"):
        learning_sets(_frames("only", [0.0, -1.0]), 3)


def test_a_perfect_supercell_always_trains_it_is_the_reference_of_every_formation_energy():
    frames = [f for i in range(7) for f in _frames(f"fp{i}", [0.0, -0.1])]
    for atoms in frames[:2]:  # fp0, first in fingerprint order, would validate
        atoms.info.update({"label": "Li perfect supercell [DFT]", "task": "static"})
    train, valid = learning_sets(frames, per_calculation=2)
    assert "fp0" in {a.info["fingerprint"] for a in train}
    assert {a.info["fingerprint"] for a in valid} == {"fp1", "fp6"}


def test_a_rerun_of_a_learning_round_learns_from_the_frames_it_took_the_first_time(tmp_path):
    # a resumed loop rebuilds its flow: round 1 runs again when round 2's DFT is in the store
    def steps(frames):
        return [(a.info["fingerprint"], a.info["step"]) for a in frames]

    record = tmp_path / "rounds" / "run-1.json"
    first = [f for i in range(3) for f in _frames(f"fp{i}", [0.0, -0.1])]
    assert steps(pinned_frames(first, record)) == steps(first)
    later = [*first, *_frames("round 2", [0.0, -0.2, -0.3])]
    assert steps(pinned_frames(later, record)) == steps(first)
    # a calculation it learned from is gone: it learns from what is there, says so, pins that
    fewer = [a for a in later if a.info["fingerprint"] != "fp0"]
    handler, logger = _Lines(), logging.getLogger("carrierflow")
    logger.addHandler(handler)
    try:
        assert steps(pinned_frames(fewer, record)) == steps(fewer)
    finally:
        logger.removeHandler(handler)
    assert any("1 of the 3 DFT runs this learning round" in line for line in handler.lines)
    assert steps(pinned_frames(later, record)) == steps(fewer)
    assert not list(record.parent.glob("*.partial"))


def _host(defects) -> HostOutcome:
    _, source = load_fixture("Li")
    choice = SupercellChoice(
        matrix=[[2, 0, 0], [0, 2, 0], [0, 0, 2]], natoms=16, min_image_distance_A=6.0
    )
    return HostOutcome(
        label="Li",
        formula="Li",
        is_reference=True,
        source=source,
        bulk_energy_per_atom_eV=-1.9,
        bulk_lattice_abc_A=[3.0, 3.0, 3.0],
        supercell=choice,
        perfect_energy_eV=-30.0,
        defects=defects,
    )


def test_a_rounds_frames_are_pinned_by_what_it_computes_not_by_how_its_results_read():
    """A rerun at another temperature or uncertainty finds the frames each round trained on (it
    found none, trained on every frame in the store, and sent GPAW to relax again); other
    learning settings are another loop."""
    from carrierflow.workflows.flows import Phase

    lithium, source = load_fixture("Li")
    phase = Phase(label="Li", structure=lithium.get_primitive_structure(), source=source)

    def maker(temperature=300.0, uncertainty=None, epochs=30):
        return LearningFlowMaker(
            calculator=Calculator("sevennet", model="7net-0"),
            settings=DefectSettings(species="Li", temperature_K=temperature),
            system="Li",
            refine=Calculator("gpaw", preset="fast", uncertainty_eV=uncertainty),
            learn=LearnSettings(fine_tune=FineTuneSettings(epochs=epochs)),
        )

    base = maker()
    for other in (maker(temperature=600.0), maker(uncertainty=0.3)):
        assert other.frames_id(phase, []) == base.frames_id(phase, [])
        assert other.run_id(phase, []) != base.run_id(phase, [])
    assert maker(epochs=20).frames_id(phase, []) != base.frames_id(phase, [])


def test_a_finished_refinement_is_not_served_to_a_run_that_would_refine_other_defects(
    monkeypatch,
):
    """Which defects DFT refines is part of a refining run's identity (the rule changed on
    2026-12-05: a rerun had served the old rule's results, "nothing to compute"); a screen
    without DFT keeps its identity."""
    from carrierflow.workflows.flows import CarrierFlowMaker, Phase

    lithium, source = load_fixture("Li")
    phase = Phase(label="Li", structure=lithium.get_primitive_structure(), source=source)

    def ids():
        common = {
            "calculator": Calculator("emt"),
            "settings": DefectSettings(species="Li"),
            "system": "Li",
        }
        refining = CarrierFlowMaker(**common, refine=Calculator("gpaw", preset="fast"))
        return CarrierFlowMaker(**common).run_id(phase, []), refining.run_id(phase, [])

    screen, refined = ids()
    monkeypatch.setattr("carrierflow.workflows.flows.REFINEMENT_CHOICE", "screen")
    other_screen, other_refined = ids()
    assert other_screen == screen and other_refined != refined


def test_rattled_perfect_supercells_move_every_atom_more_at_each_amplitude_and_reproducibly():
    host = load_fixture("Li3In2")[0] * (1, 1, 2)
    made = rattled_hosts("Li3In2", host, 2)
    assert [name for name, _ in made] == [
        "Li3In2 perfect supercell [DFT rattle: 0.10 A]",
        "Li3In2 perfect supercell [DFT rattle: 0.20 A]",
    ]
    moves = []
    for _, rattled in made:
        assert rattled.lattice == host.lattice and rattled.species == host.species
        moved = np.linalg.norm(
            rattled.lattice.get_cartesian_coords(
                (rattled.frac_coords - host.frac_coords + 0.5) % 1 - 0.5
            ),
            axis=1,
        )
        assert (moved > 0).all()
        moves.append(moved.mean())
        # ShakeNBreak keeps atoms 80 % of the host's nearest-neighbour distance apart
        assert shortest_distance(rattled) >= 0.8 * shortest_distance(host) - 1e-6
    # a Gaussian of sigma in 3D moves an atom 1.6 sigma on average: 0.16 and 0.32 A
    assert 0.1 < moves[0] < 0.22 < moves[1] < 0.45
    again = rattled_hosts("Li3In2", host, 2)
    assert all(a[1] == b[1] for a, b in zip(made, again, strict=True))


def test_a_learning_round_refines_only_the_lowest_defects_dft_has_not_seen(defect_outcome):
    screened = _host(
        [
            defect_outcome("v_a", "vacancy", 0.5),
            defect_outcome("v_b", "vacancy", 0.4),
            defect_outcome("i_a", "interstitial", 0.3),
        ]
    )
    # in the DFT cell the fine-tuned model ranks as its screen does
    in_cell = [d.model_copy() for d in screened.defects]
    refined = _host([defect_outcome("v_a", "vacancy", 0.6), defect_outcome("i_a", "interstitial")])
    # the fine-tuned screen now puts v_b lowest: DFT has not refined it
    assert not_refined([screened], [in_cell], [refined], k=1) == [["v_b"]]
    refined.defects.append(defect_outcome("v_b", "vacancy", 0.45))
    assert not_refined([screened], [in_cell], [refined], k=1) == [[]]


def test_a_learning_round_refines_what_its_model_puts_lowest_in_the_dft_cell_too(defect_outcome):
    screened = _host(
        [
            defect_outcome("v_a", "vacancy", 0.5),
            defect_outcome("i_a", "interstitial", 0.30),
            defect_outcome("i_b", "interstitial", 0.31),
        ]
    )
    refined = _host([defect_outcome("v_a", "vacancy", 0.6), defect_outcome("i_a", "interstitial")])
    # near-degenerate in the screen's cell, reordered in the smaller DFT cell (Li5In4's Li_i1
    # and Li_i5 with 7net-li-in): DFT has not refined the DFT cell's lowest
    in_cell = [
        defect_outcome("v_a", "vacancy", 0.55),
        defect_outcome("i_a", "interstitial", 0.45),
        defect_outcome("i_b", "interstitial", 0.33),
    ]
    assert not_refined([screened], [in_cell], [refined], k=1) == [["i_b"]]


def test_a_later_round_refines_each_phase_beside_its_own_earlier_dft_defects(defect_outcome):
    # the flow a learning round adds (not run): each phase with something new to refine gets
    # its own earlier DFT defects, against which a new reconstruction is ranked
    maker = LearningFlowMaker(
        calculator=Calculator("sevennet", model="7net-0"),
        settings=DefectSettings(species="Li"),
        system="Li-In",
        refine=Calculator("gpaw", dft=TINY),
        refine_settings=RefineSettings(),
        learn=LearnSettings(),
    )
    phases = [
        Phase(label=label, structure=load_fixture(label)[0], source=load_fixture(label)[1])
        for label in ("Li", "Li5In4", "Li3In2")
    ]
    before = [_host([defect_outcome(f"v_{label}", "vacancy", 0.5)]) for label in ("Li", "a", "b")]
    jobs, outputs, _, _ = maker._refinement_jobs(
        phases,
        maker.calculator,
        None,
        [None] * 3,
        names=[["Li_i1"], [], ["Li_i2"]],
        prepared=([None] * 3, [None] * 3),
        dft_before=before,
    )
    assert outputs[1] is None and len(jobs) == 2
    assert [j.function_kwargs["earlier"] for j in jobs] == [before[0].defects, before[2].defects]


@pytest.fixture
def paths(tmp_path):
    return ["--store", str(tmp_path / "store"), "--output", str(tmp_path / "out")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--calculator", "emt", "--learn", "gpaw"], "--calculator emt cannot be fine-tuned"),
        (["--model", "7net-mf-0", "--learn", "gpaw"], "cannot be fine-tuned"),
        (["--learn", "gpaw", "--refine", "vasp"], "drop --refine vasp"),
        (["--learn", "gpaw", "--migration"], "--migration with --learn"),
        (["--learn", "gpaw", "--learn-rounds", "0"], "--learn-rounds"),
        (["--learn", "gpaw", "--learn-frames", "1"], "--learn-frames"),
        (["--learn", "gpaw", "--learn-rattles", "-1"], "--learn-rattles"),
        (["--learn", "gpaw", "--epochs", "0"], "--epochs"),
        # a trainer's device, checked before the hours of DFT that come before the first
        # fine-tuning (it was taken as any string, and failed there)
        (["--learn", "gpaw", "--device", "gpu"], "--device"),
        (["--learn", "gpaw", "--device", "cuda:99"], "--device cuda:99"),
        (["--calculator", "gpaw", "--learn", "gpaw"], "is DFT already"),
    ],
)
def test_learning_that_cannot_run_is_one_line_and_exit_2(capsys, paths, args, message):
    capsys.readouterr()
    code = main(["run", "--species", "Cu", "--hosts", "Cu3Au", "--reference", "Cu", *args, *paths])
    err = capsys.readouterr().err
    assert code == 2, err
    [line] = [line for line in err.splitlines() if line.startswith("carrierflow: error:")]
    assert message in line and "Traceback" not in err


needs_gpaw = pytest.mark.skipif(
    python_with_gpaw() is None, reason="GPAW is not installed (bash setup.sh --gpaw)"
)


@pytest.fixture(scope="module")
def learned_li(tmp_path_factory) -> dict:
    """bcc Li: 7net-0 screen, GPAW refinement of the vacancy, one fine-tuning of two epochs, the
    screen again with the fine-tuned model; then the same run again on the same store."""
    root = tmp_path_factory.mktemp("learn")
    maker = LearningFlowMaker(
        calculator=Calculator("sevennet", model="7net-0", fmax=0.05),
        settings=DefectSettings(
            species="Li", min_image_distance_A=6.0, max_atoms=16, defect_kinds=["vacancy"]
        ),
        system="Li tiny",
        refine=Calculator("gpaw", dft=TINY, fmax=0.1, workdir=str(root / "calculations")),
        refine_settings=RefineSettings(k=1, min_image_distance_A=6.0, max_atoms=16),
        learn=LearnSettings(
            rounds=2,
            frames_per_calculation=3,
            rattles=1,
            fine_tune=FineTuneSettings(epochs=2, batch_size=2),
        ),
    )
    store = JobStore(MemoryStore())
    first = run_bcc_li(maker, store, root)
    handler, logger = _Lines(), logging.getLogger("carrierflow")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        second = run_bcc_li(maker, store, root)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return {"maker": maker, "first": first, "second": second, "log": handler.lines}


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.mark.gpaw
@needs_gpaw
def test_the_loop_gives_the_dft_verdict_with_the_fine_tuned_screen_beside_it(learned_li, tmp_path):
    results = learned_li["first"]["results"]
    assert results["calculator"]["name"] == "gpaw"
    assert results["refined_from"]["calculator"]["model"] == "7net-0"
    learned = results["learned"]
    # one vacancy in bcc Li: the fine-tuned screen's lowest is the refined one, no second round
    assert len(learned["rounds"]) == 1 and not learned["rounds"][0]["to_refine"]
    model = learned["model"]
    assert file_sha256(model["checkpoint"]) == model["checkpoint_sha256"]
    assert learned["calculator"]["model_sha256"] == model["checkpoint_sha256"]
    assert model["train_frames"] > 0 and model["valid_frames"] > 0
    [defect] = learned["defects"]
    assert defect["name"] == results["reference"]["defects"][0]["name"]
    assert defect["difference_eV"] == pytest.approx(defect["fine_tuned_eV"] - defect["dft_eV"])
    report = markdown_table(results)
    assert "## Learned from DFT" in report and model["checkpoint_sha256"][:12] in report
    paths = write_report(results, tmp_path / "out")
    assert json.loads(paths["json"].read_text())["learned"]["model"] == model


@pytest.mark.gpaw
@needs_gpaw
def test_the_loop_adds_dft_single_points_at_the_searchs_distorted_starts(learned_li):
    docs = [d for d in learned_li["first"]["docs"] if d.calculator["name"] == "gpaw"]
    points = [d for d in docs if "[DFT start:" in d.label]
    assert len(points) == 2 and {d.task for d in points} == {"static"}
    pushed, pulled = sorted(d.label.split("start: ")[1].rstrip("]") for d in points)
    # bcc Li's neighbours of a vacancy pushed out by 30 % would meet the next shell at 0.46 of a
    # bond: the push is scaled back to the start floor (0.6), the pull-in (0.70) is kept
    assert pulled == "neighbours -30%" and pushed.startswith("neighbours +")
    assert 0 < int(pushed.removeprefix("neighbours +").rstrip("%")) < 30
    # closer pairs than any DFT relaxation has (the short range a fine-tuned model otherwise
    # never sees), none where the collapse flag would call the cell ran together
    relaxed = min(shortest_distance(d.structure) for d in docs if d.task == "ion_relax")
    closest = min(shortest_distance(d.structure) for d in points)
    assert COLLAPSE_FRACTION * relaxed < closest < 0.85 * relaxed


@pytest.mark.gpaw
@needs_gpaw
def test_the_loop_adds_a_dft_single_point_of_each_perfect_supercell_rattled(learned_li):
    docs = [d for d in learned_li["first"]["docs"] if d.calculator["name"] == "gpaw"]
    [perfect] = [d for d in docs if d.label.endswith("perfect supercell [DFT]")]
    [rattled] = [d for d in docs if "[DFT rattle:" in d.label]
    assert rattled.task == "static" and rattled.label.endswith("[DFT rattle: 0.10 A]")
    assert rattled.structure.lattice == perfect.structure.lattice
    # rattled, the crystal is above its rest (the energy a model learns the host's stiffness from)
    assert rattled.energy_eV > perfect.energy_eV


@pytest.mark.gpaw
@needs_gpaw
def test_the_fine_tuned_screen_never_reuses_the_base_models_calculations(learned_li):
    sha = learned_li["first"]["results"]["learned"]["model"]["checkpoint_sha256"]
    tuned = [d for d in learned_li["first"]["docs"] if d.calculator["model_sha256"] == sha]
    assert tuned and not any(d.reused for d in tuned)
    assert {d.calculator["name"] for d in learned_li["first"]["docs"]} == {"sevennet", "gpaw"}


@pytest.mark.gpaw
@needs_gpaw
def test_a_rerun_of_the_loop_reuses_every_calculation_and_the_fine_tuned_model(learned_li):
    first, second = learned_li["first"], learned_li["second"]
    assert all(d.reused for d in second["docs"])
    assert any("reusing the fine-tuned model" in line for line in learned_li["log"])
    # the one round took the same frames again (its record), and no round ran beyond it
    rounds = Path(learned_li["maker"].refine.workdir) / "fine-tuned" / "rounds"
    assert [p.name.rsplit("-", 1)[1] for p in rounds.glob("*.json")] == ["1.json"]
    assert second["results"]["learned"]["model"] == first["results"]["learned"]["model"]
    assert second["results"]["reference"]["lowest_eV"] == first["results"]["reference"]["lowest_eV"]
