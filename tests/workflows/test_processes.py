"""A run's child processes (GPAW workers, SevenNet's trainer) end when the run is interrupted."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from importlib.resources import files
from pathlib import Path

import pytest
from ase.io import read, write

from carrierflow.workflows.processes import ended_with_caller

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
# a child that ignores SIGTERM, as a worker stuck in a C extension may
STUBBORN = [
    sys.executable,
    "-c",
    "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(60)",
]


def test_an_interrupted_caller_terminates_its_child():
    process = subprocess.Popen(SLEEPER)
    with pytest.raises(KeyboardInterrupt), ended_with_caller(process):
        raise KeyboardInterrupt
    assert process.returncode == -signal.SIGTERM


def test_a_child_that_ignores_terminate_is_killed_after_the_grace_time():
    process = subprocess.Popen(STUBBORN, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"  # its handler is set
    with pytest.raises(RuntimeError), ended_with_caller(process, grace_s=0.5):
        raise RuntimeError("the caller failed")
    assert process.returncode == -signal.SIGKILL


def test_a_child_that_finished_is_left_as_it_ended():
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    with ended_with_caller(process):
        process.wait()
    assert process.returncode == 3


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
