"""Run one GPAW calculation described by a JSON file: a single point or a relaxation.

Standalone on purpose: it imports only numpy, ASE and GPAW, so any Python that has GPAW runs it
(a virtual environment with PyPI's gpaw, or Debian's system python with its gpaw package), under
``mpirun`` too. carrierflow writes ``gpaw-input.json``, runs this file in the calculation's folder
and reads ``gpaw-result.json``. Every ionic step is appended to ``gpaw-steps.jsonl`` with its
energies, forces and (when the cell relaxes) stress, so that each step is a training frame for the
stand-in; a rerun in the same folder continues from the last step, with the optimizer's Hessian
rebuilt from the recorded steps.

Usage: ``python gpaw_worker.py gpaw-input.json``
"""

import json
import sys
import time
from pathlib import Path

import gpaw
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
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
# when the last step was recorded (the run's start before the first): a step's seconds
LAST_RECORD = [time.time()]


def say(text):
    if world.rank == 0:
        print(text, flush=True)


def recorded_steps():
    """The steps an earlier run recorded. A run killed while it wrote a step leaves the last
    line cut short: that step is dropped (and computed again), and the file is rewritten
    without it, so that the next step starts a line of its own."""
    if not STEPS.exists():
        return []
    text = STEPS.read_text()
    lines = text.splitlines()
    steps = []
    for number, line in enumerate(lines, start=1):
        try:
            steps.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                sys.exit(f"{STEPS}: line {number} is no recorded step (the file was edited?)")
            say(f"step {number} was cut short when an earlier run stopped: computing it again")
    if text and (len(steps) < len(lines) or not text.endswith("\n")) and world.rank == 0:
        cut = STEPS.with_name(STEPS.name + ".tmp")
        cut.write_text("".join(line + "\n" for line in lines[: len(steps)]))
        cut.replace(STEPS)  # atomic: another rank reads the old file or the new, never half
    return steps


def build_atoms(spec, steps):
    """The structure to compute: the input's, or the last recorded step's when resuming."""
    atoms = Atoms(
        numbers=spec["numbers"], cell=spec["cell"], scaled_positions=spec["frac"], pbc=True
    )
    if steps:
        atoms.set_cell(steps[-1]["cell"], scale_atoms=False)
        atoms.set_positions(steps[-1]["positions"])
        say(f"continuing from step {len(steps)} of an earlier run")
    if spec["fixed"]:
        atoms.set_constraint(FixAtoms(indices=spec["fixed"]))
    return atoms


def replay(optimizer, atoms, steps):
    """Rebuild BFGS's Hessian from the recorded steps of an interrupted relaxation (ASE's
    ``replay_trajectory``), so that it goes on as if never stopped. Without it, the Li5In4
    vacancy relaxed from SevenNet-0's geometry restarted from the initial guess (70 eV/A^2) after
    each interruption, at 1.5-13 min of GPAW per step here. Positions only: a cell relaxation's
    optimizer works on the cell filter's coordinates, which the steps do not hold; and only
    steps recorded with their forces."""
    if not all("forces" in step for step in steps):
        return
    frames = []
    for step in steps:
        frame = Atoms(atoms.numbers, cell=step["cell"], positions=step["positions"], pbc=True)
        frame.set_constraint(atoms.constraints)
        frame.calc = SinglePointCalculator(frame, forces=np.array(step["forces"]))
        frames.append(frame)
    optimizer.replay_trajectory(frames)


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


def symmetric_hessian(hessian, calc, alpha):
    """The stand-in's Hessian on the displacements that keep the symmetry GPAW computes with
    (``alpha``, BFGS's own guess of 70 eV/A^2, on the rest, which symmetric forces never
    reach). GPAW reduces the k-points by the structure's symmetry and symmetrizes the forces;
    BFGS from 70 eV/A^2 on every coordinate keeps that symmetry, but from the stand-in's
    Hessian, symmetric only to its rounding, a first step broke it by a hair and GPAW aborted
    ("Broken symmetry!", a Li pair on a new machine, where the same test had passed on others).
    Projected, a symmetric force gives a symmetric step, and BFGS's updates stay in that
    subspace."""
    symmetry = calc.wfs.kd.symmetry
    n = len(hessian)
    keep = np.array([symmetry.symmetrize_forces(unit.reshape(-1, 3)).ravel() for unit in np.eye(n)])
    # the group average of orthogonal maps: a symmetric projector
    keep = (keep + keep.T) / 2
    return keep @ hessian @ keep + alpha * (np.eye(n) - keep)


