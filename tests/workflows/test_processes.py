"""A run's child processes (GPAW workers, VASP under custodian, SevenNet's trainer) end when the
run is interrupted."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from importlib.resources import files
from pathlib import Path

import psutil
import pytest
from ase.io import read, write
from standin import write_fake_potcars

from carrierflow.workflows.processes import children_ended

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
# a child that ignores SIGTERM, as a worker stuck in a C extension may
STUBBORN = [
    sys.executable,
    "-c",
    "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(60)",
]
# a launcher with a child of its own, as mpirun has its ranks
LAUNCHER = [
    sys.executable,
    "-c",
    f"import subprocess; p = subprocess.Popen({SLEEPER!r}); print(p.pid, flush=True); p.wait()",
]


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_an_interrupted_block_terminates_what_it_started_with_their_children():
    with pytest.raises(KeyboardInterrupt), children_ended():
        launcher = subprocess.Popen(LAUNCHER, stdout=subprocess.PIPE, text=True)
        rank = int(launcher.stdout.readline())
        raise KeyboardInterrupt
    assert not _running(launcher.pid) and not _running(rank)


def test_a_child_that_ignores_terminate_is_killed_after_the_grace_time():
    started = time.monotonic()
    with pytest.raises(RuntimeError), children_ended(grace_s=0.5):
        process = subprocess.Popen(STUBBORN, stdout=subprocess.PIPE, text=True)
        assert process.stdout.readline().strip() == "ready"  # its handler is set
        raise RuntimeError("the caller failed")
    assert not _running(process.pid)
    assert time.monotonic() - started < 10


def test_processes_started_before_the_block_or_left_by_a_normal_end_keep_running():
    earlier = subprocess.Popen(SLEEPER)
    try:
        with children_ended():
            later = subprocess.Popen(SLEEPER)
        assert _running(later.pid)
        with pytest.raises(KeyboardInterrupt), children_ended():
            raise KeyboardInterrupt
        assert _running(earlier.pid) and _running(later.pid)
    finally:
        for process in (earlier, later):
            process.kill()
            process.wait()


def _processes_working_in(folder: Path) -> list[int]:
    """PIDs whose working directory is ``folder`` or below it (Linux's /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = (entry / "cwd").resolve(strict=True)
        except OSError:  # gone, or not ours to read
            continue
        if cwd == folder or folder in cwd.parents:
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="needs Linux's /proc")
def test_a_fine_tuning_killed_with_sigterm_leaves_no_trainer_running(tmp_path):
    # Until 2026-12-05 a killed `carrierflow run --learn` left SevenNet's trainer running on its
    # own, a full core for as long as the training would have lasted.
    data = files("carrierflow.fixtures").joinpath("dft/li-in-gpaw-fast.extxyz")
    frames = [f for f in read(str(data), ":") if f.info["run"] == "bulk relax"]
    write(tmp_path / "frames.extxyz", frames, format="extxyz")
    output = (tmp_path / "tuning").resolve()
    command = [
        sys.executable, "-m", "carrierflow.workflows.cli",
        "finetune", str(tmp_path / "frames.extxyz"), "--base-model", "7net-0",
        "--hold-out", "Li3In2", "--epochs", "500", "--output", str(output),
    ]  # fmt: skip
    parent = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (trainers := _processes_working_in(output)) and time.monotonic() < deadline:
            assert parent.poll() is None, parent.stderr.read()
            time.sleep(0.5)
        assert trainers, "the trainer never started"
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=60) == 130
        deadline = time.monotonic() + 30
        while _processes_working_in(output) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _processes_working_in(output) == []
        assert parent.stderr.read().strip().splitlines()[-1] == "carrierflow: interrupted"
        assert os.path.isdir(output)  # the folder stays: a rerun reads what was finished
    finally:  # a failure here must not leave a trainer behind either
        for pid in [parent.pid, *_processes_working_in(output)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="needs Linux's /proc")
def test_a_vasp_run_killed_with_sigterm_leaves_no_vasp_running(tmp_path):
    # custodian starts VASP and, interrupted, leaves it running (it ends a job only through its
    # monitors): found 2026-12-05 with a VASP that sleeps in place of one that computes.
    calculations = (tmp_path / "calculations").resolve()
    vasp = f"{sys.executable} -c 'import time; time.sleep(300)'"
    command = [
        sys.executable, "-m", "carrierflow.workflows.cli",
        "run", "--system", "Cu-Au", "--calculator", "vasp", "--vasp-cmd", vasp,
        "--workdir", str(calculations), "--store", str(tmp_path / "store"),
        "--output", str(tmp_path / "out"),
    ]  # fmt: skip
    env = {**os.environ, "PMG_VASP_PSP_DIR": str(write_fake_potcars(tmp_path / "potcars"))}
    parent = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        # the run itself works in the job's folder too (atomate2 runs a job where it writes)
        deadline = time.monotonic() + 300
        while not (vasp := set(_processes_working_in(calculations)) - {parent.pid}):
            assert parent.poll() is None, parent.stderr.read()
            assert time.monotonic() < deadline, "VASP never started"
            time.sleep(0.5)
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=60) == 130
        deadline = time.monotonic() + 30
        while _processes_working_in(calculations) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _processes_working_in(calculations) == [], f"VASP {vasp} outlived the run"
        assert "interrupted: finished calculations are kept" in parent.stderr.read()
    finally:
        for pid in [parent.pid, *_processes_working_in(calculations)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
