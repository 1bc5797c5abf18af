"""The one carrier flow: bulk relaxations, defect supercells, assessment and verdict."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from jobflow import Flow, Maker
from monty.json import jsanitize
from pydantic import BaseModel, ConfigDict
from pymatgen.core import Structure

from carrierflow.structures.sources import StructureSource
from carrierflow.workflows.calculators import Calculator, by_content
from carrierflow.workflows.engine import calculation
from carrierflow.workflows.jobs import defect_calculations, summarize_results
from carrierflow.workflows.migration import add_transport, migration_calculations
from carrierflow.workflows.refine import (
    REFINEMENT_CHOICE,
    add_screen_verdicts,
    refine_defects,
    screen_in_dft_cell,
)
from carrierflow.workflows.schemas import DefectSettings, MigrationSettings, RefineSettings


class Phase(BaseModel):
    """A host or the reference phase, with where it came from."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    label: str
    structure: Structure
    source: StructureSource


def identity_hash(identity) -> str:
    """The SHA-256 of an identity (a run's, a learning round's frames'), JSON with sorted keys."""
    payload = json.dumps(jsanitize(identity, strict=True), sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def results_label(calculator: Calculator, refine: Calculator | None = None) -> str:
    """The calculator label of a results document: ``sevennet-7net-l3i5``, or
    ``sevennet-7net-l3i5+gpaw-fast`` when refined with DFT."""
    return calculator.label if refine is None else f"{calculator.label}+{refine.label}"


def bulk_task(settings: DefectSettings, is_reference: bool) -> tuple[str, str]:
    """The task and job name of a phase's bulk: the reference and, unless kept as given, every
    host are relaxed."""
    if is_reference or settings.relax_hosts:
        return "bulk_relax", "bulk"
    return "static", "bulk (as given)"


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
    refine
        A DFT calculator that recomputes the lowest defects of each phase (None: no refinement).
    refine_settings
        How many defects, and the DFT supercell.
    migration
        Hops, NEB and diffusion of each phase's lowest vacancy and interstitial (None: none).
    """

    calculator: Calculator
    settings: DefectSettings
    system: str = "custom"
    name: str = "carrierflow"
    refine: Calculator | None = None
    refine_settings: RefineSettings = field(default_factory=RefineSettings)
    migration: MigrationSettings | None = None

    def __post_init__(self) -> None:
        if self.migration is not None and self.refine is not None:
            raise ValueError("migration barriers of a DFT-refined run are not available yet")
        if self.migration is not None:
            # a calculator without NEB fails here, not after the defects have run
            self.calculator.neb_makers(self.migration.fmax_eV_A, self.migration.max_steps)

    @property
    def label(self) -> str:
        """The calculator label of the results (see :func:`results_label`)."""
        return results_label(self.calculator, self.refine)

    def run_id(self, reference: Phase, hosts: list[Phase]) -> str:
        """The identity of a run: a hash of everything that determines its numbers (system,
        each calculator with its model's content and settings, every defect, refinement and
        migration setting, every input structure), and of nothing that does not (where and on
        how many cores a code runs). ``report`` finds a run by it, never another run's results."""
        return identity_hash(self.identity(reference, hosts))

    def identity(self, reference: Phase, hosts: list[Phase]) -> dict:
        """What :meth:`run_id` hashes."""

        def code(calculator: Calculator | None) -> dict | None:
            if calculator is None:
                return None
            described = calculator.describe()
            # versions are recorded, not identities: see CACHE_VERSION in the engine
            described.pop("version", None)
            described.pop("carrierflow_version", None)
            return by_content(described)

        identity = {
            "system": self.system,
            "calculator": code(self.calculator),
            "refine": code(self.refine),
            "settings": self.settings.identity(),
            "refine_settings": (
                {**self.refine_settings.model_dump(), "choice": REFINEMENT_CHOICE}
                if self.refine
                else None
            ),
            "migration": self.migration.model_dump() if self.migration else None,
            "phases": [
                {"label": p.label, "structure": p.structure.as_dict()} for p in [reference, *hosts]
            ],
        }
        return identity

    def _tagged(self, job, label: str, run_id: str):
        """Mark a job's output as the results document of this run."""
        job.metadata.update(
            {
                "carrierflow": "results",
                "system": self.system,
                "calculator": label,
                "run_id": run_id,
            }
        )
        return job

    def _bulk(self, calculator: Calculator, phase: Phase, is_reference: bool, suffix: str = ""):
        """The bulk job of a phase: relaxed, or a single point of a host kept as given."""
        task, name = bulk_task(self.settings, is_reference)
        return calculation(calculator, task, phase.structure, f"{phase.label} {name}{suffix}")

    def _screen(self, reference: Phase, hosts: list[Phase]):
        """The screen's jobs: bulk relaxations and defects of every phase (reference first) with
        ``self.calculator``, and their summary (with migration when asked). Returns the jobs,
        the reference bulk's output, every phase's outcome and the summary job."""
        calculator = self.calculator
        reference_bulk = self._bulk(calculator, reference, is_reference=True)
        reference_defects = defect_calculations(
            reference.label,
            reference_bulk.output,
            reference_bulk.output,
            reference.source,
            calculator,
            self.settings,
            is_reference=True,
            given=reference.structure,
        )
        jobs = [reference_bulk, reference_defects]
        host_outputs, host_bulks = [], []
        for host in hosts:
            bulk = self._bulk(calculator, host, is_reference=False)
            defects = defect_calculations(
                host.label,
                bulk.output,
                reference_bulk.output,
                host.source,
                calculator,
                self.settings,
                given=host.structure,
            )
            jobs += [bulk, defects]
            host_outputs.append(defects.output)
            host_bulks.append(bulk.output)
        summary = summarize_results(
            self.system,
            calculator.describe(),
            self.settings,
            reference_defects.output,
            host_outputs,
        )
        jobs.append(summary)
        if self.migration is not None:
            transports = [
                migration_calculations(
                    phase.label,
                    bulk,
                    outcome,
                    calculator,
                    self.settings,
                    self.migration,
                    given=phase.structure,
                )
                for phase, bulk, outcome in zip(
                    [reference, *hosts],
                    [reference_bulk.output, *host_bulks],
                    [reference_defects.output, *host_outputs],
                    strict=True,
                )
            ]
            summary = add_transport(summary.output, [t.output for t in transports], self.migration)
            jobs += [*transports, summary]
        return jobs, reference_bulk.output, [reference_defects.output, *host_outputs], summary

    def make(self, reference: Phase, hosts: list[Phase]) -> Flow:
        """The flow for one reference phase and its hosts."""
        jobs, reference_bulk, screened, summary = self._screen(reference, hosts)
        run_id = self.run_id(reference, hosts)
        self._tagged(summary, self.calculator.label, run_id)
        if self.refine is not None:
            refined = self._refinement(
                [reference, *hosts], reference_bulk, screened, summary.output, run_id
            )
            jobs.append(refined)
            summary = refined
        return self._flow(jobs, summary, run_id)

    def _flow(self, jobs: list, summary, run_id: str) -> Flow:
        flow = Flow(jobs, output=summary.output, name=f"{self.name} {self.system}")
        # every job, also those created while the flow runs, says which run it belongs to,
        # so that a partial run can be reported
        flow.update_metadata(
            {"carrierflow_run": {"system": self.system, "label": self.label, "run_id": run_id}}
        )
        return flow

    def _refinement_jobs(
        self,
        phases: list[Phase],
        screen_calculator: Calculator,
        screen_mu_bulk,
        screened: list,
        names: list[list[str]] | None = None,
        prepared: tuple[list, list] | None = None,
        dft_before: list | None = None,
    ) -> tuple[list, list, list, list]:
        """DFT bulk relaxations of every phase, its candidates relaxed by the stand-in in the DFT
        cell (or those two ``prepared``, from :meth:`_dft_cells`), and the refinement of what the
        screen and those put lowest (or of ``names[i]`` in phase i, with ``dft_before[i]`` the DFT
        outcome of its earlier refinements: its E_f rank a reconstruction too); returns the
        jobs, every phase's DFT outcome (None for a phase with nothing to refine), its DFT bulk
        and its stand-in outcomes in the DFT cell."""
        jobs, outputs = [], []
        if prepared is None:
            made, bulks, cells = self._dft_cells(
                phases, screen_calculator, screen_mu_bulk, screened
            )
            jobs += made
        else:
            bulks, cells = prepared
        for index, (phase, screen_outcome) in enumerate(zip(phases, screened, strict=True)):
            if names is not None and not names[index]:
                outputs.append(None)
                continue
            refined = refine_defects(
                phase.label,
                bulks[index],
                bulks[0],
                screen_mu_bulk,
                screen_outcome,
                cells[index],
                phase.source,
                screen_calculator,
                self.refine,
                self.settings,
                self.refine_settings,
                is_reference=index == 0,
                given=phase.structure,
                names=None if names is None else names[index],
                earlier=[] if dft_before is None else dft_before[index].defects,
            )
            jobs.append(refined)
            outputs.append(refined.output)
        return jobs, outputs, bulks, cells

    def _dft_cells(
        self, phases: list[Phase], screen_calculator: Calculator, screen_mu_bulk, screened: list
    ) -> tuple[list, list, list]:
        """Every phase's DFT bulk relaxation and its screened candidates relaxed by
        ``screen_calculator`` in the DFT cell (:func:`screen_in_dft_cell`): the jobs, the DFT
        bulks and the stand-in outcomes in the DFT cells."""
        jobs, bulks, cells = [], [], []
        for index, (phase, screen_outcome) in enumerate(zip(phases, screened, strict=True)):
            bulk = self._bulk(self.refine, phase, is_reference=index == 0, suffix=" [DFT]")
            cell = screen_in_dft_cell(
                phase.label,
                bulk.output,
                screen_mu_bulk,
                screen_outcome,
                screen_calculator,
                self.settings,
                self.refine_settings,
                given=phase.structure,
            )
            jobs += [bulk, cell]
            bulks.append(bulk.output)
            cells.append(cell.output)
        return jobs, bulks, cells

    def _refinement(
        self, phases: list[Phase], screen_mu_bulk, screened: list, screen, run_id: str
    ) -> Flow:
        """DFT for the stand-in's lowest defects of every phase (reference first), and the
        DFT verdicts."""
        dft = self.refine
        jobs, outputs, _, _ = self._refinement_jobs(
            phases, self.calculator, screen_mu_bulk, screened
        )
        dft_results = summarize_results(
            self.system, dft.describe(), self.settings, outputs[0], outputs[1:]
        )
        summary = self._tagged(
            add_screen_verdicts(dft_results.output, screen, self.refine_settings),
            self.label,
            run_id,
        )
        jobs += [dft_results, summary]
        return Flow(jobs, output=summary.output, name="DFT refinement")
