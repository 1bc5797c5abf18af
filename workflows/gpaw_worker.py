"""Run one GPAW calculation described by a JSON file: a single point or a relaxation.

Standalone on purpose: it imports only numpy, ASE and GPAW, so any Python that has GPAW runs it
(a virtual environment with PyPI's gpaw, or Debian's system python with its gpaw package), under
``mpirun`` too. carrierflow writes ``gpaw-input.json``, runs this file in the calculation's folder
and reads ``gpaw-result.json``. Every ionic step is appended to ``gpaw-steps.jsonl`` with its
energies, forces and (when the cell relaxes) stress, so that each step is a training frame for the
stand-in; a rerun in the same folder continues from the last step.

Usage: ``python gpaw_worker.py gpaw-input.json``
"""

import json
import sys
import time
from pathlib import Path

import gpaw
import numpy as np
from ase import Atoms
from ase.constraints import FixAtoms
from ase.optimize import BFGS
from ase.parallel import world
from gpaw import GPAW, PW

try:
    from ase.constraints import FixSymmetry
except ImportError:  # ASE < 3.23
    from ase.spacegroup.symmetrize import FixSymmetry
try:
    from ase.filters import FrechetCellFilter as CellFilter
except ImportError:  # ASE < 3.23
    from ase.constraints import ExpCellFilter as CellFilter

STEPS = Path("gpaw-steps.jsonl")


def say(text):
    if world.rank == 0:
        print(text, flush=True)


def build_atoms(spec):
    atoms = Atoms(
        numbers=spec["numbers"], cell=spec["cell"], scaled_positions=spec["frac"], pbc=True
    )
    if STEPS.exists():
        lines = STEPS.read_text().splitlines()
        if lines:
            last = json.loads(lines[-1])
            atoms.set_cell(last["cell"], scale_atoms=False)
            atoms.set_positions(last["positions"])
            say(f"continuing from step {len(lines)} of an earlier run")
    if spec["fixed"]:
        atoms.set_constraint(FixAtoms(indices=spec["fixed"]))
    return atoms


def build_calculator(spec, atoms):
    settings = spec["settings"]
    calc = GPAW(
        mode=PW(settings["encut_eV"]),
        xc="PBE",
        kpts={"size": spec["kpts"], "gamma": True},
        occupations={
            "name": "methfessel-paxton",
            "width": settings["sigma_eV"],
            "order": int(settings["smearing"][-1]),
        },
        txt="gpaw.txt",
    )
    atoms.calc = calc
    calc.initialize(atoms)
    # GPAW's energy criterion is per valence electron; the study's is per cell
    nvalence = calc.setups.nvalence
    calc.set(convergence={"energy": settings["ediff_eV"] / nvalence})
    return calc, nvalence


def count_steps():
    return len(STEPS.read_text().splitlines()) if STEPS.exists() else 0


def record(atoms, started, with_stress):
    """Append one ionic step. The forces are derivatives of the smeared free energy, so a
    frame for a potential pairs them with ``free_energy``; ``energy`` is GPAW's extrapolation to
    zero smearing (the formation energies use it). The stress costs an extra step in GPAW, so it
    is recorded where the optimizer needed it anyway: when the cell relaxes (eV/A^3, Voigt
    order xx yy zz yz xz xy, ASE's sign). The frame keeps the forces and stress as DFT gave
    them (``raw_forces``), not as the constraints left them for the optimizer: a fixed atom's
    force is no zero to learn."""
    forces = atoms.get_forces()
    entry = {
        "energy": float(atoms.get_potential_energy()),
        "free_energy": float(atoms.get_potential_energy(force_consistent=True)),
        "cell": atoms.cell.array.tolist(),
        "positions": atoms.positions.tolist(),
        "forces": atoms.get_forces(apply_constraint=False).tolist(),
        "raw_forces": True,
        "fmax": float(np.linalg.norm(forces, axis=1).max()),
        "elapsed_s": time.time() - started,
    }
    if with_stress:
        entry["stress"] = atoms.get_stress(voigt=True, apply_constraint=False).tolist()
    if world.rank == 0:
        with STEPS.open("a") as handle:
            handle.write(json.dumps(entry) + "\n")
        say(
            f"step {count_steps()}: E = {entry['energy']:.6f} eV, "
            f"largest force {entry['fmax']:.4f} eV/A"
        )


def main(path):
    spec = json.loads(Path(path).read_text())
    started = time.time()
    atoms = build_atoms(spec)
    calc, nvalence = build_calculator(spec, atoms)
    converged = True
    if spec["steps"] > 1:
        target = atoms
        if spec["relax_cell"]:
            atoms.set_constraint([*atoms.constraints, FixSymmetry(atoms)])
            target = CellFilter(atoms)
        # a small step: BFGS overshoots on nearly converged DFT forces
        optimizer = BFGS(target, maxstep=spec["maxstep_A"], logfile=None)
        optimizer.attach(lambda: record(atoms, started, spec["relax_cell"]))
        remaining = max(spec["steps"] - count_steps(), 0)
        converged = bool(optimizer.run(fmax=spec["fmax"], steps=remaining))
    else:
        record(atoms, started, spec["relax_cell"])
    result = {
        "energy": float(atoms.get_potential_energy()),
        "forces": atoms.get_forces().tolist(),
        "cell": atoms.cell.array.tolist(),
        "frac": atoms.get_scaled_positions(wrap=False).tolist(),
        "steps": count_steps(),
        "converged": converged,
        "scf_iterations": int(calc.get_number_of_iterations()),
        "nvalence": float(nvalence),
        "gpaw_version": gpaw.__version__,
        "kpts": list(spec["kpts"]),
        "parallel_ranks": world.size,
        "elapsed_s": time.time() - started,
    }
    if world.rank == 0:
        Path("gpaw-result.json").write_text(json.dumps(result))
    say(f"finished: {result['steps']} steps, E = {result['energy']:.6f} eV")


if __name__ == "__main__":
    main(sys.argv[1])
