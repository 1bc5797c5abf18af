"""The naive baseline of the speed benchmark: the by-hand study as a plain script.

Relaxes the same structures as ``carrierflow run`` (bulk phases, perfect supercells, the same
rattled defect starts from carrierflow.structures) one by one with ASE BFGS at the same fmax,
loading the model again for every structure; no workflow, no store. Prints a JSON document of
every formation energy. With ``--starts N`` it is the naive structure search: every one of the
N starts of every candidate that ``carrierflow run --starts N`` makes, relaxed in the final cell
(no small cells, no merging), each candidate's E_f the lowest of its starts; a start whose atoms
ran together (the workflow's own rule, :func:`carrierflow.analysis.relaxation.collapse`, applied
after the relaxation: the naive loop has no guard that stops one) is left out.

    python benchmarks/naive.py --system Li-In --calculator sevennet --output naive.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ase.constraints import FixSymmetry
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS
from pymatgen.io.ase import AseAtomsAdaptor

from carrierflow.analysis.relaxation import collapse
from carrierflow.structures.presets import SYSTEMS, preset_model
from carrierflow.structures.sources import load_structure
from carrierflow.workflows.calculators import Calculator
from carrierflow.workflows.codes import DEFAULT_CODE
from carrierflow.workflows.engine import load_calculator
from carrierflow.workflows.jobs import plan_defects, starts_of
from carrierflow.workflows.schemas import DefectSettings


def fresh_calculator(calculator: Calculator):
    """The ASE calculator, its model loaded from scratch (the naive script's habit), with the
    workflow's deterministic torch (so that both compute the same numbers)."""
    return load_calculator(calculator.makers("static")[0])


def relax(structure, calculator: Calculator, relax_cell: bool) -> tuple[float, object, int]:
    """Energy, structure and steps of one BFGS relaxation (cell and ions, or ions only)."""
    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.calc = fresh_calculator(calculator)
    if relax_cell:
        atoms.set_constraint(FixSymmetry(atoms, symprec=1e-2))
    target = FrechetCellFilter(atoms) if relax_cell else atoms
    optimizer = BFGS(target, logfile=None)
    optimizer.run(fmax=calculator.fmax, steps=calculator.max_steps)
    atoms.set_constraint()
    return atoms.get_potential_energy(), AseAtomsAdaptor.get_structure(atoms), optimizer.nsteps


def single_point(structure, calculator: Calculator) -> float:
    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.calc = fresh_calculator(calculator)
    return atoms.get_potential_energy()


def plan_summary(plan) -> dict:
    """What a run chose for one host: the supercell and every candidate's name, multiplicity and
    representative (fractional coordinates of the host cell)."""
    return {
        "supercell": plan.choice.matrix,
        "candidates": {
            c.name: {"multiplicity": c.multiplicity, "frac_coords": c.frac_coords}
            for c in plan.selected
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", default="Li-In")
    parser.add_argument("--calculator", default=DEFAULT_CODE)
    parser.add_argument("--model")
    parser.add_argument("--starts", type=int, default=1, help="starts per candidate")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    preset = SYSTEMS[args.system]
    model = preset_model(args.system, args.calculator, args.model)
    calculator = Calculator(args.calculator, model=model)
    settings = DefectSettings(species=preset.species)
    started = time.perf_counter()
    phases, mu = [], None
    for spec in [preset.reference, *preset.hosts]:
        structure = load_structure(spec)[0].get_primitive_structure()
        label = structure.composition.reduced_formula
        energy, bulk, _ = relax(structure, calculator, relax_cell=True)
        if mu is None:
            mu = energy / len(bulk)
        plan = plan_defects(label, bulk, settings, given=structure)
        perfect = single_point(plan.perfect, calculator)
        defects = {}
        for candidate, cell in zip(plan.selected, plan.cells, strict=True):
            starts = starts_of(label, candidate, cell, settings, args.starts, host=plan.host)
            tried = []
            for tag, start in starts:
                e_defect, relaxed, steps = relax(start, calculator, relax_cell=False)
                added = len(start) - len(plan.perfect)
                ran_together = collapse(relaxed, plan.perfect) is not None
                tried.append(
                    {
                        "start": tag,
                        "formation_energy_eV": e_defect - perfect - added * mu,
                        "steps": steps,
                        "ran_together": bool(ran_together),
                    }
                )
            kept = [t for t in tried if not t["ran_together"]] or tried
            lowest = min(kept, key=lambda t: t["formation_energy_eV"])
            defects[candidate.name] = {
                "kind": candidate.kind,
                "formation_energy_eV": lowest["formation_energy_eV"],
                "steps": sum(t["steps"] for t in tried),
                **({"starts": tried} if len(tried) > 1 else {}),
            }
            print(f"{label} {candidate.name}: {defects[candidate.name]}", flush=True)
        phases.append({"label": label, "plan": plan_summary(plan), "defects": defects})
    document = {"wall_s": time.perf_counter() - started, "mu_eV": mu, "phases": phases}
    args.output.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
