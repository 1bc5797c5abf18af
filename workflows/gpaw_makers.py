"""GPAW (PBE, plane waves) as a Maker: each calculation runs ``gpaw_worker.py`` in its folder,
with the Python that has GPAW, under ``mpirun`` when more than one core is asked for."""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from jobflow import Maker, job
from pydantic import BaseModel
from pymatgen.core import Structure

from carrierflow.workflows.dataset import GPAW_INPUT, GPAW_STEPS, recorded_relaxation
from carrierflow.workflows.dft import DftSettings, kpoint_mesh

logger = logging.getLogger("carrierflow")

WORKER = Path(__file__).with_name("gpaw_worker.py")
GPAW_HESSIAN = "gpaw-hessian.npy"
INSTALL_HINT = (
    "install GPAW and its PAW setups: 'apt-get install gpaw gpaw-data' (Debian/Ubuntu, for the "
    "system python) or 'pip install gpaw gpaw-data' (needs libxc-dev and a BLAS)"
)


class GpawError(RuntimeError):
    """GPAW is missing or a GPAW run failed."""


# where Debian's gpaw package lives
SYSTEM_PYTHONS = ["/usr/bin/python3"]


def python_with_gpaw(preferred: str | None = None) -> str | None:
    """The first Python that imports GPAW: ``preferred``, ``$CARRIERFLOW_GPAW_PYTHON``, this
    interpreter, then the system's ``python3`` (Debian's gpaw package)."""
    candidates = [preferred, os.environ.get("CARRIERFLOW_GPAW_PYTHON"), sys.executable]
    for python in filter(None, [*candidates, *SYSTEM_PYTHONS]):
        if _imports_gpaw(python):
            return python
    return None


