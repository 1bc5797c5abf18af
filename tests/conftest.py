"""Shared fixtures: one EMT run of the Cu-Au analogue, reused by many tests."""

from __future__ import annotations

import json
import warnings

import pytest

from carrierflow.workflows.cli import main

warnings.filterwarnings("ignore")


@pytest.fixture(scope="session")
def emt_run(tmp_path_factory) -> dict:
    """The Cu-Au analogue with EMT: results, store and output folder."""
    root = tmp_path_factory.mktemp("emt")
    store, output = root / "store", root / "out"
    code = main(
        [
            "run",
            "--system",
            "Cu-Au",
            "--calculator",
            "emt",
            "--store",
            str(store),
            "--output",
            str(output),
        ]
    )
    assert code == 0
    results = json.loads((output / "results.json").read_text())
    return {"results": results, "store": store, "output": output, "root": root}


@pytest.fixture(autouse=True)
def _no_materials_project_key(monkeypatch):
    """Tests never reach the Materials Project unless they mock it."""
    monkeypatch.delenv("MP_API_KEY", raising=False)
    monkeypatch.setattr("pymatgen.core.SETTINGS", {}, raising=False)
