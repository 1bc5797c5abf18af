"""The VASP path without VASP: inputs against the study's settings, and the whole flow through
atomate2 and custodian against the stand-in ``tests/standin/vasp_std.py`` (SYNTHETIC output,
energies from EMT)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.io import read
from pymatgen.core import SETTINGS, Lattice, Structure
from pymatgen.io.vasp import Incar, Kpoints, Poscar, Potcar, Vasprun
from standin import STANDIN, write_fake_potcars

from carrierflow.structures.sources import load_fixture
from carrierflow.workflows.calculators import Calculator
from carrierflow.workflows.cli import main
from carrierflow.workflows.dataset import dft_frames, write_dataset
from carrierflow.workflows.dft import kpoint_mesh
from carrierflow.workflows.jobs import plan_defects
from carrierflow.workflows.schemas import DefectSettings
from carrierflow.workflows.store import open_store

SPACING = 0.03


def test_kpoint_mesh_of_bcc_li_by_hand():
    conventional = load_fixture("Li")[0]
    a = conventional.lattice.a
    assert len(conventional) == 2 and conventional.lattice.is_orthogonal
    # cubic cell: |b_i| = 2 pi / a
    assert kpoint_mesh(conventional, SPACING) == (math.ceil(1 / (a * SPACING)),) * 3
    # bcc primitive cell: |b_i| = 2 pi sqrt(2) / a
    primitive = conventional.get_primitive_structure()
    assert len(primitive) == 1
    assert kpoint_mesh(primitive, SPACING) == (math.ceil(math.sqrt(2) / (a * SPACING)),) * 3


def test_kpoint_mesh_of_li5in4_and_its_supercells_by_hand():
    host = load_fixture("Li5In4")[0]
    a, c = host.lattice.a, host.lattice.c
    # hexagonal cell: |b_1| = |b_2| = 4 pi / (sqrt(3) a), |b_3| = 2 pi / c
    in_plane = math.ceil(2 / (math.sqrt(3) * a * SPACING))
    assert kpoint_mesh(host, SPACING) == (in_plane, in_plane, math.ceil(1 / (c * SPACING)))
    doubled = host.make_supercell([2, 2, 1], in_place=False)
    in_plane = math.ceil(2 / (math.sqrt(3) * 2 * a * SPACING))
    assert kpoint_mesh(doubled, SPACING) == (in_plane, in_plane, math.ceil(1 / (c * SPACING)))
    # defect cells share the perfect supercell's lattice, so they share its mesh
    plan = plan_defects("Li5In4", host, DefectSettings(species="Li"))
    perfect_mesh = kpoint_mesh(plan.perfect, SPACING)
    assert all(kpoint_mesh(start, SPACING) == perfect_mesh for start in plan.starts)
    assert math.prod(perfect_mesh) < math.prod(kpoint_mesh(host, SPACING))


def test_kpoint_mesh_never_drops_below_one_and_refuses_bad_spacing():
    big = Structure(Lattice.cubic(60.0), ["Li"], [[0, 0, 0]])
    assert kpoint_mesh(big, SPACING) == (1, 1, 1)
    with pytest.raises(ValueError, match="spacing must be positive"):
        kpoint_mesh(big, 0)


def _inputs(folder: Path) -> tuple[Incar, Kpoints, Poscar, list[str]]:
    incar = Incar.from_file(folder / "INCAR")
    kpoints = Kpoints.from_file(folder / "KPOINTS")
    poscar = Poscar.from_file(folder / "POSCAR", check_for_potcar=False)
    if (folder / "POTCAR").exists():
        symbols = Potcar.from_file(folder / "POTCAR").symbols
    else:
        symbols = (folder / "POTCAR.spec").read_text().split()
    return incar, kpoints, poscar, symbols


STUDY_INCAR = {
    "GGA": "Pe",
    "PREC": "Accurate",
    "ENCUT": 500,
    "EDIFF": 1e-6,
    "EDIFFG": -0.01,
    "ISMEAR": 1,
    "SIGMA": 0.1,
    "ISPIN": 1,
    "LREAL": False,
}


@pytest.mark.parametrize("potcars", ["spec", "files"])
def test_every_li_in_job_gets_the_study_inputs(tmp_path, capsys, monkeypatch, potcars):
    if potcars == "files":
        monkeypatch.setitem(
            SETTINGS, "PMG_VASP_PSP_DIR", str(write_fake_potcars(tmp_path / "potcars"))
        )
    code = main(["write-inputs", "--system", "Li-In", "--calculator", "vasp", str(tmp_path / "in")])
    assert code == 0, capsys.readouterr().err
    index = json.loads((tmp_path / "in" / "calculations.json").read_text())
    tasks = {entry["task"] for entry in index}
    assert tasks == {"bulk_relax", "static", "ion_relax"}
    assert {e["job"] for e in index} >= {"Li bulk", "Li5In4 perfect supercell", "Li3In2 bulk"}
    for entry in index:
        incar, kpoints, poscar, symbols = _inputs(tmp_path / "in" / entry["folder"])
        for tag, value in STUDY_INCAR.items():
            assert incar[tag] == value, (entry["folder"], tag)
        expected = {
            "bulk_relax": {"ISIF": 3, "IBRION": 2},
            "ion_relax": {"ISIF": 2, "IBRION": 2},
            "static": {"NSW": 0, "IBRION": -1},
        }[entry["task"]]
        assert {tag: incar[tag] for tag in expected} == expected, entry["folder"]
        assert kpoints.style == Kpoints.supported_modes.Gamma
        assert tuple(kpoints.kpts[0]) == kpoint_mesh(poscar.structure, SPACING)
        assert list(kpoints.kpts[0]) == entry["kpoints"]
        # one POTCAR per POSCAR species block, in order; Materials Project choices
        choice = {"Li": "Li_sv", "In": "In_d"}
        assert symbols == [choice[el] for el in poscar.site_symbols], entry["folder"]
        assert len(poscar.structure) == entry["natoms"]
    out = capsys.readouterr().out
    assert ("POTCAR.spec" in out) == (potcars == "spec")


def test_overrides_reach_the_inputs_and_are_recorded(tmp_path, capsys):
    args = ["--system", "Li-In", "--calculator", "vasp", "--encut", "520", "--kspacing", "0.05"]
    args += ["--incar", "NELM=150", "ALGO=Fast", "--potcar", "In=In", "--defects", "vacancy"]
    assert main(["write-inputs", str(tmp_path / "in"), *args]) == 0
    incar, kpoints, poscar, symbols = _inputs(tmp_path / "in" / "Li5In4_bulk")
    assert (incar["ENCUT"], incar["NELM"], incar["ALGO"]) == (520, 150, "Fast")
    assert tuple(kpoints.kpts[0]) == kpoint_mesh(poscar.structure, 0.05)
    assert symbols == ["Li_sv", "In"]
    calc = Calculator(
        "vasp", dft={"encut_eV": 520, "kspacing": 0.05, "incar": {"NELM": 150}}, command="x"
    )
    assert calc.describe()["overrides"] == {
        "encut_eV": 520,
        "kspacing": 0.05,
        "incar": {"NELM": 150},
    }
    assert calc.describe()["settings"]["sigma_eV"] == 0.1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "VASP command 'vasp_std' not found"),
        (["--vasp-cmd", "python3"], "VASP needs POTCARs: set PMG_VASP_PSP_DIR"),
        (["--encut", "-5"], "invalid DFT setting --encut: input should be greater than 0"),
        (["--kspacing", "nan"], "invalid DFT setting --kspacing: input should be a finite number"),
        (["--incar", "NELM"], "--incar takes KEY=VALUE pairs, got 'NELM'"),
        # applied but recorded as encut_eV 500; overwritten by each job
        (["--incar", "encut=600"], "--incar: ENCUT is set by --encut, not by --incar"),
        (["--incar", "NSW=300"], "NSW is set by each job (relaxation, single point, NEB)"),
    ],
)
def test_vasp_that_cannot_run_is_one_clear_line(capsys, tmp_path, args, message):
    out = ["--store", str(tmp_path / "s"), "--output", str(tmp_path / "o")]
    assert main(["run", "--system", "Li-In", "--calculator", "vasp", *args, *out]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("calculator", ["emt", "gpaw"])
def test_write_inputs_is_for_vasp(capsys, tmp_path, calculator):
    args = ["write-inputs", str(tmp_path), "--system", "Cu-Au", "--calculator", calculator]
    assert main(args) == 2
    assert "write-inputs writes VASP input folders" in capsys.readouterr().err


@pytest.mark.parametrize(
    "option",
    [
        ["--learn", "gpaw"],
        ["--refine", "vasp"],
        ["--store", "s"],
        ["--migration"],
        # the folders hold each defect's first start in the final cell
        ["--starts", "3"],
        ["--screen-image-distance", "6"],
        ["--temperature", "600"],
    ],
)
def test_write_inputs_refuses_options_that_only_a_run_uses(capsys, tmp_path, option):
    """An option write-inputs would ignore is no option of it: the folders a user runs by hand
    never silently differ from what the command line asked for."""
    args = ["write-inputs", str(tmp_path / "in"), "--system", "Li-In", "--calculator", "vasp"]
    with pytest.raises(SystemExit) as stop:
        main([*args, *option])
    assert stop.value.code == 2
    assert f"unrecognized arguments: {' '.join(option)}" in capsys.readouterr().err
    assert not (tmp_path / "in").exists()


def _vacancy_cell_formula() -> str:
    host = load_fixture("Cu3Au")[0].get_primitive_structure()
    plan = plan_defects("Cu3Au", host, DefectSettings(species="Cu", defect_kinds=["vacancy"]))
    return plan.starts[0].composition.formula.replace(" ", "")


@pytest.fixture(scope="module")
def vasp_runs(tmp_path_factory) -> dict:
    """The Cu-Au analogue with --calculator vasp against the stand-in: a first run in which one
    defect's VASP fails, then the rerun after the cause is gone."""
    root = tmp_path_factory.mktemp("vasp")
    log = root / "standin.log"
    args = ["run", "--system", "Cu-Au", "--calculator", "vasp"]
    args += ["--vasp-cmd", f"{sys.executable} {STANDIN}", "--workdir", str(root / "calculations")]
    args += ["--store", str(root / "store"), "--output", str(root / "out")]
    runs = {"root": root, "failing_formula": _vacancy_cell_formula()}
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(SETTINGS, "PMG_VASP_PSP_DIR", str(write_fake_potcars(root / "potcars")))
        patch.setattr("carrierflow.workflows.vasp_makers.CUSTODIAN_POLLING_S", 0.5)
        patch.setenv("STANDIN_VASP_LOG", str(log))
        patch.setenv("STANDIN_VASP_FAIL_FORMULA", runs["failing_formula"])
        patch.setattr("sys.stderr", stderr := _Capture())
        runs["first_code"] = main(args)
        runs["first_err"] = stderr.text()
        runs["first_log"] = log.read_text().splitlines()
        patch.delenv("STANDIN_VASP_FAIL_FORMULA")
        log.unlink()
        runs["second_code"] = main(args)
        runs["second_log"] = log.read_text().splitlines()
    runs["results"] = json.loads((root / "out" / "results.json").read_text())
    return runs