def count_steps():
    return len(STEPS.read_text().splitlines()) if STEPS.exists() else 0


def record(atoms, started, with_stress, resumed=None):
    """Append one ionic step. The forces are derivatives of the smeared free energy, so a
    frame for a potential pairs them with ``free_energy``; ``energy`` is GPAW's extrapolation to
    zero smearing (the formation energies use it). The stress costs an extra step in GPAW, so it
    is recorded where the optimizer needed it anyway: when the cell relaxes (eV/A^3, Voigt
    order xx yy zz yz xz xy, ASE's sign). The frame keeps the forces and stress as DFT gave
    them (``raw_forces``), not as the constraints left them for the optimizer: a fixed atom's
    force is no zero to learn. ``resumed``: the last step an earlier run recorded (or a data
    set of another machine's, see ``GpawMaker.resume_from``), whose geometry the resumed run
    computes first and is not recorded again."""
    forces = atoms.get_forces()
    now = time.time()
    entry = {
        "energy": float(atoms.get_potential_energy()),
        "free_energy": float(atoms.get_potential_energy(force_consistent=True)),
        "cell": atoms.cell.array.tolist(),
        "positions": atoms.positions.tolist(),
        "forces": atoms.get_forces(apply_constraint=False).tolist(),
        "raw_forces": True,
        "fmax": float(np.linalg.norm(forces, axis=1).max()),
        "elapsed_s": now - started,
        # this step's own cost, so that timings compare across machines: the Li5In4 vacancy's
        # relaxation from SevenNet-0's minimum took 77 s per step on one machine, 160 s (14.6 s
        # per SCF iteration) on another; the iterations of this step's SCF, the seconds since
        # the step before
        "scf_iterations": int(atoms.calc.get_number_of_iterations()),
        "step_s": now - LAST_RECORD[0],
    }
    LAST_RECORD[0] = now
    if with_stress:
        entry["stress"] = atoms.get_stress(voigt=True, apply_constraint=False).tolist()
    # the file is rank 0's alone: another rank reading it while rank 0 appends read half a line
    # and aborted a Li5In4 relaxation (every rank computed the forces and stress above together)
    if world.rank != 0:
        return
    # within 1e-6 A: a resumed cell relaxation's symmetry constraint re-symmetrizes positions
    # read back from 8 decimals (a data set's) by 1e-8 A
    if (
        resumed is not None
        and np.allclose(resumed["positions"], entry["positions"], rtol=0, atol=1e-6)
        and np.allclose(resumed["cell"], entry["cell"], rtol=0, atol=1e-6)
    ):
        # the recorded step's energy, computed again here: a check on frames from elsewhere
        change = 1000 * (entry["energy"] - resumed["energy"])
        again = f"step {count_steps()} computed again"
        say(f"{again}: E differs from the recorded by {change:+.2f} meV")
        return
    with STEPS.open("a") as handle:
        handle.write(json.dumps(entry) + "\n")
    energy, fmax = entry["energy"], entry["fmax"]
    say(f"step {count_steps()}: E = {energy:.6f} eV, largest force {fmax:.4f} eV/A")


