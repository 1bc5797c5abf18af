"""`carrierflow submit` and `carrierflow results` through jobflow-remote on a real SLURM.

No MongoDB server can exist on these machines: the project's queue and JobStore (MongoStores, as in
slurm/jfremote-project.yaml) share one in-process mongomock database here, so the runner and
`results` run in this test's process; production uses MongoDB. The jobs themselves run as SLURM
jobs (sbatch), as on a cluster, and need no database: jobflow-remote moves their outputs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import string
import subprocess
import sys
import time
from pathlib import Path

import mongomock_ng
import pytest
import yaml
from standin import STANDIN, write_fake_potcars

from carrierflow.workflows.cli import main

jobflow_remote = pytest.importorskip("jobflow_remote")
from jobflow_remote.jobs.runner import Runner  # noqa: E402
from jobflow_remote.jobs.state import FlowState, JobState  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "slurm" / "jfremote-project.yaml"
SECRET = "cf-test-secret-5e1f9a"
PROJECT = "carrierflow"
SYSTEM = ["--system", "Cu-Au", "--calculator", "emt"]

pytestmark = pytest.mark.slurm

ACTIVE = {  # jobs the runner still moves on
    JobState.READY,
    JobState.CHECKED_OUT,
    JobState.UPLOADED,
    JobState.SUBMITTED,
    JobState.RUNNING,
    JobState.RUN_FINISHED,
    JobState.DOWNLOADED,
}

# test-only switches in the worker's pre_run: while `hold` exists the reference's first
# interstitial waits (to be cancelled with scancel); while `broken` exists every vacancy job fails
# in SLURM before Python starts, the way a missing module would
PRE_RUN = """\
export PATH={bin}:$PATH
export PMG_VASP_PSP_DIR={potcars}
if [ -e {flags}/hold ] && [ "$SLURM_JOB_NAME" = Cu_Cu_i1 ]; then sleep 600; fi
case "$SLURM_JOB_NAME" in *_v_*)
  if [ -e {flags}/broken ]; then echo "carrierflow-test: module vasp not found" >&2; exit 3; fi