class _Capture:
    """A stand-in for sys.stderr that keeps what the first run printed."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def text(self) -> str:
        return "".join(self.parts)


def test_a_failed_vasp_job_is_named_and_stored(vasp_runs):
    assert vasp_runs["first_code"] == 1
    err = vasp_runs["first_err"]
    assert "1 calculation(s) failed" in err
    assert "Cu3Au v_Cu_3c (ion_relax)" in err
    assert "synthetic failure requested" in err
    # the other defects of the same run finished
    assert any("Cu3Au Cu_i1: E = " in line for line in err.splitlines())


def test_the_rerun_computes_only_the_failed_job(vasp_runs):
    assert vasp_runs["second_code"] == 0
    assert vasp_runs["second_log"] == [f"{vasp_runs['failing_formula']} NSW=99 ISIF=2"]


def test_bulk_is_relaxed_twice_then_static(vasp_runs):
    for phase in [vasp_runs["results"]["reference"], *vasp_runs["results"]["hosts"]]:
        runs = phase["provenance"]["bulk"]["runs"]
        assert [r["task_label"] for r in runs] == ["bulk relax 1", "bulk relax 2", "bulk static"]
        assert all(r["state"] == "successful" for r in runs)
        assert all(Path(r["directory"].split(":", 1)[-1]).is_dir() for r in runs)


def test_vasp_results_carry_version_settings_and_task_ids(vasp_runs):
    results = vasp_runs["results"]
    assert results["calculator"]["settings"]["encut_eV"] == 500
    assert results["calculator"]["overrides"] == {}
    assert all("SYNTHETIC" in v.upper() for v in results["code_versions"])
    for phase in [results["reference"], *results["hosts"]]:
        for defect in phase["defects"]:
            assert defect["provenance"]["job_uuid"]
            [run] = defect["provenance"]["runs"]
            assert run["task_label"] == "ion relax" and len(run["kpoints"]) == 3


def test_vasp_formation_energies_equal_the_direct_emt_run(vasp_runs, emt_run):
    # same structures, same calculator behind the stand-in: the wiring adds nothing
    vasp, direct = vasp_runs["results"], emt_run["results"]
    for got, want in zip(
        [vasp["reference"], *vasp["hosts"]], [direct["reference"], *direct["hosts"]], strict=True
    ):
        assert [d["name"] for d in got["defects"]] == [d["name"] for d in want["defects"]]
        for a, b in zip(got["defects"], want["defects"], strict=True):
            assert a["formation_energy_eV"] == pytest.approx(b["formation_energy_eV"], abs=2e-3)
        assert got["dominant_carrier"] == want["dominant_carrier"]


def test_refining_with_the_stand_in_vasp_reproduces_the_screen(tmp_path, capsys, monkeypatch):
    # EMT screens, and "DFT" is the stand-in VASP, which computes EMT: the refinement must
    # reproduce the screen's energies in the same cell, so the stand-in error is zero
    monkeypatch.setitem(SETTINGS, "PMG_VASP_PSP_DIR", str(write_fake_potcars(tmp_path / "pot")))
    monkeypatch.setattr("carrierflow.workflows.vasp_makers.CUSTODIAN_POLLING_S", 0.5)
    args = ["run", "--system", "Cu-Au", "--calculator", "emt", "--refine", "vasp"]
    args += ["--vasp-cmd", f"{sys.executable} {STANDIN}", "--workdir", str(tmp_path / "calc")]
    args += ["--dft-min-image-distance", "7", "--store", str(tmp_path / "store")]
    args += ["--output", str(tmp_path / "out")]
    assert main(args) == 0, capsys.readouterr().err
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["calculator"]["name"] == "vasp"
    assert results["refined_from"]["calculator"]["name"] == "emt"
    for phase in [results["reference"], *results["hosts"]]:
        assert {d["kind"] for d in phase["defects"]} == {"interstitial", "vacancy"}
        assert phase["supercell"]["min_image_distance_A"] >= 7
        for defect in phase["defects"]:
            assert defect["screen"]["error_eV"] == pytest.approx(0, abs=2e-3)
            assert defect["provenance"]["runs"][0]["task_label"] == "ion relax"
        # per kind, one defect is the screen's lowest and one the stand-in's in the DFT cell
        for kind in ("vacancy", "interstitial"):
            chosen = [d["screen"]["chosen_by"] for d in phase["defects"] if d["kind"] == kind]
            assert sum("screen" in c for c in chosen) == 1
            assert sum("dft_cell" in c for c in chosen) == 1
    report = (tmp_path / "out" / "results.md").read_text()
    assert "stand-in error (eV)" in report
    assert "from its relaxations of every candidate in the DFT supercell" in report
    assert "| lowest in |" in report and "DFT cell |" in report


def test_with_starts_dft_refines_the_lowest_state_of_a_search_in_the_dft_cell(
    tmp_path, capsys, monkeypatch
):
    # the stand-in VASP computes EMT: DFT relaxed from the stand-in's lowest state reproduces
    # that state's E_f, so a DFT E_f equal to the search's lowest says where DFT started
    monkeypatch.setitem(SETTINGS, "PMG_VASP_PSP_DIR", str(write_fake_potcars(tmp_path / "pot")))
    monkeypatch.setattr("carrierflow.workflows.vasp_makers.CUSTODIAN_POLLING_S", 0.5)
    args = ["run", "--system", "Cu-Au", "--calculator", "emt", "--refine", "vasp"]
    args += ["--vasp-cmd", f"{sys.executable} {STANDIN}", "--workdir", str(tmp_path / "calc")]
    args += ["--dft-min-image-distance", "7", "--store", str(tmp_path / "store")]
    args += ["--defects", "interstitial", "--starts", "3", "--output", str(tmp_path / "out")]
    assert main(args) == 0, capsys.readouterr().err
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    searches = []
    for phase in [results["reference"], *results["hosts"]]:
        (defect,) = phase["defects"]
        search = defect["screen"]["search"]
        assert len(search["starts"]) + len(search["collapsed"]) == 3
        lowest = min(search["formation_energies_eV"])
        assert defect["screen"]["formation_energy_eV"] == pytest.approx(lowest, abs=1e-6)
        assert defect["formation_energy_eV"] == pytest.approx(lowest, abs=2e-3)
        searches.append(search)
    # the search was no formality: some starts ended in other states, higher ones
    assert any(s["distinct_states"] > 1 and s["spread_eV"] > 0.01 for s in searches)


@pytest.fixture(scope="module")
def vasp_migration(vasp_runs) -> dict:
    """Migration barriers through the stand-in VASP's NEB mode (SYNTHETIC, EMT), on the VASP
    run's store, then the same command again."""
    root = vasp_runs["root"]
    log = root / "standin-migration.log"
    args = ["run", "--system", "Cu-Au", "--calculator", "vasp", "--migration"]
    args += ["--vasp-cmd", f"{sys.executable} {STANDIN}", "--workdir", str(root / "calculations")]
    args += ["--store", str(root / "store"), "--output", str(root / "migration")]
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(SETTINGS, "PMG_VASP_PSP_DIR", str(root / "potcars"))
        patch.setattr("carrierflow.workflows.vasp_makers.CUSTODIAN_POLLING_S", 0.5)
        patch.setenv("STANDIN_VASP_LOG", str(log))
        assert main(args) == 0
        first_log = log.read_text().splitlines()
        log.unlink()
        assert main(args) == 0
    return {
        "results": json.loads((root / "migration" / "results.json").read_text()),
        "log": first_log,
        "rerun_log": log.read_text().splitlines() if log.exists() else [],
    }


