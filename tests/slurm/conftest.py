"""A real one-node SLURM for the tests of this folder, started and stopped by them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CLUSTER = Path(__file__).resolve().parents[2] / "slurm" / "local-cluster.sh"


@pytest.fixture(scope="package")
def slurm(tmp_path_factory):
    """A running one-node SLURM; stopped, daemons and all, after this folder's tests."""
    if not shutil.which("slurmctld") and os.geteuid() != 0 and not shutil.which("sudo"):
        pytest.skip("SLURM is not installed and cannot be (needs root for apt-get)")
    state = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "CARRIERFLOW_SLURM_DIR": str(state)}
    started = subprocess.run(
        ["bash", str(CLUSTER), "start"], env=env, capture_output=True, text=True, timeout=600
    )
    assert started.returncode == 0, started.stderr
    env["SLURM_CONF"] = str(state / "slurm.conf")
    yield env
    subprocess.run(["bash", str(CLUSTER), "stop"], env=env, check=True, timeout=60)
    for daemon in ("slurmctld", "slurmd"):
        assert not (state / f"{daemon}.pid").exists()
