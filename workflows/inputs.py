"""Input folders of every calculation of the flow, for users who run the code by hand."""

from __future__ import annotations

import json
from pathlib import Path

from pymatgen.core import Structure

from carrierflow.workflows.calculators import Calculator, potcar_directory
from carrierflow.workflows.engine import slug
from carrierflow.workflows.flows import Phase, bulk_task
from carrierflow.workflows.jobs import plan_defects
from carrierflow.workflows.schemas import DefectSettings


def planned_calculations(
    settings: DefectSettings, reference: Phase, hosts: list[Phase]
) -> list[tuple[str, str, Structure]]:
    """``(job label, task, start structure)`` of every calculation, with supercells and defect
    cells built on the structures as given (the flow builds them on the relaxed bulk)."""
    planned = []
    for phase in [reference, *hosts]:
        task, name = bulk_task(settings, is_reference=phase is reference)
        planned.append((f"{phase.label} {name}", task, phase.structure))
        plan = plan_defects(phase.label, phase.structure, settings, phase.structure)
        planned.append((f"{phase.label} perfect supercell", "static", plan.perfect))
        for candidate, start in zip(plan.selected, plan.starts, strict=True):
            planned.append((f"{phase.label} {candidate.name}", "ion_relax", start))
    return planned


def write_inputs(
    calculator: Calculator,
    settings: DefectSettings,
    reference: Phase,
    hosts: list[Phase],
    directory: Path,
) -> list[dict]:
    """Write one input folder per calculation, named after its job, and ``calculations.json``.

    POTCARs are written where pymatgen's POTCAR directory is set, ``POTCAR.spec`` otherwise. A
    task of several steps (bulk: relax, relax, static) gets the first step's inputs; the later
    ones start from its CONTCAR.
    """
    spec = not potcar_directory()
    written = []
    for label, task, structure in planned_calculations(settings, reference, hosts):
        makers = calculator.makers(task)
        folder = directory / slug(label)
        inputs = makers[0].input_set_generator.get_input_set(structure, potcar_spec=spec)
        inputs.write_input(folder)
        written.append(
            {
                "folder": folder.name,
                "job": label,
                "task": task,
                "steps": [maker.name for maker in makers],
                "formula": structure.composition.formula,
                "natoms": len(structure),
                "kpoints": list(inputs["KPOINTS"].kpts[0]),
                "potcar": "POTCAR.spec" if spec else "POTCAR",
            }
        )
    (directory / "calculations.json").write_text(json.dumps(written, indent=1))
    return written