def _hops(results) -> dict:
    return {
        hop["name"]: hop
        for phase in [results["reference"], *results["hosts"]]
        for carrier in phase["transport"]["carriers"]
        for hop in carrier["hops"]
    }


def test_vasp_neb_gets_the_study_inputs_and_is_reused(vasp_migration):
    nebs = [line for line in vasp_migration["log"] if "IMAGES=" in line]
    assert nebs and all(line.endswith("IMAGES=5") for line in nebs)
    assert vasp_migration["rerun_log"] == []  # the rerun computes nothing
    for hop in _hops(vasp_migration["results"]).values():
        [run] = hop["provenance"]["neb"]["runs"]
        assert run["task_label"] == "NEB" and "SYNTHETIC" in run["code_version"].upper()
        assert len(run["kpoints"]) == 3
        assert len(hop["energies_eV"]) == 7  # endpoints from their relaxations, 5 images
        folder = Path(run["directory"].split(":", 1)[-1])
        [written] = [f for f in folder.glob("INCAR*") if ".orig" not in f.name]  # custodian's copy
        incar = Incar.from_file(written)
        assert incar["IMAGES"] == 5 and incar["LCLIMB"] and incar["IBRION"] == 3
        assert incar["ENCUT"] == 500 and incar["EDIFF"] == 1e-6 and incar["EDIFFG"] == -0.05


