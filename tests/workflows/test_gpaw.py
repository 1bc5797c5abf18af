"""Real DFT with GPAW on tiny cells: the one-atom bcc Li cell relaxed, and a vacancy in a 15-atom
supercell, at a low cut-off and a coarse mesh (seconds per SCF)."""

from __future__ import annotations

import math
import sys

import pytest
from jobflow import JobStore, run_locally
from maggma.stores import MemoryStore

from carrierflow.structures.sources import load_fixture
from carrierflow.workflows.calculators import Calculator
from carrierflow.workflows.cli import main
from carrierflow.workflows.dft import DftSettings, kpoint_mesh
from carrierflow.workflows.flows import CarrierFlowMaker, Phase
from carrierflow.workflows.gpaw_makers import _imports_gpaw, python_with_gpaw
from carrierflow.workflows.schemas import CalculationDoc, DefectSettings
from carrierflow.workflows.vasp_makers import VaspMakers

needs_gpaw = pytest.mark.skipif(
    python_with_gpaw() is None, reason="GPAW is not installed (bash setup.sh --gpaw)"
)

TINY = {"encut_eV": 250.0, "kspacing": 0.1, "ediff_eV": 1e-4}


def _run(calculator: Calculator, store: JobStore, workdir) -> dict:
    lithium, source = load_fixture("Li")
    settings = DefectSettings(
        species="Li", min_image_distance_A=6.0, max_atoms=16, defect_kinds=["vacancy"]
    )
    phase = Phase(label="Li", structure=lithium.get_primitive_structure(), source=source)
    flow = CarrierFlowMaker(calculator=calculator, settings=settings, system="Li tiny").make(
        phase, []
    )
    responses = run_locally(flow, store=store, root_dir=workdir, raise_immediately=True)
    docs = [
        r.output
        for job in responses.values()
        for r in job.values()
        if isinstance(r.output, CalculationDoc)
    ]
    return {"results": responses[flow.output.uuid][1].output, "docs": docs}


@pytest.fixture(scope="module")
def gpaw_li(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("gpaw")
    calculator = Calculator("gpaw", dft=TINY, fmax=0.1, workdir=str(root / "calculations"))
    calculator.check_can_run()
    store = JobStore(MemoryStore())
    first = _run(calculator, store, root)
    second = _run(calculator, store, root)
    return {"calculator": calculator, "first": first, "second": second}


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
def test_bulk_relaxation_ends_with_a_single_point(gpaw_li):
    [bulk] = [d for d in gpaw_li["first"]["docs"] if d.task == "bulk_relax"]
    assert [r["task_label"] for r in bulk.code["runs"]] == ["bulk relax", "static"]


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
