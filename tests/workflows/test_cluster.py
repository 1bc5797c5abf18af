"""What changes when the flow runs under jobflow-remote (without a queue: see tests/slurm)."""

from dataclasses import dataclass

import pytest
from jobflow import Maker, job

from carrierflow.structures.sources import load_fixture
from carrierflow.workflows.calculators import Calculator
from carrierflow.workflows.engine import calculate
from carrierflow.workflows.schemas import CalculationFailure


@dataclass
class BrokenMaker(Maker):
    """A calculation that always fails, the way a code that does not converge does."""

    name: str = "broken"

    @job
    def make(self, structure, prev_dir=None):
        raise RuntimeError("SCF did not converge")


def test_a_failed_calculation_fails_its_job_under_jobflow_remote(monkeypatch):
    run = pytest.importorskip("jobflow_remote.jobs.run")
    args = ([BrokenMaker()], load_fixture("Cu")[0], "static", "Cu broken", Calculator("emt"))
    # run locally, the failure is recorded and stops only the jobs that need it
    recorded = calculate.original(*args)
    assert isinstance(recorded.output, CalculationFailure)
    assert recorded.stop_children
    assert "SCF did not converge" in recorded.output.error
    # under jobflow-remote the job fails, so that `jf job list` shows it and `jf job rerun` works
    monkeypatch.setattr(run.CURRENT_JOBDOC, "job_doc", {"db_id": "1"})
    with pytest.raises(RuntimeError, match="SCF did not converge"):
        calculate.original(*args)