@lru_cache
def gpaw_version(python: str) -> str | None:
    """The version of GPAW under ``python``, as its runs record it ("GPAW 22.8.0"); None where
    it does not import GPAW."""
    try:
        found = subprocess.run(
            [python, "-c", "import gpaw; print(gpaw.__version__)"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return f"GPAW {found.stdout.strip()}" if found.returncode == 0 else None


def _imports_gpaw(python: str) -> bool:
    return gpaw_version(python) is not None


def has_paw_setups(python: str) -> bool:
    """Whether GPAW under ``python`` finds PBE setups (gpaw-data, or GPAW_SETUP_PATH)."""
    probe = "from gpaw.setup import create_setup; create_setup('Li', 'PBE')"
    found = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=120)
    return found.returncode == 0


class GpawOutput(BaseModel):
    """What the flow reads of a GPAW calculation (atomate2's task-document names)."""

    model_config = {"arbitrary_types_allowed": True}

    energy: float
    structure: Structure
    forces: list[list[float]]
    n_steps: int


class GpawTaskDoc(BaseModel):
    """One GPAW run: output, convergence and what GPAW reported."""

    output: GpawOutput
    is_force_converged: bool
    record: dict


@dataclass
class GpawMaker(Maker):
    """A GPAW single point (``steps = 1``) or relaxation, with the study's DFT settings.

    Parameters
    ----------
    relax_cell
        Relax cell and ions (space group kept) rather than ions only.
    steps
        Optimizer step limit; 1 is a single point.
    fmax
        Force convergence, eV/A.
    settings
        DFT settings (:class:`DftSettings` fields); the k-mesh follows :func:`kpoint_mesh`.
    python
        The Python that runs GPAW; None finds one (see :func:`python_with_gpaw`).
    cores
        MPI ranks; more than one runs under ``mpirun``.
    maxstep_A
        Largest optimizer step (BFGS overshoots on nearly converged DFT forces).
    resume_from
        A data set of DFT frames (``carrierflow dataset``'s extended XYZ) whose recorded
        calculation of this input (a relaxation or a single point) this one continues from, when
        its folder holds no steps of its own (see
        :func:`~carrierflow.workflows.dataset.recorded_relaxation`); a finished one of this GPAW
        version is taken as recorded.
    calculation
        The label of the calculation being run (set by the engine): a recorded relaxation is
        continued only under the same label.
    hessian_from
        A force field (``name``, ``model``, ``model_sha256`` of a :class:`Calculator`) whose
        Hessian at the input structure is BFGS's first guess in an ionic relaxation, in place of
        70 eV/A^2 on every coordinate: the stand-in whose minimum the relaxation starts from
        (:mod:`carrierflow.workflows.hessian`).
    """

    name: str = "gpaw"
    relax_cell: bool = False
    steps: int = 200
    fmax: float = 0.01
    settings: dict = field(default_factory=dict)
    python: str | None = None
    cores: int = 1
    maxstep_A: float = 0.05
    resume_from: str | None = None
    calculation: str | None = None
    hessian_from: dict | None = None

    # a folder of an interrupted run is continued, not wiped
    resumable = True

    @job
    def make(self, structure: Structure, prev_dir: str | None = None) -> GpawTaskDoc:
        """Run GPAW in the current folder."""
        return self.run(structure)

    def command(self) -> list[str]:
        python = python_with_gpaw(self.python)
        if python is None:
            raise GpawError(f"GPAW is not installed: {INSTALL_HINT}")
        command = [python, str(WORKER), GPAW_INPUT]
        if self.cores > 1:
            mpirun = ["mpirun", "-np", str(self.cores)]
            if hasattr(os, "geteuid") and os.geteuid() == 0:
                mpirun.append("--allow-run-as-root")
            command = mpirun + command
        return command

    def run(self, structure: Structure) -> GpawTaskDoc:
        """Write the input, run the worker with progress lines, read the result."""
        settings = DftSettings(**self.settings)
        fixed = [
            i
            for i, flags in enumerate(structure.site_properties.get("selective_dynamics") or [])
            if not any(flags)
        ]
        spec = {
            "numbers": [site.specie.Z for site in structure],
            "cell": structure.lattice.matrix.tolist(),
            "frac": structure.frac_coords.tolist(),
            "fixed": fixed,
            "kpts": list(kpoint_mesh(structure, settings.kspacing)),
            "settings": settings.model_dump(),
            "relax_cell": self.relax_cell,
            "steps": self.steps,
            "fmax": self.fmax,
            "maxstep_A": self.maxstep_A,
            "run": self.name,
        }
        if self.resume_from and not Path(GPAW_STEPS).exists():
            self._continue_recorded(spec)
        if self.hessian_from and self.steps > 1 and not self.relax_cell:
            spec["initial_hessian"] = self._initial_hessian(structure, fixed)
        Path(GPAW_INPUT).write_text(json.dumps(spec))
        Path("gpaw-result.json").unlink(missing_ok=True)
        command = self.command()
        _run_with_progress(command, self.name)
        if not Path("gpaw-result.json").exists():
            raise GpawError(f"GPAW wrote no result: {_tail('gpaw-worker.log')}")
        result = json.loads(Path("gpaw-result.json").read_text())
        final = Structure(
            result["cell"],
            structure.species,
            result["frac"],
            site_properties=structure.site_properties,
        )
        forces = np.array(result["forces"])
        converged = self.steps <= 1 or bool(result["converged"])
        record = {
            "task_label": self.name,
            "directory": str(Path.cwd()),
            "code_version": f"GPAW {result['gpaw_version']}",
            "kpoints": result["kpts"],
            "state": "successful" if converged else "unconverged",
            "scf_iterations": result["scf_iterations"],
            "valence_electrons": result["nvalence"],
            "mpi_ranks": result["parallel_ranks"],
            "command": shlex.join(command),
        }
        return GpawTaskDoc(
            output=GpawOutput(
                energy=result["energy"],
                structure=final,
                forces=forces.tolist(),
                n_steps=result["steps"],
            ),
            is_force_converged=converged,
            record=record,
        )

    def _initial_hessian(self, structure: Structure, fixed: list[int]) -> str:
        """Write the stand-in's Hessian at the start, once: a resumed relaxation rebuilds its
        optimizer on the same first guess."""
        if not Path(GPAW_HESSIAN).exists():
            from pymatgen.io.ase import AseAtomsAdaptor

            from carrierflow.workflows.calculators import Calculator
            from carrierflow.workflows.engine import shared_calculator
            from carrierflow.workflows.hessian import initial_hessian

            stand_in = Calculator(**self.hessian_from)
            started = time.perf_counter()
            atoms = AseAtomsAdaptor.get_atoms(structure)
            hessian = initial_hessian(atoms, shared_calculator(stand_in), fixed)
            # written whole or not at all: an interrupted write must not be read as a guess
            partial = Path(GPAW_HESSIAN + ".partial.npy")
            np.save(partial, hessian)
            partial.rename(GPAW_HESSIAN)
            logger.info(
                "  GPAW %s: first Hessian guess from %s (%.0f s)",
                self.name,
                stand_in.label,
                time.perf_counter() - started,
            )
        return GPAW_HESSIAN

    def _continue_recorded(self, spec: dict) -> None:
        """Start the step log with the recorded steps of this calculation (a relaxation or a
        single point), if ``resume_from`` holds them: the worker goes on from the last one."""
        steps = recorded_relaxation(Path(self.resume_from), spec, self.calculation)
        if steps is None:
            return
        Path(GPAW_STEPS).write_text("".join(json.dumps(step) + "\n" for step in steps))
        logger.info(
            "  GPAW %s: continuing the calculation recorded in %s (%d steps, largest force %.3f "
            "eV/A at the last)",
            self.name,
            Path(self.resume_from).name,
            len(steps),
            steps[-1]["fmax"],
        )


def _tail(path: str, lines: int = 1) -> str:
    text = _read(path).strip().splitlines()
    return " / ".join(text[-lines:]) or "no output"


def _run_with_progress(command: list[str], name: str, every_s: float = 30.0) -> None:
    """Run the worker; log its ionic steps, and GPAW's latest SCF iteration every ``every_s``."""
    with open("gpaw-worker.log", "w") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)

        def follow() -> None:
            for line in process.stdout:
                log.write(line)
                log.flush()
                if line.startswith(("step", "continuing", "finished")):
                    logger.info("  GPAW %s: %s", name, line.strip())

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        last = time.monotonic()
        while process.poll() is None:
            time.sleep(1)
            if time.monotonic() - last >= every_s:
                last = time.monotonic()
                scf = [line for line in _read("gpaw.txt").splitlines() if line.startswith("iter:")]
                if scf:
                    logger.info("  GPAW %s: SCF %s", name, " ".join(scf[-1].split()[:4]))
        reader.join(timeout=10)
    if process.returncode != 0:
        raise GpawError(f"GPAW exited with code {process.returncode}: {_tail('gpaw-worker.log')}")


def _read(path: str) -> str:
    return Path(path).read_text(errors="replace") if Path(path).exists() else ""
