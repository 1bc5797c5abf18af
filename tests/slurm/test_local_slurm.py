"""The single-job cluster path on a real SLURM: slurm/local-cluster.sh starts a one-node SLURM
from Debian's packages, slurm/carrierflow-run.sbatch runs a whole EMT run in one allocation."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from carrierflow.workflows.cli import main

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "slurm" / "carrierflow-run.sbatch"

pytestmark = pytest.mark.slurm


def _submit(slurm: dict, workdir: Path, *args: str) -> str:
    submitted = subprocess.run(
        [
            "sbatch",
            "--parsable",
            f"--chdir={workdir}",
            f"--export=ALL,CARRIERFLOW_HOME={ROOT}",
            str(TEMPLATE),
            *args,
        ],
        env=slurm,
        capture_output=True,
        text=True,
        check=True,
    )
    return submitted.stdout.strip().split(";")[0]


def _state(slurm: dict, job_id: str) -> dict:
    shown = subprocess.run(
        ["scontrol", "show", "job", job_id], env=slurm, capture_output=True, text=True
    ).stdout
    return dict(re.findall(r"(JobState|ExitCode)=(\S+)", shown))


def _wait(slurm: dict, job_id: str, timeout_s: float = 600) -> dict:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        state = _state(slurm, job_id)
        if state.get("JobState") not in (None, "PENDING", "RUNNING", "CONFIGURING", "COMPLETING"):
            return state
        time.sleep(1)
    raise AssertionError(f"SLURM job {job_id} still {state} after {timeout_s} s")


def _run_args(workdir: Path) -> list[str]:
    return ["--system", "Cu-Au", "--calculator", "emt", "--store", str(workdir / "store")]


def test_a_whole_run_in_one_allocation(slurm, tmp_path, capsys):
    job_id = _submit(slurm, tmp_path, *_run_args(tmp_path), "--output", str(tmp_path / "out"))
    assert _wait(slurm, job_id) == {"JobState": "COMPLETED", "ExitCode": "0:0"}
    log = (tmp_path / f"carrierflow-{job_id}.out").read_text()
    assert f"carrierflow in SLURM job {job_id}" in log
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["hosts"][0]["dominant_carrier"] == "vacancy"
    # the store it wrote is read back the way a local run's is
    report = [*_run_args(tmp_path), "--output", str(tmp_path / "report")]
    assert main(["report", *report]) == 0
    again = json.loads((tmp_path / "report" / "results.json").read_text())
    assert again["hosts"][0]["lowest_eV"] == results["hosts"][0]["lowest_eV"]


def test_a_failing_job_shows_its_error_in_slurm(slurm, tmp_path):
    job_id = _submit(slurm, tmp_path, "--system", "Cu-Au", "--calculator", "lammps")
    assert _wait(slurm, job_id) == {"JobState": "FAILED", "ExitCode": "2:0"}
    log = (tmp_path / f"carrierflow-{job_id}.out").read_text()
    assert "carrierflow: error: unknown calculator 'lammps'" in log


def test_a_cancelled_job_resumes_in_the_next_one(slurm, tmp_path):
    job_id = _submit(slurm, tmp_path, *_run_args(tmp_path))
    log = tmp_path / f"carrierflow-{job_id}.out"
    deadline = time.time() + 300
    while time.time() < deadline and ": E = " not in (log.read_text() if log.exists() else ""):
        time.sleep(0.5)
    subprocess.run(["scancel", job_id], env=slurm, check=True)
    assert _wait(slurm, job_id)["JobState"] == "CANCELLED"
    assert "interrupted: finished calculations are kept" in log.read_text()
    finished = re.findall(r"\] (.+): E = ", log.read_text())
    assert finished

    resumed = _submit(slurm, tmp_path, *_run_args(tmp_path))
    assert _wait(slurm, resumed)["JobState"] == "COMPLETED"
    reused = re.findall(
        r"\] (.+): reused from the store", (tmp_path / f"carrierflow-{resumed}.out").read_text()
    )
    # scancel may land between a calculation's last log line and its store write
    assert set(finished[:-1]) <= set(reused)
