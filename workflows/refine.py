"""Refinement: the stand-in's lowest defects of each phase recomputed with DFT.

Per phase, in a DFT-sized supercell of the DFT-relaxed bulk: the perfect supercell with DFT and
with the stand-in, and for each chosen defect a stand-in relaxation followed by a DFT relaxation
from its geometry. The verdict then comes from DFT; the stand-in's E_f in the same cell shows
its error.
"""

from __future__ import annotations

import logging

from jobflow import Flow, Response, job
from pymatgen.core import Structure

from carrierflow.analysis.documents import RefinedFrom, Results, verdicts
from carrierflow.analysis.flags import FlagCode, has
from carrierflow.analysis.formation import added_atoms, chemical_potential, formation_energy
from carrierflow.analysis.schemas import DefectOutcome, HostOutcome, ScreenComparison
from carrierflow.structures.defects import DefectCandidate, find_vacancies, interstitial_at
from carrierflow.structures.sources import StructureError, StructureSource
from carrierflow.structures.supercells import choose_supercell
from carrierflow.structures.symmetry import symmetrize
from carrierflow.workflows.calculators import Calculator
from carrierflow.workflows.engine import calculation
from carrierflow.workflows.jobs import (
    DefectPlan,
    assess_defect,
    check_same_calculator,
    collect_host,
    placed_plan,
    search_starts,
)
from carrierflow.workflows.schemas import CalculationDoc, DefectSettings, RefineSettings

logger = logging.getLogger("carrierflow")


def lowest_defects(defects: list[DefectOutcome], k: int) -> list[DefectOutcome]:
    """The ``k`` lowest vacancies and ``k`` lowest interstitials by ranking energy, leaving out
    candidates that relaxed into an earlier one's state and relaxations whose atoms ran
    together."""
    chosen = []
    for kind in ("vacancy", "interstitial"):
        distinct = [
            d
            for d in defects
            if d.kind == kind and not has(d.flags, FlagCode.SHARED_STATE, FlagCode.COLLAPSED)
        ]
        chosen += sorted(distinct, key=lambda d: d.ranking_energy_eV)[:k]
    return chosen


def transfer_candidates(
    defects: list[DefectOutcome], host: Structure, species: str, given: Structure | None = None
) -> list[DefectCandidate]:
    """The screened defects as candidates of another relaxation of the same host: vacancies by
    their Wyckoff name (read from ``given``, as the screen did), interstitials at the same
    fractional position."""
    vacancies = {c.name: c for c in find_vacancies(host, species, given)}
    candidates = []
    for defect in defects:
        if defect.kind == "interstitial":
            candidates.append(interstitial_at(host, defect.name, species, defect.frac_coords))
        elif defect.name in vacancies:
            candidates.append(vacancies[defect.name])
        else:
            raise StructureError(
                f"{defect.name}: no such vacancy in the DFT-relaxed host "
                f"(vacancies: {', '.join(vacancies)})"
            )
    return candidates


# the options of the DFT supercell, named when none fits
DFT_CELL_OPTIONS = ("--dft-max-atoms", "--dft-min-image-distance")


def dft_plan(
    label: str,
    bulk: CalculationDoc,
    screen: HostOutcome,
    chosen: set[str],
    settings: DefectSettings,
    refine: RefineSettings,
    given: Structure | None = None,
) -> DefectPlan:
    """The refinement's plan of one phase: the DFT-relaxed host symmetrized, its DFT-sized
    supercell, the screen's defects as candidates there and the ``chosen`` ones placed, each
    with its start (seeded apart from the screen's)."""
    host = symmetrize(bulk.structure)
    choice = choose_supercell(host, refine.min_image_distance_A, refine.max_atoms, DFT_CELL_OPTIONS)
    candidates = transfer_candidates(screen.defects, host, settings.species, given)
    selected = [c for c in candidates if c.name in chosen]
    return placed_plan(label, host, choice, candidates, selected, settings, "/dft")


