"""Shared fixtures: one EMT run of the Cu-Au analogue, reused by many tests."""

from __future__ import annotations

import json
import shutil
import sys
import warnings

import pytest
from helpers import cu_au
from pymatgen.core import SETTINGS
from standin import STANDIN, write_fake_potcars

from carrierflow.analysis.schemas import DefectOutcome
from carrierflow.workflows.cli import main

warnings.filterwarnings("ignore")


@pytest.fixture(scope="session")
def emt_run(tmp_path_factory) -> dict:
    """The Cu-Au analogue with EMT: results, store and output folder."""
    root = tmp_path_factory.mktemp("emt")
    store, output = root / "store", root / "out"
    code = main(cu_au("run", str(store), str(output)))
    assert code == 0
    results = json.loads((output / "results.json").read_text())
    return {"results": results, "store": store, "output": output, "root": root}


@pytest.fixture(scope="session")
def emt_migration(emt_run, tmp_path_factory):
    """The EMT analogue with migration barriers, on a copy of the EMT run's store (its defect
    calculations are reused)."""
    root = tmp_path_factory.mktemp("emt-migration")
    store = root / "store"
    shutil.copytree(emt_run["store"], store)
    assert main(cu_au("run", str(store), str(root / "out"), "--migration")) == 0
    results = json.loads((root / "out" / "results.json").read_text())
    return {"results": results, "store": store, "root": root}


@pytest.fixture(autouse=True)
def _hermetic_settings(monkeypatch):
    """Tests never reach the Materials Project unless they mock it, and never see the
    developer's POTCARs or VASP command."""
    for name in ("MP_API_KEY", "CARRIERFLOW_VASP_CMD"):
        monkeypatch.delenv(name, raising=False)
    for key in ("PMG_MAPI_KEY", "PMG_VASP_PSP_DIR"):
        monkeypatch.delitem(SETTINGS, key, raising=False)


@pytest.fixture
def standin_vasp(tmp_path, monkeypatch) -> dict:
    """The stand-in VASP (SYNTHETIC output from EMT) with fake POTCARs; its runs are logged."""
    potcars = write_fake_potcars(tmp_path / "potcars")
    monkeypatch.setitem(SETTINGS, "PMG_VASP_PSP_DIR", str(potcars))
    log = tmp_path / "standin.log"
    monkeypatch.setenv("STANDIN_VASP_LOG", str(log))
    monkeypatch.delenv("STANDIN_VASP_FAIL_FORMULA", raising=False)
    return {"command": f"{sys.executable} {STANDIN}", "log": log, "potcars": potcars}


@pytest.fixture
def defect_outcome():
    """A factory of assessed-defect documents with only the fields a test cares about."""

    def make(name, kind, formation_energy_eV=0.0, flags=(), **fields):
        return DefectOutcome(
            **{
                "host": "X",
                "species": "Li",
                "frac_coords": [0, 0, 0],
                "multiplicity": 1,
                "energy_eV": 0.0,
                "converged": True,
                "steps": 1,
                "max_displacement_A": 0.0,
                "far_field_displacement_A": 0.0,
                "defect_shift_A": 0.0,
                **fields,
            },
            name=name,
            kind=kind,
            formation_energy_eV=formation_energy_eV,
            flags=list(flags),
        )

    return make
