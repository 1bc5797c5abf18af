"""What the host's lattice does to a defect's E_f: the shipped model on three lattices of each host.

Each code relaxes its own host, so a screen's E_f and DFT's in "the same cell" differ by the two
lattices as well as by the model's error. For each host and defect named below, in the supercell of
DFT's cell size (``--min-image-distance 8``, as ``carrierflow run`` chooses it), this relaxes the
search's own first start (:func:`carrierflow.workflows.jobs.starts_of`, its fractional
coordinates kept) with the shipped model on

- the model's own lattice (the host as the run relaxes it with the model),
- the fast GPAW preset's (the perfect supercell of ``fixtures/dft/li-in-gpaw-fast.extxyz``),
- the fixture's (PBE, GPAW at 450 eV; ``fixtures/README.md``),

each lattice's perfect supercell relaxed the same way (ASE BFGS, ions only, to ``--fmax``), mu
from the model's relaxed bcc Li as in a run; and prints E_f and each lattice's volume per atom.

    .venv/bin/python benchmarks/lattice.py --output benchmarks/lattice.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from ase.io import read
from ase.optimize import BFGS
from jobflow import Flow, JobStore, run_locally
from maggma.stores import MemoryStore
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from carrierflow.analysis.formation import added_atoms, chemical_potential, formation_energy
from carrierflow.structures.sources import load_fixture
from carrierflow.structures.symmetry import symmetrize
from carrierflow.workflows.calculators import Calculator
from carrierflow.workflows.engine import calculation, shared_calculator
from carrierflow.workflows.jobs import plan_defects, starts_of
from carrierflow.workflows.schemas import CalculationDoc, DefectSettings

HERE = Path(__file__).resolve().parent
DFT_FRAMES = HERE.parent / "fixtures" / "dft" / "li-in-gpaw-fast.extxyz"
DEFECTS = {"Li5In4": ["v_Li_2d_1", "Li_i5"], "Li3In2": ["v_Li_2c", "Li_i3"]}


def relaxed_hosts(calculator: Calculator) -> dict[str, CalculationDoc]:
    """bcc Li and each host relaxed by the model as ``carrierflow run`` relaxes them."""
    jobs = {
        name: calculation(
            calculator, "bulk_relax", load_fixture(name)[0].get_primitive_structure(), name
        )
        for name in ["Li", *DEFECTS]
    }
    responses = run_locally(Flow(list(jobs.values())), store=JobStore(MemoryStore()))
    return {name: responses[job.uuid][1].output for name, job in jobs.items()}


def energy(structure: Structure, model, calculator: Calculator) -> float:
    """Relaxed energy, ions only, to the run's force criterion within the run's step limit."""
    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.calc = model
    if not BFGS(atoms, logfile=None).run(fmax=calculator.fmax, steps=calculator.max_steps):
        raise SystemExit(f"not relaxed to {calculator.fmax} eV/A in {calculator.max_steps} steps")
    return float(atoms.get_potential_energy())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="7net-li-in")
    parser.add_argument("--fmax", type=float, default=0.01)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    calculator = Calculator("sevennet", model=args.model, fmax=args.fmax)
    model = shared_calculator(calculator)
    bulks = relaxed_hosts(calculator)
    mu = chemical_potential(bulks["Li"].energy_eV, bulks["Li"].natoms)
    frames = read(DFT_FRAMES, ":")
    settings = DefectSettings(species="Li", min_image_distance_A=8.0)
    rows = []
    for host, names in DEFECTS.items():
        plan = plan_defects(host, bulks[host].structure, settings)
        [dft] = [a for a in frames if a.info["label"] == f"{host} perfect supercell [DFT]"]
        fixture = symmetrize(load_fixture(host)[0].get_primitive_structure())
        lattices = {
            "model": plan.perfect.lattice,
            "gpaw-fast": Lattice(dft.cell.array),
            "fixture": fixture.make_supercell(plan.choice.matrix, in_place=False).lattice,
        }
        for lattice_name, lattice in lattices.items():
            # the same supercell of every lattice: a strain of a few per cent, no rotation
            strain = np.linalg.solve(plan.perfect.lattice.matrix, lattice.matrix)
            if np.abs(strain - np.eye(3)).max() > 0.05:
                raise SystemExit(f"{host}: the {lattice_name} supercell is not the run's")
            perfect = Structure(lattice, plan.perfect.species, plan.perfect.frac_coords)
            e_perfect = energy(perfect, model, calculator)
            row = {
                "host": host,
                "lattice": lattice_name,
                "volume_per_atom_A3": perfect.volume / len(perfect),
            }
            for name in names:
                index = [c.name for c in plan.selected].index(name)
                [(_, start)] = starts_of(host, plan.selected[index], plan.cells[index], settings, 1)
                defect = Structure(lattice, start.species, start.frac_coords)
                row[name] = formation_energy(
                    energy(defect, model, calculator),
                    e_perfect,
                    added_atoms(plan.selected[index].kind),
                    mu,
                )
            rows.append(row)
            print(
                f"{host} on the {lattice_name} lattice ({row['volume_per_atom_A3']:.2f} A^3/atom): "
                + ", ".join(f"{n} {row[n]:.3f}" for n in names),
                flush=True,
            )
    if args.output:
        document = {"model": args.model, "fmax_eV_A": args.fmax, "rows": rows}
        args.output.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")


if __name__ == "__main__":
    main()