def test_vasp_barriers_equal_the_direct_emt_barriers(vasp_migration, emt_migration):
    # the same endpoints and the same calculator behind the stand-in: the VASP NEB path (inputs,
    # custodian, parsing, endpoint energies from the relaxations) adds nothing
    # (split interstitials may relax to slightly different states in the two relaxers, so
    # their hops may differ; vacancy hops go between the same sites)
    vasp, direct = _hops(vasp_migration["results"]), _hops(emt_migration["results"])
    vacancy_hops = {name for name, hop in direct.items() if hop["kind"] == "vacancy"}
    assert len(vacancy_hops) == 2 and vacancy_hops <= vasp.keys()
    compared = [name for name in vasp.keys() & direct.keys() if direct[name]["counts"]]
    assert vacancy_hops <= set(compared)
    for name in compared:
        assert vasp[name]["barrier_eV"] == pytest.approx(direct[name]["barrier_eV"], abs=0.03)


def test_the_vasp_ionic_steps_export_as_training_frames(vasp_runs, tmp_path):
    frames = dft_frames(open_store(vasp_runs["root"] / "store", create=False))
    defects = [
        defect
        for phase in [vasp_runs["results"]["reference"], *vasp_runs["results"]["hosts"]]
        for defect in phase["defects"]
    ]
    for defect in defects:
        provenance = defect["provenance"]
        folders = [Path(run["directory"].split(":", 1)[-1]) for run in provenance["runs"]]
        steps = sum(
            len(Vasprun(next(folder.glob("vasprun.xml*"))).ionic_steps) for folder in folders
        )
        mine = [f for f in frames if f.info["job_uuid"] == provenance["job_uuid"]]
        # every ionic step of the defect's relaxation, once
        assert len(mine) == steps > 0, defect["name"]
        assert [f.info["step"] for f in mine] == list(range(1, steps + 1))
    card = write_dataset(frames, tmp_path / "cu-au.extxyz", made_by="test")
    assert card["codes"] and all(code.startswith("VASP ") for code in card["codes"])
    back = read(tmp_path / "cu-au.extxyz", ":")
    assert len(back) == len(frames) > len(defects)
    for frame in back:
        assert frame.get_forces().shape == (len(frame), 3)
        assert np.isfinite(frame.get_potential_energy())
