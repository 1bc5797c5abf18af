"""One lever of the speed benchmark, measured: force calls per defect relaxation by optimizer.

Relaxes the defect starts of one host (the rattled cells ``carrierflow run`` starts from) with
several ASE optimizers at the same fmax, one model loaded once, and prints force calls, seconds
and the final energy against BFGS's (a faster optimizer only counts if it ends in the same state).

    .venv/bin/python benchmarks/optimizers.py --host Li3In2 --species Li
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ase.optimize import BFGS, FIRE, LBFGS, BFGSLineSearch
from ase.optimize.precon import PreconLBFGS
from naive import fresh_calculator  # benchmarks/ is on the path of these scripts
from pymatgen.io.ase import AseAtomsAdaptor

from carrierflow.structures.sources import load_structure
from carrierflow.workflows.calculators import Calculator
from carrierflow.workflows.codes import DEFAULT_CODE
from carrierflow.workflows.jobs import plan_defects
from carrierflow.workflows.schemas import DefectSettings

OPTIMIZERS = {
    "BFGS": lambda atoms: BFGS(atoms, logfile=None),
    "LBFGS": lambda atoms: LBFGS(atoms, logfile=None),
    "FIRE": lambda atoms: FIRE(atoms, logfile=None),
    "BFGSLineSearch": lambda atoms: BFGSLineSearch(atoms, logfile=None),
    "PreconLBFGS(Exp)": lambda atoms: PreconLBFGS(atoms, precon="Exp", logfile=None),
}


class CountingCalculator:
    """Counts the force evaluations of the wrapped ASE calculator."""

    def __init__(self, calculator):
        self.calculator, self.calls = calculator, 0
        original = calculator.calculate

        def calculate(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        calculator.calculate = calculate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="Li3In2")
    parser.add_argument("--species", default="Li")
    parser.add_argument("--calculator", default=DEFAULT_CODE)
    parser.add_argument("--model")
    parser.add_argument("--defects", nargs="*", help="defect names (default: all)")
    parser.add_argument("--optimizers", nargs="*", default=list(OPTIMIZERS))
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    calculator = Calculator(args.calculator, model=args.model)
    ase_calculator = fresh_calculator(calculator)
    host = load_structure(args.host)[0].get_primitive_structure()
    plan = plan_defects(args.host, host, DefectSettings(species=args.species))
    rows = []
    for candidate, start in zip(plan.selected, plan.starts, strict=True):
        if args.defects and candidate.name not in args.defects:
            continue
        reference = None
        for name in args.optimizers:
            atoms = AseAtomsAdaptor.get_atoms(start)
            counter = CountingCalculator(ase_calculator)
            atoms.calc = ase_calculator
            started = time.perf_counter()
            optimizer = OPTIMIZERS[name](atoms)
            converged = optimizer.run(fmax=calculator.fmax, steps=calculator.max_steps)
            row = {
                "defect": candidate.name,
                "natoms": len(atoms),
                "optimizer": name,
                "force_calls": counter.calls,
                "seconds": time.perf_counter() - started,
                "energy_eV": float(atoms.get_potential_energy()),
                "converged": bool(converged),
            }
            del ase_calculator.calculate
            reference = reference if reference is not None else row["energy_eV"]
            row["energy_vs_first_meV"] = 1000 * (row["energy_eV"] - reference)
            rows.append(row)
            print(
                f"{row['defect']:<10} {name:<17} {row['force_calls']:>4} calls "
                f"{row['seconds']:>7.1f} s  dE {row['energy_vs_first_meV']:+7.2f} meV"
                f"{'' if row['converged'] else '  NOT converged'}",
                flush=True,
            )
    if args.output:
        args.output.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
