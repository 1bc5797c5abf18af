"""The one carrier flow: bulk relaxations, defect supercells, assessment and verdict."""

from __future__ import annotations

from dataclasses import dataclass

from jobflow import Flow, Maker
from pydantic import BaseModel, ConfigDict
from pymatgen.core import Structure

from carrierflow.structures.sources import StructureSource
from carrierflow.workflows.calculators import Calculator
from carrierflow.workflows.jobs import calculate, defect_calculations, summarize_results
from carrierflow.workflows.schemas import DefectSettings


class Phase(BaseModel):
    """A host or the reference phase, with where it came from."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    label: str
    structure: Structure
    source: StructureSource


@dataclass
class CarrierFlowMaker(Maker):
    """Formation energies of every vacancy and interstitial of the mobile species in each host
    and in the reference phase, and the dominant carrier per host.

    Parameters
    ----------
    calculator
        The calculator that serves every term of every formation energy.
    settings
        Defect generation, supercell and reconstruction settings.
    system
        A label for the results (``Li-In``).
    """

    calculator: Calculator
    settings: DefectSettings
    system: str = "custom"
    name: str = "carrierflow"

    def make(self, reference: Phase, hosts: list[Phase]) -> Flow:
        """The flow for one reference phase and its hosts."""
        calculator = self.calculator
        bulk_makers = calculator.makers("bulk_relax")
        jobs = []
        reference_bulk = calculate(
            bulk_makers, reference.structure, "bulk_relax", f"{reference.label} bulk", calculator
        )
        reference_defects = defect_calculations(
            reference.label,
            reference_bulk.output,
            reference_bulk.output,
            reference.source,
            self.calculator,
            self.settings,
            is_reference=True,
        )
        jobs += [reference_bulk, reference_defects]
        host_outputs = []
        for host in hosts:
            if self.settings.relax_hosts:
                bulk = calculate(
                    bulk_makers, host.structure, "bulk_relax", f"{host.label} bulk", calculator
                )
            else:
                bulk = calculate(
                    calculator.makers("static"),
                    host.structure,
                    "static",
                    f"{host.label} bulk (as given)",
                    calculator,
                )
            defects = defect_calculations(
                host.label,
                bulk.output,
                reference_bulk.output,
                host.source,
                self.calculator,
                self.settings,
            )
            jobs += [bulk, defects]
            host_outputs.append(defects.output)
        summary = summarize_results(
            self.system,
            calculator.describe(),
            self.settings,
            reference_defects.output,
            host_outputs,
        )
        summary.metadata.update(
            {"carrierflow": "results", "system": self.system, "calculator": self.calculator.label}
        )
        jobs.append(summary)
        return Flow(jobs, output=summary.output, name=f"{self.name} {self.system}")
