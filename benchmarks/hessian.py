"""One lever of the learning loop, measured: a DFT relaxation's first Hessian from the stand-in.

Every DFT defect relaxation of the loop starts at the stand-in's minimum in the DFT cell; ASE's
BFGS starts from 70 eV/A^2 on every coordinate, the worker's guided relaxations from the
stand-in's Hessian there (:mod:`carrierflow.workflows.hessian`). From the first frame of each
recorded DFT relaxation in a data set (``fixtures/dft/``), this script counts force calls to the
same fmax as the worker and its maxstep (``--maxstep`` for another):

- ``--target MODEL`` (default): a cheaper stand-in for DFT, a model file or name (the shipped
  fine-tuned Li-In model, nearest to DFT), with each first guess: 70 eV/A^2, 20 eV/A^2, and the
  ``--source`` model's Hessian (floored at 0.5 and at the shipped floor);
- ``--gpaw LABEL``: GPAW itself (the worker, the frames' own settings and k-mesh, ``--cores``
  ranks) on one recorded relaxation, guided by the ``--source`` model, beside the recorded path.

    .venv/bin/python benchmarks/hessian.py --output benchmarks/hessian.json
    .venv/bin/python benchmarks/hessian.py --gpaw "Li5In4 v_Li_2d_1 [DFT]" --cores 2
    .venv/bin/python benchmarks/hessian.py --maxstep 0.1   # BFGS's step limit (A)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from contextlib import chdir
from dataclasses import replace
from pathlib import Path

from ase.io import read
from ase.optimize import BFGS
from pymatgen.io.ase import AseAtomsAdaptor

from carrierflow.workflows.calculators import Calculator
from carrierflow.workflows.dataset import GPAW_STEPS
from carrierflow.workflows.engine import shared_calculator
from carrierflow.workflows.gpaw_makers import GpawMaker
from carrierflow.workflows.hessian import (
    EIGENVALUE_FLOOR_EV_A2,
    force_field_hessian,
    regularized,
)

HERE = Path(__file__).resolve().parent
FRAMES = HERE.parent / "fixtures" / "dft" / "li-in-loop-timed-gpaw-fast.extxyz"
SHIPPED = HERE.parent / "fixtures" / "models" / "7net-li-in.pth"
FMAX = 0.05
# the worker's step limit from 70 eV/A^2, where the first guesses are compared; a guided GPAW
# relaxation takes its own (GUIDED_MAXSTEP_A)
MAXSTEP = GpawMaker.maxstep_A


def recorded(frames_file: Path) -> dict[str, list]:
    """The recorded free DFT relaxations (label ``... [DFT]``), each its frames in order."""
    relaxations: dict[str, list] = {}
    for atoms in read(frames_file, index=":"):
        info = atoms.info
        if info.get("task") == "ion_relax" and info["label"].endswith("[DFT]"):
            relaxations.setdefault(info["label"], []).append(atoms)
    return relaxations


def force_calls(start, calculator, hessian=None, alpha=70.0, maxstep=MAXSTEP) -> tuple[int, float]:
    atoms = start.copy()
    atoms.calc = calculator
    optimizer = BFGS(atoms, maxstep=maxstep, alpha=alpha, logfile=None)
    if hessian is not None:
        optimizer.H0 = hessian
    optimizer.run(fmax=FMAX, steps=300)
    return optimizer.nsteps + 1, float(atoms.get_potential_energy())


def with_model(relaxations: dict, source, target, maxstep: float = MAXSTEP) -> list[dict]:
    rows = []
    for label, frames in relaxations.items():
        start = frames[0].copy()
        start.calc = None
        started = time.perf_counter()
        raw = force_field_hessian(start, source)
        row = {"relaxation": label, "atoms": len(start), "dft_force_calls": len(frames)}
        row["hessian_s"] = round(time.perf_counter() - started, 1)
        guesses = {
            "70 eV/A^2 (ASE)": {},
            "20 eV/A^2": {"alpha": 20.0},
            "source, floor 0.5": {"hessian": regularized(raw, 0.5)},
            f"source, floor {EIGENVALUE_FLOOR_EV_A2}": {"hessian": regularized(raw)},
        }
        for name, kwargs in guesses.items():
            calls, energy = force_calls(start, target, maxstep=maxstep, **kwargs)
            row[name] = {"force_calls": calls, "energy_eV": round(energy, 4)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def with_gpaw(frames: list, source: Calculator, cores: int, maxstep: float | None = None) -> dict:
    """The recorded relaxation's start relaxed again by the workflow's own guided GPAW Maker,
    with the frames' DFT settings (its k-mesh rule gives the frames' mesh)."""
    [maker] = Calculator("gpaw", cores=cores).relax_from_minimum(source)
    settings = json.loads(frames[0].info["dft_settings"])
    maker = replace(maker, settings=settings, fmax=FMAX, steps=200)
    if maxstep is not None:
        maker = replace(maker, maxstep_A=maxstep)
    folder = Path(tempfile.mkdtemp(prefix="carrierflow-hessian-gpaw-"))
    started = time.perf_counter()
    with chdir(folder):
        maker.run(AseAtomsAdaptor.get_structure(frames[0]))
    steps = [json.loads(line) for line in (folder / GPAW_STEPS).open()]
    return {
        "relaxation": frames[0].info["label"],
        "folder": str(folder),
        "recorded": {
            "force_calls": len(frames),
            "energy_eV": float(frames[-1].info["energy_zero_width"]),
        },
        "guided": {
            "maxstep_A": maker.maxstep_A,
            "force_calls": len(steps),
            "energy_eV": steps[-1]["energy"],
            "seconds": round(time.perf_counter() - started),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=Path, default=FRAMES)
    parser.add_argument("--source", default="7net-0", help="the stand-in of the screen")
    parser.add_argument("--target", default=str(SHIPPED), help="the model standing in for DFT")
    parser.add_argument("--gpaw", metavar="LABEL", help="run GPAW on this recorded relaxation")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument(
        "--maxstep",
        type=float,
        help=f"BFGS's largest step (A); {MAXSTEP} with a model, the guided Maker's with GPAW",
    )
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    relaxations = recorded(args.frames)
    source = Calculator("sevennet", model=args.source)
    maxstep = args.maxstep or MAXSTEP
    if args.gpaw:
        result = with_gpaw(relaxations[args.gpaw], source, args.cores, args.maxstep)
    else:
        target = shared_calculator(Calculator("sevennet", model=args.target))
        result = {
            "source": source.label,
            "target": args.target,
            "maxstep_A": maxstep,
            "rows": with_model(relaxations, shared_calculator(source), target, maxstep),
        }
    text = json.dumps(result, indent=1)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