def finished_elsewhere(spec, steps):
    """Whether the recorded steps are a whole calculation that a data set brought from another
    machine with this GPAW version (``GpawMaker.resume_from``): a single point, or a fixed-cell
    relaxation whose last step already met the force criterion. Its result is then the record's,
    with no SCF here: computing the last step again gave the recorded energy to 0.03 meV or
    better in the resumed loops of 2026-12-02 and 2026-12-05, and it cost one SCF per
    calculation (2-3 min for a 30-atom Li-In cell on 2 cores; an hour or more, estimated, for
    the 29 of the 7net-0 loop). A cell relaxation's criterion includes the stress, so it is
    checked (its cells are small); a step this machine recorded carries no code and is always
    checked."""
    if not steps or steps[-1].get("code") != f"GPAW {gpaw.__version__}":
        return False
    if spec["steps"] <= 1:
        return len(steps) == 1
    return not spec["relax_cell"] and steps[-1]["fmax"] < spec["fmax"]


def main(path):
    spec = json.loads(Path(path).read_text())
    started = time.time()
    LAST_RECORD[0] = started
    steps = recorded_steps()  # read once, before any rank could be appending
    resumed = steps[-1] if steps else None
    atoms = build_atoms(spec, steps)
    if finished_elsewhere(spec, steps):
        say(f"step {len(steps)} as recorded in {resumed['recorded_in']}: it had finished")
        _, nvalence = build_calculator(spec, atoms)  # no SCF: the setups' valence only
        write_result(atoms, nvalence, spec, steps[-1], started)
        return
    relax_cell = spec["steps"] > 1 and spec["relax_cell"]
    if relax_cell:
        # before GPAW sets up: the constraint symmetrizes the positions it is given, and a
        # resumed geometry read back from 8 decimals moved by 1e-8 A after set-up made GPAW
        # 22.8 abort (its eigensolver was not made yet)
        atoms.set_constraint([*atoms.constraints, FixSymmetry(atoms)])
    calc, nvalence = build_calculator(spec, atoms)
    converged = True
    if spec["steps"] > 1:
        target = CellFilter(atoms) if relax_cell else atoms
        # a small step: BFGS overshoots on nearly converged DFT forces
        optimizer = BFGS(target, maxstep=spec["maxstep_A"], logfile=None)
        if spec.get("initial_hessian") and not relax_cell:
            # the stand-in's curvature at its own minimum, where the relaxation starts, in place
            # of BFGS's 70 eV/A^2 on every coordinate (carrierflow.workflows.hessian); a replay
            # below builds on it, as the interrupted run did
            optimizer.H0 = symmetric_hessian(
                np.load(spec["initial_hessian"]), calc, optimizer.alpha
            )
        if steps and not spec["relax_cell"]:
            replay(optimizer, atoms, steps)
        optimizer.attach(lambda: record(atoms, started, spec["relax_cell"], resumed))
        # the steps taken so far: the first record is the start, before any step
        remaining = max(spec["steps"] - max(len(steps) - 1, 0), 0)
        if remaining:
            converged = bool(optimizer.run(fmax=spec["fmax"], steps=remaining))
        else:  # the step limit is spent (ASE's run takes steps=0 for no limit): check only
            record(atoms, started, spec["relax_cell"], resumed)
            largest = np.linalg.norm(target.get_forces(), axis=1).max()
            converged = bool(largest < spec["fmax"])
    else:
        record(atoms, started, spec["relax_cell"], resumed)
    step = {
        "energy": float(atoms.get_potential_energy()),
        "forces": atoms.get_forces().tolist(),
        "scf_iterations": int(calc.get_number_of_iterations()),
    }
    write_result(atoms, nvalence, spec, step, started, converged)


def write_result(atoms, nvalence, spec, step, started, converged=True):
    """``gpaw-result.json``: the final geometry of ``atoms`` with ``step``'s energy, forces (as
    the constraints leave them) and SCF iterations."""
    forces = np.array(step["forces"])
    for constraint in atoms.constraints:
        constraint.adjust_forces(atoms, forces)
    result = {
        "energy": float(step["energy"]),
        "forces": forces.tolist(),
        "cell": atoms.cell.array.tolist(),
        "frac": atoms.get_scaled_positions(wrap=False).tolist(),
        "steps": count_steps(),
        "converged": converged,
        "scf_iterations": int(step.get("scf_iterations") or 0),
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
