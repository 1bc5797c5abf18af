"""The same lowest E_f whatever the number of torch threads: a different summation order must
not pick a different minimum (SevenNet runs with torch's deterministic algorithms)."""

import json
import os
import subprocess
import sys

import pytest


def _run(tmp_path, threads: int) -> dict:
    out = tmp_path / f"threads-{threads}"
    command = [
        *("run", "--species", "Li", "--hosts", "LiIn", "--reference", "Li"),
        *("--calculator", "sevennet", "--model", "7net-0", "--fmax", "0.02"),
        *("--min-image-distance", "6", "--max-atoms", "40"),
        *("--store", str(out / "store"), "--output", str(out / "results")),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    code = "import sys; from carrierflow.workflows.cli import main; sys.exit(main(sys.argv[1:]))"
    subprocess.run([sys.executable, "-c", code, *command], env=env, check=True)
    return json.loads((out / "results" / "results.json").read_text())


@pytest.mark.slow
def test_one_and_two_torch_threads_give_the_same_lowest_formation_energies(tmp_path):
    one, two = _run(tmp_path, 1), _run(tmp_path, 2)
    for a, b in zip(
        [one["reference"], *one["hosts"]], [two["reference"], *two["hosts"]], strict=True
    ):
        assert a["supercell"] == b["supercell"]
        for kind in ("vacancy", "interstitial"):
            assert a["lowest_defect"][kind] == b["lowest_defect"][kind]
            assert a["lowest_eV"][kind] == pytest.approx(b["lowest_eV"][kind], abs=0.01)
        assert a["dominant_carrier"] == b["dominant_carrier"]