@job
def refine_defects(
    label: str,
    bulk: CalculationDoc,
    reference_bulk: CalculationDoc,
    screen_reference_bulk: CalculationDoc,
    screen: HostOutcome,
    source: StructureSource,
    screen_calculator: Calculator,
    calculator: Calculator,
    settings: DefectSettings,
    refine: RefineSettings,
    is_reference: bool = False,
    given: Structure | None = None,
    names: list[str] | None = None,
) -> Response:
    """Recompute the stand-in's lowest defects of one phase with DFT (or the defects ``names``:
    a learning round refines only what it has not refined yet), and replace this job by the
    calculations (choices made on the symmetrized host, as the screen's:
    :func:`carrierflow.workflows.jobs.plan_defects`)."""
    check_same_calculator([bulk.calculator, reference_bulk.calculator])
    mu = chemical_potential(reference_bulk.energy_eV, reference_bulk.natoms)
    screen_mu = chemical_potential(screen_reference_bulk.energy_eV, screen_reference_bulk.natoms)
    chosen = (
        set(names)
        if names is not None
        else {d.name for d in lowest_defects(screen.defects, refine.k)}
    )
    plan = dft_plan(label, bulk, screen, chosen, settings, refine, given)
    logger.info(
        "%s: refining %s with %s in a %d-atom supercell (images %.2f A apart)",
        label,
        ", ".join(sorted(chosen)),
        calculator.label,
        plan.choice.natoms,
        plan.choice.min_image_distance_A,
    )
    dft_perfect = calculation(
        calculator, "static", plan.perfect, f"{label} perfect supercell [DFT]"
    )
    screen_perfect = calculation(
        screen_calculator, "static", plan.perfect, f"{label} perfect supercell [DFT cell]"
    )
    jobs = [dft_perfect, screen_perfect]
    outcomes = []
    if settings.starts > 1:
        # the search again, in the DFT cell and with the stand-in: each defect's starts relaxed
        # there, and DFT from the lowest state they reach. Carrying the screen's winner over
        # instead would need the two hosts' cells matched atom by atom (the DFT host's lattice
        # differs by about 1 %), and the stand-in's lowest state of the DFT cell is the one a
        # DFT relaxation should start from; each relaxation costs seconds there
        made, prerelaxed, _ = search_starts(
            label,
            plan,
            screen_perfect,
            screen_mu,
            screen_calculator,
            settings,
            " [DFT cell]",
            "/dft",
        )
        jobs += made
    else:
        prerelaxed = []
        for candidate, start in zip(plan.selected, plan.starts, strict=True):
            prerelax = calculation(
                screen_calculator, "ion_relax", start, f"{label} {candidate.name} [DFT cell]"
            )
            jobs.append(prerelax)
            prerelaxed.append(prerelax.output)
    for candidate, cell, stand_in in zip(plan.selected, plan.cells, prerelaxed, strict=True):
        relax = calculation(
            calculator,
            "ion_relax",
            stand_in.structure,
            f"{label} {candidate.name} [DFT]",
            makers=calculator.relax_from_minimum(screen_calculator),
        )
        assess = assess_defect(
            label,
            plan.host,
            plan.choice,
            plan.candidates,
            candidate,
            cell,
            stand_in.structure,
            relax.output,
            dft_perfect.output,
            mu,
            calculator,
            settings,
        )
        compare = compare_with_screen(
            assess.output,
            stand_in,
            screen_perfect.output,
            screen_mu,
            next(d for d in screen.defects if d.name == candidate.name),
        )
        jobs += [relax, assess, compare]
        outcomes.append(compare.output)
    host_job = collect_host(
        label, source, bulk, plan.choice, dft_perfect.output, outcomes, is_reference
    )
    jobs.append(host_job)
    return Response(replace=Flow(jobs, output=host_job.output, name=f"{label} refinement"))


@job
def compare_with_screen(
    outcome: DefectOutcome,
    screen_relaxed: CalculationDoc | DefectOutcome,
    screen_perfect: CalculationDoc,
    screen_mu: float,
    screened: DefectOutcome,
) -> DefectOutcome:
    """Put the stand-in's E_f of the same defect in the same cell beside the DFT one (its
    pre-relaxation, or the lowest state of its search there, assessed on ``screen_perfect``)."""
    if isinstance(screen_relaxed, CalculationDoc):
        check_same_calculator([screen_relaxed.calculator, screen_perfect.calculator])
    screen_eV = formation_energy(
        screen_relaxed.energy_eV,
        screen_perfect.energy_eV,
        added_atoms(outcome.kind),
        screen_mu,
    )
    described = screen_perfect.calculator
    outcome.screen = ScreenComparison(
        calculator=described["name"] + (f" {described['model']}" if described["model"] else ""),
        formation_energy_eV=screen_eV,
        screen_formation_energy_eV=screened.ranking_energy_eV,
        error_eV=screen_eV - outcome.formation_energy_eV,
        search=getattr(screen_relaxed, "search", None),
    )
    return outcome


@job
def add_screen_verdicts(results: Results, screen: Results, refine: RefineSettings) -> Results:
    """The refined results document: the DFT results, with the stand-in screen's verdicts."""
    results.refined_from = RefinedFrom(
        calculator=screen.calculator,
        refine=refine.model_dump(),
        verdicts=verdicts(screen),
    )
    return results