esac
"""


class SharedServer(mongomock_ng.MongoClient):
    """One in-process database for every store of the project: like a server, it outlives the
    clients that the stores open and close."""

    def close(self) -> None:
        pass


@pytest.fixture
def project(slurm, tmp_path, monkeypatch):
    """The template project, filled in for the local SLURM, in a private projects folder."""
    server = SharedServer()
    monkeypatch.setattr("maggma.stores.mongolike.MongoClient", lambda *a, **k: server)
    monkeypatch.setenv("SLURM_CONF", slurm["SLURM_CONF"])
    credentials = {
        "CARRIERFLOW_MONGODB_HOST": "localhost",
        "CARRIERFLOW_MONGODB_USER": "carrierflow",
        "CARRIERFLOW_MONGODB_PASSWORD": SECRET,
    }
    config = yaml.safe_load(string.Template(TEMPLATE.read_text()).safe_substitute(credentials))
    assert config["queue"]["store"]["password"] == SECRET
    flags = tmp_path / "flags"
    flags.mkdir()
    worker = config["workers"]["cluster"]
    worker["work_dir"] = str(tmp_path / "jobs")
    worker["resources"] = {"nodes": 1, "ntasks": 1, "cpus_per_task": 1, "time": "00:20:00"}
    potcars = write_fake_potcars(tmp_path / "potcars")  # for the stand-in VASP's jobs
    bin_dir = Path(sys.executable).parent
    worker["pre_run"] = PRE_RUN.format(bin=bin_dir, flags=flags, potcars=potcars)
    config["runner"] = {
        "delay_checkout": 1,
        "delay_check_run_status": 1,
        "delay_advance_status": 1,
        "delta_retry": [1, 2, 4],
    }
    folder = tmp_path / "projects"
    folder.mkdir()
    (folder / f"{PROJECT}.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setattr(jobflow_remote.SETTINGS, "projects_folder", str(folder))
    monkeypatch.setattr(jobflow_remote.SETTINGS, "project", PROJECT)
    controller = jobflow_remote.ConfigManager().get_project(PROJECT).get_job_controller()
    controller.reset()  # `jf admin reset`: a new project's queue database starts empty
    with _logging_kept():
        yield {"server": server, "flags": flags, "folder": folder, "controller": controller}


@contextlib.contextmanager
def _logging_kept():
    """jobflow-remote's runner configures logging for its process (dictConfig, which disables
    every existing logger); give the other tests of this process theirs back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    loggers = {
        name: (logger.disabled, logger.level, list(logger.handlers), logger.propagate)
        for name, logger in logging.root.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    try:
        yield
    finally:
        root.handlers[:], root.level = handlers, level
        for name, (disabled, lvl, hdlrs, propagate) in loggers.items():
            logger = logging.getLogger(name)
            logger.disabled, logger.level, logger.propagate = disabled, lvl, propagate
            logger.handlers[:] = hdlrs
        for name, logger in logging.root.manager.loggerDict.items():
            if isinstance(logger, logging.Logger) and name not in loggers:
                logger.disabled = False


def _run_until(runner: Runner, controller, done, timeout_s: float = 1800) -> list:
    """Let the runner work until ``done(jobs)`` holds. A guard against a hang, not a timing: on
    a quiet 2-core machine the refined run's test takes 6 minutes (75 SLURM jobs), but with a
    DFT run and another test suite beside it the one free SLURM slot (the other holds the
    waiting job) ran the 12 calculation jobs of a screen one by one for more than 10 minutes."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        # run_all_jobs ends at its own timeout while jobs still run: look at the states, go on
        with contextlib.suppress(RuntimeError):
            runner.run_all_jobs(max_seconds=10)
        jobs = controller.get_jobs_info()
        if done(jobs):
            return jobs
    raise AssertionError(f"runner timed out: {sorted((j.name, j.state.value) for j in jobs)}")


def _results(tmp_path: Path, name: str, *extra: str) -> dict:
    output = tmp_path / name
    assert main(["results", *SYSTEM, "--project", PROJECT, "--output", str(output), *extra]) == 0
    finished = output / "results.json"
    if not finished.exists():
        finished = output / "results.partial.json"
    return json.loads(finished.read_text())


def _jf(*args: str, confirm: bool = False):
    """jobflow-remote's own `jf` command, in this process (where the mongomock database is)."""
    from jobflow_remote.cli.jf import app
    from typer.testing import CliRunner

    return CliRunner().invoke(app, list(args), input="y\n" if confirm else None)


def _slurm_job(slurm: dict, job_id: str) -> str:
    return subprocess.run(
        ["scontrol", "show", "job", job_id], env=slurm, capture_output=True, text=True
    ).stdout


def test_a_refined_run_fails_is_cancelled_rerun_and_read_back_each_job_a_slurm_job(
    project, slurm, emt_run, tmp_path, capsys, caplog
):
    # the screen's jobs, then the VASP jobs the refinement adds as the flow runs, each a SLURM
    # job ("VASP" is the stand-in, EMT inside, so each refined E_f equals the screen's in the
    # same cell, as a local `run --refine vasp` finds: tests/workflows/test_vasp.py). One flow
    # for failures, reruns and refinement: the refinement's holds the screen's, and the two
    # flows this test was before took 137 + 334 s of the suite's 1491 (2026-12-06)
    controller, flags = project["controller"], project["flags"]
    refine = ["--refine", "vasp", "--vasp-cmd", f"{sys.executable} {STANDIN}"]
    refine += ["--workdir", str(tmp_path / "calc"), "--dft-min-image-distance", "7"]
    (flags / "hold").touch()
    (flags / "broken").touch()
    assert main(["submit", *SYSTEM, *refine, "--project", PROJECT]) == 0
    flow_id = re.search(r"flow (\S+),", capsys.readouterr().out).group(1)
    listed = _jf("job", "list")  # `jf` shows the submitted jobs by what they compute
    assert listed.exit_code == 0 and "Cu3Au_bulk" in listed.output
    runner = Runner(project_name=PROJECT)

    def held_and_failed(jobs):
        held = {j.state for j in jobs if j.name == "Cu_Cu_i1"}
        others = {j.state for j in jobs if j.name != "Cu_Cu_i1"}
        return held == {JobState.RUNNING} and not ACTIVE & others

    jobs = _run_until(runner, controller, held_and_failed)
    processes = " ".join(p.read_text() for p in Path("/proc").glob("[0-9]*/cmdline") if p.exists())
    assert SECRET not in processes
    held = next(j for j in jobs if j.name == "Cu_Cu_i1")
    subprocess.run(["scancel", held.remote.process_id], env=slurm, check=True)
    jobs = _run_until(runner, controller, lambda js: not ACTIVE & {j.state for j in js})

    partial = _results(tmp_path, "partial", *refine, "--flow-id", flow_id)
    failed = {j["name"]: j for j in partial["jobs"] if j["state"] == "FAILED"}
    assert "Cu_Cu_i1" in failed
    assert any("CANCELLED" in line for line in failed["Cu_Cu_i1"]["stderr_tail"])
    vacancies = [name for name in failed if "_v_" in name]
    assert vacancies
    for name in vacancies:
        assert failed[name]["stderr_tail"][-1] == "carrierflow-test: module vasp not found"
    for job in failed.values():  # each failure names the real SLURM job that ran it
        assert re.search(rf"JobName={job['name']}\s", _slurm_job(slurm, job["scheduler_id"]))
    assert partial["calculations"] > 0
    completed = {
        j.db_id: (j.remote.process_id, j.end_time) for j in jobs if j.state == JobState.COMPLETED
    }
    assert completed

    # fix the cause, rerun the failed jobs alone: the finished ones are not run again
    (flags / "hold").unlink()
    (flags / "broken").unlink()
    rerun = _jf("job", "rerun", "-s", "FAILED", confirm=True)
    assert rerun.exit_code == 0, rerun.output
    jobs = _run_until(
        runner,
        controller,
        lambda js: controller.get_flows_info(flow_ids=[flow_id])[0].state == FlowState.COMPLETED,
    )
    again = {j.db_id: (j.remote.process_id, j.end_time) for j in jobs if j.db_id in completed}
    assert again == completed
    assert all(j.remote.process_id for j in jobs)  # every job went through sbatch

    results = _results(tmp_path, "final", *refine)
    assert results["calculator"]["name"] == "vasp"
    assert results["refined_from"]["calculator"]["name"] == "emt"
    for phase in [results["reference"], *results["hosts"]]:
        assert {d["kind"] for d in phase["defects"]} == {"interstitial", "vacancy"}
        for defect in phase["defects"]:
            assert defect["screen"]["error_eV"] == pytest.approx(0, abs=2e-3)
    assert list((tmp_path / "calc").glob("*/*/vasprun.xml*"))  # VASP ran under --workdir
    # the screen that ran as SLURM jobs, failures and reruns and all, is the local one
    screened = results["refined_from"]["verdicts"]
    local = emt_run["results"]
    for phase in [local["reference"], *local["hosts"]]:
        assert screened[phase["formula"]]["dominant_carrier"] == phase["dominant_carrier"]
        assert screened[phase["formula"]]["lowest_eV"] == pytest.approx(
            phase["lowest_eV"], abs=1e-6
        )

    # the password lives in the private project file only
    logs = capsys.readouterr()
    assert SECRET not in logs.out + logs.err + caplog.text
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.parent != project["folder"]:
            assert SECRET.encode() not in path.read_bytes(), path
    for name in project["server"].list_database_names():
        for collection in project["server"][name].list_collection_names():
            for doc in project["server"][name][collection].find():
                assert SECRET not in json.dumps(doc, default=str), (name, collection)


def test_results_of_an_unknown_project_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(jobflow_remote.SETTINGS, "projects_folder", str(tmp_path))
    assert main(["results", *SYSTEM, "--project", "nowhere"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("carrierflow: error: jobflow-remote project 'nowhere' cannot be loaded")
    assert len(err.splitlines()) == 1


def test_submit_to_an_unknown_worker_is_one_line(project, capsys):
    args = ["submit", *SYSTEM, "--project", PROJECT, "--worker", "gpu"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "worker 'gpu' is not in project 'carrierflow' (workers: cluster)" in err
