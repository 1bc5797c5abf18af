"""Real DFT with GPAW on tiny cells: the one-atom bcc Li cell relaxed, and a vacancy in a 15-atom
supercell, at a low cut-off and a coarse mesh (seconds per SCF)."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.io import read
from helpers import run_bcc_li
from jobflow import Flow, JobStore, run_locally
from maggma.stores import MemoryStore

from carrierflow.analysis.documents import as_document
from carrierflow.analysis.flags import Flag, FlagCode
from carrierflow.analysis.report import markdown_table, write_report
from carrierflow.structures.defects import find_defects
from carrierflow.structures.sources import load_fixture
from carrierflow.workflows.calculators import Calculator
from carrierflow.workflows.cli import main
from carrierflow.workflows.dataset import dft_frames, write_dataset
from carrierflow.workflows.dft import DftSettings, kpoint_mesh
from carrierflow.workflows.flows import CarrierFlowMaker, Phase
from carrierflow.workflows.gpaw_makers import GpawMaker, _imports_gpaw, python_with_gpaw
from carrierflow.workflows.refine import (
    local_not_needed,
    local_where_it_counts,
    lowest_defects,
    refinement_choice,
    relax_locally_first,
    transfer_candidates,
)
from carrierflow.workflows.schemas import DefectSettings, RefineSettings
from carrierflow.workflows.vasp_makers import VaspMakers

needs_gpaw = pytest.mark.skipif(
    python_with_gpaw() is None, reason="GPAW is not installed (bash setup.sh --gpaw)"
)

TINY = {"encut_eV": 250.0, "kspacing": 0.1, "ediff_eV": 1e-4}


def _run(calculator: Calculator, store: JobStore, workdir) -> dict:
    settings = DefectSettings(
        species="Li", min_image_distance_A=6.0, max_atoms=16, defect_kinds=["vacancy"]
    )
    maker = CarrierFlowMaker(calculator=calculator, settings=settings, system="Li tiny")
    return run_bcc_li(maker, store, workdir)


@pytest.fixture(scope="module")
def gpaw_li(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("gpaw")
    calculator = Calculator("gpaw", dft=TINY, fmax=0.1, workdir=str(root / "calculations"))
    calculator.check_can_run()
    store = JobStore(MemoryStore())
    first = _run(calculator, store, root)
    second = _run(calculator, store, root)
    return {"calculator": calculator, "first": first, "second": second, "store": store}


@pytest.mark.gpaw
@needs_gpaw
def test_bcc_li_vacancy_costs_energy(gpaw_li):
    [vacancy] = gpaw_li["first"]["results"]["reference"]["defects"]
    assert math.isfinite(vacancy["formation_energy_eV"])
    assert vacancy["formation_energy_eV"] > 0
    assert vacancy["converged"]
    assert gpaw_li["first"]["results"]["code_versions"][0].startswith("GPAW ")


@pytest.mark.gpaw
@needs_gpaw
def test_gpaw_uses_the_k_mesh_of_the_vasp_path(gpaw_li):
    settings = DftSettings(**TINY)
    vasp = VaspMakers(settings=settings, potcar_spec=True)
    for doc in gpaw_li["first"]["docs"]:
        structure = doc.structure
        kpoints = vasp.static().input_set_generator.get_input_set(structure, potcar_spec=True)
        for run in doc.code["runs"]:
            assert tuple(run["kpoints"]) == kpoint_mesh(structure, settings.kspacing)
            assert tuple(run["kpoints"]) == tuple(kpoints["KPOINTS"].kpts[0]), doc.label


@pytest.mark.gpaw
@needs_gpaw
def test_a_rerun_reuses_every_stored_dft_job(gpaw_li):
    assert gpaw_li["first"]["docs"] and not any(d.reused for d in gpaw_li["first"]["docs"])
    assert all(d.reused for d in gpaw_li["second"]["docs"])
    first, second = gpaw_li["first"]["results"], gpaw_li["second"]["results"]
    assert second["reference"]["lowest_eV"] == first["reference"]["lowest_eV"]


@pytest.mark.gpaw
@needs_gpaw
def test_a_dft_result_stored_by_another_version_of_the_code_is_computed_again(
    gpaw_li, tmp_path, caplog
):
    """A perfect cell of one GPAW (and its PAW setups) beside a defect of another is no E_f."""
    store = JobStore(MemoryStore())
    store.connect()
    store.docs_store._collection.insert_many(list(gpaw_li["store"].docs_store._collection.find()))
    [vacancy] = [d for d in gpaw_li["first"]["docs"] if d.task == "ion_relax"]
    store.docs_store._collection.update_many(
        {"output.label": vacancy.label}, {"$set": {"output.code.runs.0.code_version": "GPAW 0.1"}}
    )
    with caplog.at_level(logging.INFO, logger="carrierflow"):
        third = _run(gpaw_li["calculator"], store, tmp_path)
    [again] = [d for d in third["docs"] if d.label == vacancy.label]
    assert not again.reused
    assert again.code["runs"][0]["code_version"] != "GPAW 0.1"
    assert all(d.reused for d in third["docs"] if d.label != vacancy.label)
    assert f"{vacancy.label}: stored by GPAW 0.1, installed GPAW " in caplog.text


@pytest.mark.gpaw
@needs_gpaw
def test_bulk_relaxation_ends_with_a_single_point(gpaw_li):
    [bulk] = [d for d in gpaw_li["first"]["docs"] if d.task == "bulk_relax"]
    assert [r["task_label"] for r in bulk.code["runs"]] == ["bulk relax", "static"]


@pytest.mark.gpaw
@needs_gpaw
def test_every_gpaw_ionic_step_is_kept_with_its_forces_and_the_cell_steps_with_stress(gpaw_li):
    for doc in gpaw_li["first"]["docs"]:
        for run in doc.code["runs"]:
            lines = (Path(run["directory"]) / "gpaw-steps.jsonl").read_text().splitlines()
            steps = [json.loads(line) for line in lines]
            relaxes_cell = run["task_label"] == "bulk relax"
            assert steps, run["directory"]
            for step in steps:
                forces = np.array(step["forces"])
                assert forces.shape == (len(step["positions"]), 3)
                # the forces as DFT gave them; the optimizer's (constrained) largest force is
                # never above theirs
                assert step["raw_forces"]
                assert step["fmax"] <= np.linalg.norm(forces, axis=1).max() + 1e-6
                # the smeared free energy and its zero-width extrapolation differ by a smearing term
                assert abs(step["free_energy"] - step["energy"]) < 0.05 * len(forces)
                assert ("stress" in step) == relaxes_cell
                if relaxes_cell:
                    assert len(step["stress"]) == 6


@pytest.mark.gpaw
@needs_gpaw
def test_the_dft_frames_export_as_extended_xyz_that_ase_reads_back(gpaw_li, tmp_path):
    frames = dft_frames(gpaw_li["store"])
    steps = {
        Path(run["directory"]): (Path(run["directory"]) / "gpaw-steps.jsonl").read_text()
        for doc in gpaw_li["first"]["docs"]
        for run in doc.code["runs"]
    }
    # every ionic step of every run once, though the rerun reused (and stored) each calculation
    assert len(frames) == sum(len(text.splitlines()) for text in steps.values())
    card = write_dataset(frames, tmp_path / "li.extxyz", made_by="test")
    assert card["sha256"] == hashlib.sha256((tmp_path / "li.extxyz").read_bytes()).hexdigest()
    assert card["codes"] == [f"GPAW {gpaw_li['first']['results']['code_versions'][0][5:]}"]
    back = read(tmp_path / "li.extxyz", ":")
    assert len(back) == card["frames"] == len(frames)
    # the energy of a frame is the free energy its forces belong to, in eV
    free_energies = sorted(
        json.loads(line)["free_energy"] for text in steps.values() for line in text.splitlines()
    )
    assert sorted(f.get_potential_energy() for f in back) == pytest.approx(free_energies)
    for original, frame in zip(frames, back, strict=True):
        assert frame.get_potential_energy() == pytest.approx(original.get_potential_energy())
        assert np.allclose(frame.get_forces(), original.get_forces())
        assert frame.info["label"] == original.info["label"]
    relaxed = [f for f in back if f.info["task"] == "bulk_relax" and f.info["run"] == "bulk relax"]
    assert relaxed and all(f.get_stress().shape == (6,) for f in relaxed)


def test_missing_gpaw_is_one_clear_line(monkeypatch, capsys, tmp_path):
    if _imports_gpaw(sys.executable):
        pytest.skip("this interpreter has GPAW")
    monkeypatch.setattr("carrierflow.workflows.gpaw_makers.SYSTEM_PYTHONS", [])
    monkeypatch.delenv("CARRIERFLOW_GPAW_PYTHON", raising=False)
    out = ["--store", str(tmp_path / "s"), "--output", str(tmp_path / "o")]
    assert main(["run", "--system", "Li-In", "--calculator", "gpaw", *out]) == 2
    err = capsys.readouterr().err
    assert "GPAW is not installed: install GPAW and its PAW setups: 'apt-get install gpaw" in err


def test_fast_preset_is_coarser_and_says_so():
    fast = Calculator("gpaw", preset="fast", command="python3")
    study = Calculator("gpaw", command="python3")
    assert (fast.fmax, study.fmax) == (0.05, 0.01)
    assert fast.dft_settings.encut_eV < study.dft_settings.encut_eV
    assert fast.dft_settings.kspacing > study.dft_settings.kspacing
    assert fast.uncertainty_eV > study.uncertainty_eV
    assert fast.describe()["preset"] == "fast" and fast.label == "gpaw-fast"
    assert Calculator("gpaw", preset="fast", fmax=0.02, command="x").fmax == 0.02
    with pytest.raises(ValueError, match="potcars settings are VASP's"):
        Calculator("gpaw", dft={"potcars": {"Li": "Li"}}, command="x")


@pytest.fixture(scope="module")
def refined_li(tmp_path_factory) -> dict:
    """bcc Li screened with CHGNet, its vacancy refined with GPAW (an interstitial's CHGNet
    relaxations in bcc Li take minutes; transfer_candidates is tested apart)."""
    root = tmp_path_factory.mktemp("refine")
    screen = Calculator("chgnet", fmax=0.05)
    dft = Calculator("gpaw", dft=TINY, fmax=0.1, workdir=str(root / "calculations"))
    lithium, source = load_fixture("Li")
    phase = Phase(label="Li", structure=lithium.get_primitive_structure(), source=source)
    maker = CarrierFlowMaker(
        calculator=screen,
        settings=DefectSettings(
            species="Li", min_image_distance_A=6.0, max_atoms=16, defect_kinds=["vacancy"]
        ),
        system="Li tiny",
        refine=dft,
        refine_settings=RefineSettings(k=1, min_image_distance_A=6.0, max_atoms=16),
    )
    flow = maker.make(phase, [])
    responses = run_locally(flow, store=JobStore(MemoryStore()), root_dir=root)
    results = responses[flow.output.uuid][max(responses[flow.output.uuid])].output
    return {"results": as_document(results), "label": maker.label, "root": root}


@pytest.mark.gpaw
@needs_gpaw
def test_refinement_gives_the_dft_verdict_beside_the_stand_in(refined_li):
    results = refined_li["results"]
    assert refined_li["label"] == "chgnet+gpaw"
    assert results["calculator"]["name"] == "gpaw"
    assert results["refined_from"]["calculator"]["name"] == "chgnet"
    defects = results["reference"]["defects"]
    assert [d["kind"] for d in defects] == ["vacancy"]
    for defect in defects:
        screen = defect["screen"]
        assert screen["error_eV"] == pytest.approx(
            screen["formation_energy_eV"] - defect["formation_energy_eV"]
        )
        assert defect["provenance"]["runs"][0]["code_version"].startswith("GPAW")
    report = markdown_table(results)
    assert "stand-in error (eV)" in report and "Refined with DFT" in report
    write_report(results, refined_li["root"] / "out")
    assert (refined_li["root"] / "out" / "formation_energies.png").stat().st_size > 0


def test_lowest_defects_takes_k_of_each_kind_and_skips_shared_states(defect_outcome):
    outcome = defect_outcome
    defects = [
        outcome("v1", "vacancy", 0.5),
        outcome("v2", "vacancy", 0.4),
        outcome("i1", "interstitial", 0.3),
        outcome("i2", "interstitial", 0.2, [Flag(code=FlagCode.SHARED_STATE, text="as i1")]),
        outcome("i3", "interstitial", 0.6),
    ]
    assert [d.name for d in lowest_defects(defects, 1)] == ["v2", "i1"]
    assert [d.name for d in lowest_defects(defects, 2)] == ["v2", "v1", "i1", "i3"]


def test_dft_refines_the_screens_lowest_and_the_stand_ins_lowest_in_the_dft_cell(defect_outcome):
    def outcomes(energies: dict[str, float]):
        return [
            defect_outcome(name, "vacancy" if name[0] == "v" else "interstitial", e_f)
            for name, e_f in energies.items()
        ]

    screened = outcomes({"v1": 0.40, "v2": 0.45, "i1": 0.30, "i2": 0.31, "i3": 0.50})
    # the small cell reorders the near-degenerate interstitials; v2 relaxes there into v1's
    # state (1e-4 eV apart): one state, refined once
    in_cell = outcomes({"v1": 0.5200, "v2": 0.5199, "i1": 0.45, "i2": 0.33, "i3": 0.70})
    assert refinement_choice(screened, in_cell, 1) == {
        "v1": ["screen", "dft_cell"],
        "i1": ["screen"],
        "i2": ["dft_cell"],
    }
    # when both cells agree, nothing more
    in_cell[1].formation_energy_eV, in_cell[2].formation_energy_eV = 0.60, 0.30
    assert refinement_choice(screened, in_cell, 1) == {
        "v1": ["screen", "dft_cell"],
        "i1": ["screen", "dft_cell"],
    }


RECONSTRUCTED = Flag(code=FlagCode.HOST_RECONSTRUCTION, text="host reconstruction: far atoms moved")


def test_a_reconstruction_already_above_its_kinds_lowest_needs_no_local_relaxation(defect_outcome):
    def outcome(name, e_f, reconstructed=False):
        kind = "vacancy" if name[0] == "v" else "interstitial"
        return defect_outcome(name, kind, e_f, [RECONSTRUCTED] if reconstructed else [])

    # i1 lies 0.44 eV above i3, a final E_f: holding atoms only raises it, so it cannot win
    # (the 7net-0 loop's Li5In4 Li_i1 and Li_i3); v1 is its kind's only one: relaxed locally
    defects = [outcome("i1", 1.38, True), outcome("i3", 0.94), outcome("v1", 0.56, True)]
    skipped = local_not_needed(defects, 0.1)
    assert list(skipped) == ["i1"]
    assert "0.44 eV above i3" in skipped["i1"]
    # within the uncertainty it might still win once relaxed locally: relaxed
    assert local_not_needed([outcome("i1", 1.00, True), outcome("i3", 0.94)], 0.1) == {}
    # against another reconstruction nothing is final yet: the lowest is relaxed first, the
    # other waits to be judged against its local E_f (the 7net-0 loop's Li3In2 Li_i1, Li_i3)
    both = [outcome("i1", 1.38, True), outcome("i3", 0.94, True), outcome("v1", 0.56, True)]
    assert local_not_needed(both, 0.1) == {}
    assert relax_locally_first(both) == ["i3", "v1"]
    # with a final rival of its kind each one the margin kept is relaxed now
    assert relax_locally_first(both, [outcome("i5", 1.30)]) == ["i1", "i3", "v1"]
    # a learning round's new refinement against the earlier rounds' DFT defects, same cell
    assert list(local_not_needed([outcome("i5", 1.38, True)], 0.1, [outcome("i3", 0.94)])) == ["i5"]


def test_dft_relaxes_a_reconstruction_locally_only_where_it_can_change_the_verdict(
    defect_outcome, tmp_path
):
    # on EMT copper: three interstitials, two flagged reconstructed; the one above the final
    # lowest is left as it is, the other is relaxed again with the far field held
    from carrierflow.workflows.engine import calculation
    from carrierflow.workflows.jobs import plan_defects

    settings = DefectSettings(species="Cu", defect_kinds=["interstitial"], min_image_distance_A=7)
    plan = plan_defects("Cu", load_fixture("Cu")[0], settings)
    cells = [plan.cells[0]] * 3
    calculator = Calculator(name="emt")
    perfect = calculation(calculator, "static", plan.perfect, "Cu perfect supercell")
    outcomes = [
        defect_outcome("i1", "interstitial", 3.0, [RECONSTRUCTED]),
        defect_outcome("i2", "interstitial", 2.0),
        defect_outcome("i3", "interstitial", 1.5, [RECONSTRUCTED]),
    ]

    def judge(outcomes):
        starts = [c.structure for c in cells[: len(outcomes)]]
        return local_where_it_counts(
            "Cu", cells[: len(outcomes)], starts, outcomes, perfect.output, 0.0, calculator,
            settings, 4.0,
        )  # fmt: skip

    local = judge(outcomes)
    store = JobStore(MemoryStore())
    responses = run_locally(
        Flow([perfect, local]), store=store, root_dir=tmp_path, ensure_success=True
    )
    ended = store.get_output(local.uuid, load=True)
    assert [d.name for d in ended] == ["i1", "i2", "i3"]
    flags = [{f.code for f in d.flags} for d in ended]
    assert flags[0] == {FlagCode.HOST_RECONSTRUCTION, FlagCode.LOCAL_NOT_NEEDED}
    assert ended[0].local is None and ended[0].ranking_energy_eV == 3.0
    assert flags[1] == set() and ended[1].local is None
    assert FlagCode.LOCAL_RANKING in flags[2] and ended[2].local.steps >= 1
    assert len(responses) == 1 + 1 + 2  # the perfect cell, this job, one local relaxation

    # two reconstructions and nothing final: the lower (i3) is relaxed first, and i1, far above
    # its local E_f, is then judged not to need it
    outcomes = [
        defect_outcome("i1", "interstitial", 99.0, [RECONSTRUCTED]),
        defect_outcome("i3", "interstitial", 1.5, [RECONSTRUCTED]),
    ]
    local = judge(outcomes)
    responses = run_locally(
        local, store=store, root_dir=tmp_path, ensure_success=True, allow_external_references=True
    )
    ended = store.get_output(local.uuid, load=True)
    assert [d.name for d in ended] == ["i1", "i3"]
    assert ended[1].local is not None and ended[0].local is None
    [skipped] = [f.text for f in ended[0].flags if f.code == FlagCode.LOCAL_NOT_NEEDED]
    assert "above i3" in skipped
    assert len(responses) == 1 + 2 + 1  # this job, i3's local relaxation, the judge of i1


def test_screened_defects_move_to_the_dft_relaxed_host(defect_outcome):
    host = load_fixture("Li5In4")[0]
    screened = [
        defect_outcome(c.name, c.kind, frac_coords=c.frac_coords, multiplicity=c.multiplicity)
        for c in find_defects(host, "Li")
    ]
    strained = host.copy()
    strained.apply_strain(0.01)
    moved = transfer_candidates(screened, strained, "Li")
    assert [c.name for c in moved] == [d.name for d in screened]
    for candidate, defect in zip(moved, screened, strict=True):
        assert candidate.multiplicity == defect.multiplicity
        assert np.allclose(candidate.frac_coords, np.mod(defect.frac_coords, 1.0), atol=1e-6)
    renamed = screened[0].model_copy(update={"name": "v_Li_9z"})
    with pytest.raises(ValueError, match="v_Li_9z: no such vacancy"):
        transfer_candidates([renamed], strained, "Li")


@pytest.mark.slow
@pytest.mark.gpaw
@needs_gpaw
def test_a_real_li_in_vacancy_refined_with_dft(tmp_path):
    """The Li5In4 vacancy screened by 7net-l3i5 and refined with GPAW, on bcc Li's DFT μ: small
    cells and reduced settings (about half an hour on 2 cores), the real model structures."""
    output = tmp_path / "out"
    args = [
        "run",
        *("--species", "Li", "--hosts", "Li5In4", "--reference", "Li"),
        *("--defects", "vacancy", "--min-image-distance", "8", "--max-atoms", "72"),
        *("--refine", "gpaw", "--dft-preset", "fast", "--encut", "300", "--kspacing", "0.06"),
        *("--dft-min-image-distance", "4.5", "--dft-max-atoms", "18", "--cores", "2"),
        *("--store", str(tmp_path / "store"), "--workdir", str(tmp_path / "calculations")),
        *("--output", str(output)),
    ]
    assert main(args) == 0
    results = json.loads((output / "results.json").read_text())
    assert results["calculator"]["name"] == "gpaw"
    assert results["refined_from"]["calculator"]["model"] == "7net-l3i5"
    (host,) = results["hosts"]
    assert host["formula"] == "Li5In4" and host["supercell"]["natoms"] <= 18
    for phase in (results["reference"], host):
        (vacancy,) = phase["defects"]
        assert 0 < vacancy["formation_energy_eV"] < 3
        assert vacancy["provenance"]["runs"][0]["code_version"].startswith("GPAW")
        screen = vacancy["screen"]
        assert screen["error_eV"] == pytest.approx(
            screen["formation_energy_eV"] - vacancy["formation_energy_eV"]
        )


STEP = {
    "energy": -3.0,
    "free_energy": -3.01,
    "cell": np.eye(3).tolist(),
    "positions": [[0, 0, 0], [0.5, 0.5, 0.5]],
    "forces": [[0.1, 0, 0], [-0.1, 0, 0]],
}


def _frames_of_step_log(folder: Path, fixed: list[int], lines: list[dict]) -> list:
    """The training frames of a GPAW folder whose step log has ``lines`` (two Li atoms)."""
    from carrierflow.workflows.dataset import GPAW_INPUT, GPAW_STEPS, gpaw_frames

    spec = {"numbers": [3, 3], "kpts": [1, 1, 1], "settings": {}, "fixed": fixed}
    (folder / GPAW_INPUT).write_text(json.dumps(spec))
    (folder / GPAW_STEPS).write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return gpaw_frames(folder)


def test_steps_of_fixed_atoms_without_the_dft_forces_are_no_training_frames(tmp_path):
    step = {**STEP, "forces": [[0.1, 0, 0], [0, 0, 0]]}
    lines = [step, {**step, "raw_forces": True, "forces": [[0.1, 0, 0], [-0.1, 0, 0]]}]
    [frame] = _frames_of_step_log(tmp_path, [1], lines)
    assert frame.get_forces()[1, 0] == -0.1 and frame.info["step"] == 2


def _worker_steps(folder: Path, steps: int, relax_cell: bool = False) -> list[dict]:
    """Run the GPAW worker in ``folder`` on two Li atoms of a bcc cell, one pushed off its site
    (on it, when the cell relaxes), for at most ``steps`` ionic steps, on 2 MPI ranks where
    mpirun is there (as ``--cores 2`` runs it: a rank that read the step file while rank 0
    wrote it once aborted a relaxation); the recorded steps."""
    spec = {
        "numbers": [3, 3],
        "cell": (3.44 * np.eye(3)).tolist(),
        "frac": [[0, 0, 0], [0.5, 0.5, 0.5] if relax_cell else [0.56, 0.47, 0.5]],
        "fixed": [],
        "kpts": [2, 2, 2],
        "settings": {**TINY, "sigma_eV": 0.1, "smearing": "mp1"},
        "relax_cell": relax_cell,
        "steps": steps,
        "fmax": 1e-4,
        "maxstep_A": 0.05,
    }
    from carrierflow.workflows.dataset import GPAW_INPUT, GPAW_STEPS

    folder.mkdir(exist_ok=True)
    (folder / GPAW_INPUT).write_text(json.dumps(spec))
    cores = 2 if shutil.which("mpirun") else 1
    done = subprocess.run(
        GpawMaker(cores=cores).command(),
        cwd=folder,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in (folder / GPAW_STEPS).read_text().splitlines()]


@pytest.mark.gpaw
@needs_gpaw
def test_an_interrupted_gpaw_relaxation_goes_on_as_if_never_stopped(tmp_path):
    whole = _worker_steps(tmp_path / "whole", 4)
    _worker_steps(tmp_path / "resumed", 2)
    resumed = _worker_steps(tmp_path / "resumed", 4)
    # no step twice (the resumed run's first force call is at the last recorded geometry)
    assert len(resumed) == len(whole) == 5  # the start and 4 steps
    # the Hessian rebuilt from the recorded steps: the same path, up to the SCF noise of a fresh
    # start (1e-6 A here; from BFGS's initial guess instead, step 3 went 0.04 A elsewhere)
    for a, b in zip(whole, resumed, strict=True):
        assert np.allclose(a["positions"], b["positions"], atol=1e-4)
    # each step says what it cost, for timings across machines: its SCF and its seconds
    assert all(step["scf_iterations"] >= 1 and step["step_s"] > 0 for step in whole)


@pytest.mark.gpaw
@needs_gpaw
def test_a_relaxation_killed_while_it_wrote_a_step_computes_that_step_again(tmp_path):
    from carrierflow.workflows.dataset import GPAW_STEPS

    _worker_steps(tmp_path, 2)
    log = tmp_path / GPAW_STEPS
    text = log.read_text()
    log.write_text(text[: len(text) - 40])  # the third step's line cut 40 characters short
    steps = _worker_steps(tmp_path, 3)
    assert len(steps) == 4  # the start and 3 steps, each a whole line
    assert len(log.read_text().splitlines()) == 4


def test_a_step_log_cut_short_loses_its_last_step_and_a_broken_line_inside_is_an_error(
    tmp_path,
):
    from carrierflow.workflows.dataset import GPAW_STEPS, DatasetError, gpaw_frames

    moved = {**STEP, "positions": [[0, 0, 0], [0.51, 0.5, 0.5]], "free_energy": -3.02}
    _frames_of_step_log(tmp_path, [], [STEP, moved])
    log = tmp_path / GPAW_STEPS
    whole = log.read_text()
    # a worker still writing its second step (or killed while it did)
    log.write_text(whole[: len(whole) - 30])
    assert [f.info["step"] for f in gpaw_frames(tmp_path)] == [1]
    # a broken line before the last is no interruption: the file was damaged
    log.write_text(whole[: len(whole) - 30] + "\n" + json.dumps(STEP) + "\n")
    with pytest.raises(DatasetError, match=r"gpaw-steps.jsonl: line 2 is no recorded step"):
        gpaw_frames(tmp_path)


@pytest.mark.gpaw
@needs_gpaw
def test_a_cell_relaxation_resumed_from_positions_off_its_symmetry_by_1e_8_goes_on(tmp_path):
    # --resume-from reads positions back from 8 decimals; the symmetry constraint then moved
    # them after GPAW had set up, and GPAW 22.8 aborted (the Li-In bulk cells, 2026-12-02)
    from carrierflow.workflows.dataset import GPAW_STEPS

    _worker_steps(tmp_path, 1, relax_cell=True)
    log = tmp_path / GPAW_STEPS
    [step] = [json.loads(line) for line in log.read_text().splitlines()]
    step["positions"][1] = [x + 3e-9 for x in step["positions"][1]]
    log.write_text(json.dumps(step) + "\n")
    steps = _worker_steps(tmp_path, 2, relax_cell=True)
    # its start, not recorded again (1e-9 A away after symmetrizing), and two cell steps
    assert len(steps) == 3 and all("stress" in step for step in steps)
    assert steps[2]["cell"] != steps[0]["cell"]


def test_a_training_frame_says_what_its_dft_step_cost_where_the_step_log_does(tmp_path):
    timed = {**STEP, "scf_iterations": 14, "step_s": 160.5}
    moved = {**STEP, "positions": [[0, 0, 0], [0.51, 0.5, 0.5]]}  # recorded before 2026-12-03
    first, second = _frames_of_step_log(tmp_path, [], [timed, moved])
    assert (first.info["scf_iterations"], first.info["step_s"]) == (14, 160.5)
    assert "step_s" not in second.info


def test_a_step_recorded_twice_at_one_geometry_is_one_training_frame(tmp_path):
    moved = {**STEP, "positions": [[0, 0, 0], [0.51, 0.5, 0.5]], "free_energy": -3.02}
    again = {**moved, "free_energy": -3.0200001}  # a resumed run's start, recomputed
    frames = _frames_of_step_log(tmp_path, [], [STEP, moved, again, STEP])
    assert [f.info["step"] for f in frames] == [1, 2, 4]


@pytest.mark.gpaw
@needs_gpaw
def test_a_relaxation_recorded_on_another_machine_goes_on_from_its_last_frame(tmp_path):
    from contextlib import chdir

    from ase.io import write
    from pymatgen.core import Lattice, Structure

    from carrierflow.workflows.dataset import GPAW_STEPS, gpaw_frames

    pair = Structure(Lattice.cubic(3.44), ["Li", "Li"], [[0, 0, 0], [0.56, 0.47, 0.5]])
    cores = 2 if shutil.which("mpirun") else 1
    settings = DftSettings(**TINY).model_dump()
    maker = GpawMaker(name="ion relax", steps=3, fmax=1e-4, settings=settings, cores=cores)
    runs = {name: tmp_path / name for name in ("first", "again", "elsewhere")}
    for folder in runs.values():
        folder.mkdir()
    with chdir(runs["first"]):
        first = maker.run(pair)
    # the first machine's frames, as `carrierflow dataset` exports them
    frames = gpaw_frames(runs["first"])
    for atoms in frames:
        atoms.info.update(label="Li pair", task="ion_relax", run="ion relax", fingerprint="f" * 64)
    write(tmp_path / "frames.extxyz", frames, format="extxyz")
    resuming = GpawMaker(**{**maker.__dict__, "resume_from": str(tmp_path / "frames.extxyz")})
    nudged = pair.copy()
    nudged.translate_sites([1], [2e-5, 0, 0], frac_coords=False)  # 1e-8 A in the Li-In run
    with chdir(runs["again"]):
        again = resuming.run(nudged)
    steps = [json.loads(line) for line in (runs["again"] / GPAW_STEPS).read_text().splitlines()]
    # the recorded steps, and no new one: the last geometry was computed once more (the check)
    assert len(steps) == len(frames) == 4
    log = (runs["again"] / "gpaw-worker.log").read_text()
    assert "computed again: E differs from the recorded by" in log
    assert np.allclose(again.output.structure.cart_coords, first.output.structure.cart_coords)
    assert again.output.energy == pytest.approx(first.output.energy, abs=1e-3)
    # a start 0.01 A off is another relaxation: it runs from its own start
    moved = pair.copy()
    moved.translate_sites([1], [0.01, 0, 0], frac_coords=False)
    with chdir(runs["elsewhere"]):
        resuming.run(moved)
    own = json.loads((runs["elsewhere"] / GPAW_STEPS).read_text().splitlines()[0])
    assert np.allclose(own["positions"], moved.cart_coords)


@pytest.mark.gpaw
@needs_gpaw
def test_a_calculation_finished_on_another_machine_with_this_gpaw_is_taken_as_recorded(tmp_path):
    # a new machine resumes a loop from its data set: computing each finished calculation's
    # last step again cost one SCF each (an hour or more, estimated, for the 7net-0 loop's 29)
    from contextlib import chdir

    from ase.io import write
    from pymatgen.core import Lattice, Structure

    from carrierflow.workflows.dataset import gpaw_frames

    pair = Structure(Lattice.cubic(3.44), ["Li", "Li"], [[0, 0, 0], [0.56, 0.47, 0.5]])
    settings = DftSettings(**TINY).model_dump()
    makers = {
        "static": GpawMaker(name="static", steps=1, settings=settings),
        "relaxed": GpawMaker(name="ion relax", steps=20, fmax=0.5, settings=settings),
    }
    for name, maker in makers.items():
        for other in (False, True):
            runs = [tmp_path / f"{name}-{other}-{where}" for where in ("first", "again")]
            for folder in runs:
                folder.mkdir()
            with chdir(runs[0]):
                first = maker.run(pair)
            frames = gpaw_frames(runs[0])
            code = "GPAW 0.0" if other else first.record["code_version"]  # this machine's
            for atoms in frames:
                atoms.info.update(label="Li pair", run=maker.name, fingerprint="f" * 64, code=code)
            write(tmp_path / "frames.extxyz", frames, format="extxyz")
            resuming = GpawMaker(
                **{**maker.__dict__, "resume_from": str(tmp_path / "frames.extxyz")}
            )
            with chdir(runs[1]):
                again = resuming.run(pair)
            scf = [
                line for line in (runs[1] / "gpaw.txt").read_text().splitlines() if "iter:" in line
            ]
            log = (runs[1] / "gpaw-worker.log").read_text()
            assert again.output.energy == pytest.approx(first.output.energy, abs=1e-3)
            assert np.allclose(again.output.forces, first.output.forces, atol=1e-3)
            assert again.is_force_converged and again.output.n_steps == len(frames)
            if not other:  # no SCF here: the record is the result
                assert scf == [] and "as recorded in frames.extxyz" in log
                assert again.record["scf_iterations"] == frames[-1].info["scf_iterations"]
            else:  # another version's: computed again, as a check
                assert scf and "computed again" in log


def test_only_a_recorded_relaxation_of_the_same_calculation_start_and_settings_is_continued(
    tmp_path,
):
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    from carrierflow.workflows.dataset import recorded_relaxation

    settings = DftSettings(**TINY).model_dump()
    spec = {
        "numbers": [3, 3],
        "cell": (3.44 * np.eye(3)).tolist(),
        "frac": [[0, 0, 0], [0.56, 0.47, 0.5]],
        "fixed": [],
        "kpts": [2, 2, 2],
        "settings": settings,
        "run": "ion relax",
    }

    def relaxation(fingerprint, steps, fixed=(), shift=0.0, encut=250.0, label="Li pair"):
        frames = []
        for step in range(1, steps + 1):
            atoms = Atoms("Li2", cell=spec["cell"], scaled_positions=spec["frac"], pbc=True)
            atoms.positions[1, 0] += shift - 0.01 * (step - 1)
            atoms.calc = SinglePointCalculator(atoms, energy=-3.0 - step, forces=np.ones((2, 3)))
            atoms.info.update(
                energy_zero_width=-3.0 - step,
                step=step,
                kpts="2x2x2",
                dft_settings=json.dumps({**settings, "encut_eV": encut}, sort_keys=True),
                label=label,
                task="ion_relax",
                run="ion relax",
                fingerprint=fingerprint,
            )
            if fixed is not None:  # frames exported before 2026-12-02 do not say
                atoms.info["fixed_atoms"] = json.dumps(list(fixed))
            frames.append(atoms)
        return frames

    path = tmp_path / "frames.extxyz"
    write(
        path,
        relaxation("a" * 64, 2, shift=5e-5)  # the same start within 1e-4 A
        + relaxation("b" * 64, 3, shift=-5e-5)  # and a longer record of it: this one
        + relaxation("c" * 64, 5, fixed=[0])  # another relaxation: atom 0 fixed
        + relaxation("d" * 64, 5, encut=300.0)  # other DFT settings
        + relaxation("e" * 64, 5, shift=2e-4)  # another start
        # the same start, not saying what was fixed: another calculation's (a local relaxation)
        + relaxation("f" * 64, 6, fixed=None, label="Li pair (local)"),
        format="extxyz",
    )
    steps = recorded_relaxation(path, spec, "Li pair")
    assert [s["free_energy"] for s in steps] == [-4.0, -5.0, -6.0]
    assert steps[0]["recorded_in"] == f"frames.extxyz {'b' * 12}"
    assert recorded_relaxation(path, {**spec, "run": "bulk relax"}, "Li pair") is None
    assert len(recorded_relaxation(path, {**spec, "fixed": [0]}, "Li pair")) == 5
    assert len(recorded_relaxation(path, spec, "Li pair (local)")) == 6


def test_the_steps_of_an_unfinished_relaxation_are_exported_and_continued_elsewhere(tmp_path):
    from ase.io import write

    from carrierflow.workflows.dataset import (
        CALCULATION_FILE,
        GPAW_INPUT,
        GPAW_STEPS,
        recorded_relaxation,
        unfinished_frames,
    )

    spec = {
        "numbers": [3, 3],
        "cell": np.eye(3).tolist(),
        "frac": STEP["positions"],
        "fixed": [],
        "kpts": [1, 1, 1],
        "settings": DftSettings(**TINY).model_dump(),
        "run": "ion relax",
    }
    folder = tmp_path / "work" / "Li_pair-ion_relax-abcdef12"
    (folder / "1-ion_relax").mkdir(parents=True)
    (folder / CALCULATION_FILE).write_text(
        json.dumps({"label": "Li pair", "task": "ion_relax", "fingerprint": "a" * 64})
    )
    (folder / "1-ion_relax" / GPAW_INPUT).write_text(json.dumps(spec))
    moved = {**STEP, "positions": [[0, 0, 0], [0.51, 0.5, 0.5]], "free_energy": -3.02}
    lines = [{**STEP, "raw_forces": True}, {**moved, "raw_forces": True}]
    (folder / "1-ion_relax" / GPAW_STEPS).write_text("".join(json.dumps(x) + "\n" for x in lines))
    # a finished calculation's folder is the store's to export, not this
    assert unfinished_frames(tmp_path / "work", {"a" * 64}) == []
    frames = unfinished_frames(tmp_path / "work", set())
    assert [f.info["step"] for f in frames] == [1, 2]
    assert {(f.info["label"], f.info["run"], f.info["unfinished"]) for f in frames} == {
        ("Li pair", "ion relax", True)
    }
    write(tmp_path / "frames.extxyz", frames, format="extxyz")
    steps = recorded_relaxation(tmp_path / "frames.extxyz", spec, "Li pair")
    assert [s["free_energy"] for s in steps] == [-3.01, -3.02]


@pytest.mark.gpaw
@needs_gpaw
def test_a_dft_relaxation_from_a_stand_ins_minimum_starts_from_its_hessian_even_when_resumed(
    tmp_path,
):
    from contextlib import chdir

    from pymatgen.core import Lattice, Structure

    from carrierflow.workflows.dataset import GPAW_STEPS
    from carrierflow.workflows.gpaw_makers import GPAW_HESSIAN

    pair = Structure(Lattice.cubic(3.44), ["Li", "Li"], [[0, 0, 0], [0.56, 0.47, 0.5]])
    cores = 2 if shutil.which("mpirun") else 1
    stand_in = Calculator("sevennet", model="7net-0")
    [guided] = Calculator("gpaw", dft=TINY, fmax=1e-4, cores=cores).relax_from_minimum(stand_in)
    assert guided.hessian_from == {"name": "sevennet", "model": "7net-0"}

    def steps(maker, folder, limit):
        folder.mkdir(exist_ok=True)
        with chdir(folder):
            GpawMaker(**{**maker.__dict__, "steps": limit}).run(pair)
        return [json.loads(line)["positions"] for line in (folder / GPAW_STEPS).open()]

    whole = np.array(steps(guided, tmp_path / "whole", 4))
    assert np.load(tmp_path / "whole" / GPAW_HESSIAN).shape == (6, 6)
    # GPAW computes with the pair's mirror z -> -z (its forces have no z): every step keeps it,
    # where the stand-in's Hessian, symmetric only to its rounding, broke it and GPAW aborted
    assert np.allclose(whole[:, :, 2], [0.0, 3.44 / 2], rtol=0, atol=1e-9)
    # BFGS's first step is the force over the guessed curvature: 70 eV/A^2 would move the pushed
    # atom by its force / 70, the stand-in's curvature of bcc Li (a few eV/A^2) moves it further
    first_forces = json.loads((tmp_path / "whole" / GPAW_STEPS).open().readline())["forces"]
    plain_step = np.abs(first_forces).max() / 70.0
    assert np.abs(whole[1] - whole[0]).max() > 3 * plain_step
    # interrupted after two steps and resumed: the same guess (kept in the folder), the same path
    steps(guided, tmp_path / "resumed", 2)
    resumed = np.array(steps(guided, tmp_path / "resumed", 4))
    assert np.allclose(whole, resumed, atol=1e-4)
