"""The defect jobs: place defects, search their states, assess them and summarise (the
calculations themselves run through :mod:`carrierflow.workflows.engine`)."""

from __future__ import annotations

import json
import logging

import numpy as np
from jobflow import Flow, Job, Response, job
from pydantic import BaseModel, ConfigDict, Field
from pymatgen.core import Structure

from carrierflow.analysis.documents import Results
from carrierflow.analysis.flags import Flag, FlagCode, has
from carrierflow.analysis.formation import added_atoms, chemical_potential, formation_energy
from carrierflow.analysis.relaxation import (
    collapse,
    displacements,
    hold_far_atoms,
    mark_shared_final_states,
    reconstruction_evidence,
    relaxation_geometry,
)
from carrierflow.analysis.schemas import (
    DefectOutcome,
    HostOutcome,
    LocalRelaxation,
    StartsSearch,
)
from carrierflow.analysis.verdict import summarize
from carrierflow.structures.defects import (
    DefectCandidate,
    DefectCell,
    build_defect_cell,
    defect_starts,
    find_defects,
    positions_in_supercell,
)
from carrierflow.structures.embedding import embed_relaxation
from carrierflow.structures.sources import StructureSource
from carrierflow.structures.supercells import SupercellChoice, choose_supercell, make_supercell
from carrierflow.structures.symmetry import symmetrize
from carrierflow.workflows.calculators import Calculator, by_content
from carrierflow.workflows.engine import calculation
from carrierflow.workflows.schemas import (
    CalculationDoc,
    DefectSettings,
)

logger = logging.getLogger("carrierflow")


class DefectPlan(BaseModel):
    """Everything a host's defect calculations start from, before anything is computed."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    host: Structure = Field(description="the symmetrized host every choice was made on")
    choice: SupercellChoice
    perfect: Structure
    candidates: list[DefectCandidate]
    selected: list[DefectCandidate]
    cells: list[DefectCell]
    starts: list[Structure] = Field(description="the rattled start of each selected defect")


def place_defects(
    label: str,
    host: Structure,
    choice: SupercellChoice,
    perfect: Structure,
    candidates: list[DefectCandidate],
    settings: DefectSettings,
    seed_tag: str = "",
) -> tuple[list[DefectCell], list[Structure]]:
    """Each candidate in the perfect supercell, and its reproducibly rattled start."""
    cells = [build_defect_cell(host, choice.matrix, perfect, c) for c in candidates]
    starts = [
        starts_of(label, candidate, cell, settings, 1, seed_tag)[0][1]
        for candidate, cell in zip(candidates, cells, strict=True)
    ]
    return cells, starts


def starts_of(
    label: str,
    candidate: DefectCandidate,
    cell: DefectCell,
    settings: DefectSettings,
    count: int,
    seed_tag: str = "",
    host: Structure | None = None,
) -> list[tuple[str, Structure]]:
    """The tagged, reproducible starts of one defect (the first is a single-start run's; an
    interstitial of ``host`` gets split starts)."""
    return defect_starts(
        cell,
        f"{label}/{candidate.name}{seed_tag}",
        count,
        settings.rattle_radius_A,
        settings.rattle_amplitude_A,
        host,
    )


def small_cell_settings(settings: DefectSettings) -> DefectSettings:
    """The settings of the small-cell screen (``--screen-image-distance``): its image distance,
    and no local relaxation there. Its states are ranked by their free relaxation; the final
    cell assesses reconstruction. Why: the far-field radius is capped at half the image
    distance, so in a 7 A cell the "far field" is the defect's second shell. Measured on Li-In
    with 7net-li-in: Li5In4 Li_i1 and Li_i2 moved atoms beyond 4.1 A there, their far-field-fixed
    energies ranked them out of the kept states (Li_i1 free 0.733 eV, kept ones from 0.835), and
    the search's lowest interstitial ended at 0.701 eV against the single start's 0.540."""
    return settings.model_copy(
        update={"min_image_distance_A": settings.screen_image_distance_A, "local_relaxation": False}
    )


def plan_defects(
    label: str, host: Structure, settings: DefectSettings, given: Structure | None = None
) -> DefectPlan:
    """The supercell, the perfect supercell and every selected defect cell of one host.

    Every choice is made on the host symmetrized at ``SYMPREC`` with rounding-proof tie-breaks
    (:mod:`carrierflow.structures.symmetry`), so that two relaxations of one host that differ in
    the last digits (another run, another CPU's kernels) give the same supercell, candidates,
    names and representatives; vacancy names come from ``given``, the structure as given.
    """
    host = symmetrize(host)
    choice = choose_supercell(host, settings.min_image_distance_A, settings.max_atoms)
    candidates = find_defects(
        host, settings.species, settings.interstitial_min_distance_A, given=given
    )
    selected = [c for c in candidates if c.kind in settings.defect_kinds]
    return placed_plan(label, host, choice, candidates, selected, settings)


def placed_plan(
    label: str,
    host: Structure,
    choice: SupercellChoice,
    candidates: list[DefectCandidate],
    selected: list[DefectCandidate],
    settings: DefectSettings,
    seed_tag: str = "",
) -> DefectPlan:
    """The plan of a chosen supercell: its perfect cell and each selected candidate placed in
    it with its start (:func:`place_defects`)."""
    perfect = make_supercell(host, choice)
    cells, starts = place_defects(label, host, choice, perfect, selected, settings, seed_tag)
    return DefectPlan(
        host=host,
        choice=choice,
        perfect=perfect,
        candidates=candidates,
        selected=selected,
        cells=cells,
        starts=starts,
    )


@job
def defect_calculations(
    label: str,
    bulk: CalculationDoc,
    reference_bulk: CalculationDoc,
    source: StructureSource,
    calculator: Calculator,
    settings: DefectSettings,
    is_reference: bool = False,
    given: Structure | None = None,
) -> Response:
    """Place every defect of the mobile species in one supercell of the relaxed host and
    replace this job by their calculations (vacancy names from ``given``, the structure as
    given: see :func:`plan_defects`)."""
    check_same_calculator([bulk.calculator, reference_bulk.calculator])
    mu = chemical_potential(reference_bulk.energy_eV, reference_bulk.natoms)
    plan = plan_defects(label, bulk.structure, settings, given)
    kinds = [c.kind for c in plan.selected]
    logger.info(
        "%s: %d vacancies and %d interstitial candidates in a %d-atom supercell "
        "(periodic images %.2f A apart)",
        label,
        kinds.count("vacancy"),
        kinds.count("interstitial"),
        plan.choice.natoms,
        plan.choice.min_image_distance_A,
    )
    if settings.screen_image_distance_A is not None:
        small_settings = small_cell_settings(settings)
        small = plan_defects(label, bulk.structure, small_settings, given)
        if small.choice.natoms < plan.choice.natoms:
            logger.info(
                "%s: every start in a %d-atom supercell first (images %.2f A apart)",
                label,
                small.choice.natoms,
                small.choice.min_image_distance_A,
            )
            perfect_job = calculation(
                calculator, "static", small.perfect, f"{label} perfect supercell (screen)"
            )
            jobs, outcomes, states = search_starts(
                label,
                small,
                perfect_job,
                mu,
                calculator,
                small_settings,
                " (screen)",
            )
            final = final_cell_defects(
                label,
                source,
                bulk,
                outcomes,
                [[tag for tag, _ in found] for found in states],
                [[outcome for _, outcome in found] for found in states],
                calculator,
                settings,
                mu,
                is_reference,
                given,
            )
            return Response(
                replace=Flow(
                    [perfect_job, *jobs, final], output=final.output, name=f"{label} defects"
                )
            )
    perfect_job = calculation(calculator, "static", plan.perfect, f"{label} perfect supercell")
    jobs, outcomes, _ = search_starts(label, plan, perfect_job, mu, calculator, settings)
    host_job = collect_host(
        label, source, bulk, plan.choice, perfect_job.output, outcomes, is_reference
    )
    return Response(
        replace=Flow(
            [perfect_job, *jobs, host_job], output=host_job.output, name=f"{label} defects"
        )
    )


def search_starts(
    label: str,
    plan: DefectPlan,
    perfect_job: Job,
    mu: float,
    calculator: Calculator,
    settings: DefectSettings,
    suffix: str = "",
    seed_tag: str = "",
) -> tuple[list, list, list]:
    """Every start of every selected defect of a plan relaxed and assessed: the jobs, each
    defect's lowest final state, and every start's final state (with its tag) per defect."""
    jobs, outcomes, states = [], [], []
    for index, (candidate, cell) in enumerate(zip(plan.selected, plan.cells, strict=True)):
        tagged = starts_of(
            label, candidate, cell, settings, settings.starts, seed_tag, host=plan.host
        )
        searched = []
        for number, (tag, start) in enumerate(tagged):
            name = f"{label} {candidate.name}{suffix}" + (f" [{tag}]" if number else "")
            made, outcome = _relax_and_assess(
                label, plan, index, start, name, perfect_job, mu, calculator, settings
            )
            jobs += made
            searched.append(outcome)
        states.append(list(zip([tag for tag, _ in tagged], searched, strict=True)))
        if len(tagged) == 1:
            outcomes.append(searched[0])
            continue
        lowest = lowest_start([tag for tag, _ in tagged], searched)
        jobs.append(lowest)
        outcomes.append(lowest.output)
    return jobs, outcomes, states


def _relax_and_assess(
    label: str,
    plan: DefectPlan,
    index: int,
    start: Structure,
    name: str,
    perfect_job: Job,
    mu: float,
    calculator: Calculator,
    settings: DefectSettings,
) -> tuple[list[Job], object]:
    """One start of a planned defect (``plan.selected[index]``) relaxed and assessed: the jobs,
    and the assessment's output."""
    candidate, cell = plan.selected[index], plan.cells[index]
    relax = calculation(calculator, "ion_relax", start, name)
    assess = assess_defect(
        label,
        plan.host,
        plan.choice,
        plan.candidates,
        candidate,
        cell,
        start,
        relax.output,
        perfect_job.output,
        mu,
        calculator,
        settings,
    )
    return [relax, assess], assess.output


def kept_for_final_cell(
    states: list[tuple[str, DefectOutcome]], keep: int, uncertainty_eV: float
) -> list[tuple[str, DefectOutcome]]:
    """Per kind, the ``keep`` lowest distinct final states of a small-cell screen (every start
    of every candidate; states within SAME_STATE_EV of each other are one, whichever start or
    candidate reached it) and every one within ``uncertainty_eV`` of the lowest: what is
    relaxed again in the final cell. A start's state that is not its candidate's lowest counts
    too: a state that the small cell holds as metastable can be the ground state of the large
    one (EMT Cu's <100> dumbbell: 5.052 eV against the octahedral site's 4.984 in 27 atoms,
    4.105 against 4.167 in 64)."""
    kept = []
    for kind in ("vacancy", "interstitial"):
        ordered = sorted(
            (state for state in states if state[1].kind == kind and not state[1].collapsed),
            key=lambda state: state[1].ranking_energy_eV,
        )
        distinct: list[tuple[str, DefectOutcome]] = []
        for state in ordered:
            if not distinct or (
                state[1].ranking_energy_eV - distinct[-1][1].ranking_energy_eV > SAME_STATE_EV
            ):
                distinct.append(state)
        if distinct:
            lowest = distinct[0][1].ranking_energy_eV
            kept += [
                state
                for rank, state in enumerate(distinct)
                if rank < keep or state[1].ranking_energy_eV - lowest <= uncertainty_eV
            ]
    return kept


@job
def final_cell_defects(
    label: str,
    source: StructureSource,
    bulk: CalculationDoc,
    screened: list[DefectOutcome],
    tags: list[list[str]],
    states: list[list[DefectOutcome]],
    calculator: Calculator,
    settings: DefectSettings,
    mu: float,
    is_reference: bool = False,
    given: Structure | None = None,
) -> Response:
    """After the small-cell screen: in the final supercell, every candidate's first start (the
    start of a single-start run: same structure, so a single-start store is reused) and the
    screen's lowest distinct states of each kind (:func:`kept_for_final_cell`), each from its
    small-cell geometry carried into the large cell
    (:func:`carrierflow.structures.embedding.embed_relaxation`); a candidate's outcome is the
    lowest of its relaxations there, with its small-cell search. The verdict uses these;
    ``screened`` (each candidate's lowest state in the small cell) is kept beside them.

    Why the first starts too: the small cell need not hold the large cell's states. Measured on
    Li-In with 7net-li-in (63-atom final cell, 27-atom screen): the single start relaxes Li5In4
    Li_i2 to 0.661 eV; in the screen cell that start ends in another state near 1.0 eV, so the
    kept states ended the search at 0.837 eV. With the first starts the search's lowest E_f can
    never be above a single-start run's."""
    small = plan_defects(label, bulk.structure, small_cell_settings(settings), given)
    plan = plan_defects(label, bulk.structure, settings, given)
    mark_shared_final_states(screened)
    everything = [
        (f"{outcome.name} {tag}", outcome)
        for names, outcomes in zip(tags, states, strict=True)
        for tag, outcome in zip(names, outcomes, strict=True)
    ]
    kept = kept_for_final_cell(everything, settings.keep, calculator.uncertainty_eV)
    logger.info(
        "%s: each candidate's first start and %d distinct states of the screen again in the "
        "%d-atom supercell: %s",
        label,
        len(kept),
        plan.choice.natoms,
        ", ".join(f"{tag} ({o.ranking_energy_eV:.3f} eV)" for tag, o in kept),
    )
    perfect_job = calculation(calculator, "static", plan.perfect, f"{label} perfect supercell")
    jobs, outcomes = [perfect_job], []
    for index, candidate in enumerate(plan.selected):
        name = candidate.name
        chosen = [(FIRST_START, plan.starts[index], f"{label} {name}")] + [
            (
                f"screen: {tag.removeprefix(name).strip()}",
                embed_relaxation(small.cells[index], state.structure, plan.cells[index]),
                f"{label} {name} [from {tag.removeprefix(name).strip()}]",
            )
            for tag, state in kept
            if state.name == name
        ]
        relaxed = []
        for _, start, job_name in chosen:
            made, outcome = _relax_and_assess(
                label, plan, index, start, job_name, perfect_job, mu, calculator, settings
            )
            jobs += made
            relaxed.append(outcome)
        carried = carry_search([origin for origin, _, _ in chosen], relaxed, screened[index])
        jobs.append(carried)
        outcomes.append(carried.output)
    host_job = collect_host(
        label,
        source,
        bulk,
        plan.choice,
        perfect_job.output,
        outcomes,
        is_reference,
        screened,
        small.choice,
    )
    jobs.append(host_job)
    return Response(replace=Flow(jobs, output=host_job.output, name=f"{label} final cell"))


# how the final cell names a candidate's first start among its relaxations there
FIRST_START = "first start"


@job
def carry_search(
    origins: list[str], relaxed: list[DefectOutcome], searched: DefectOutcome
) -> DefectOutcome:
    """A candidate's lowest state in the final cell (its first start and its small-cell states
    relaxed there, named by ``origins``), with the record of its small-cell search and which
    final-cell relaxation won."""
    best = min(range(len(relaxed)), key=lambda i: ranking_key(relaxed[i]))
    outcome = relaxed[best].model_copy(deep=True)
    if searched.search is not None:
        outcome.search = searched.search.model_copy(update={"final_cell_winner": origins[best]})
    return outcome


def _candidate_sites(
    host: Structure, choice: SupercellChoice, candidates: list[DefectCandidate], kind: str
) -> dict[str, np.ndarray]:
    return {
        c.name: positions_in_supercell(host, choice.matrix, c.equivalent_frac_coords)
        for c in candidates
        if c.kind == kind
    }


def far_field_radius(radius_A: float, choice: SupercellChoice) -> float:
    """The far-field radius, capped at half the periodic-image distance so that every
    supercell has a far field to watch and to hold."""
    return min(radius_A, 0.5 * choice.min_image_distance_A)


@job
def assess_defect(
    label: str,
    host: Structure,
    choice: SupercellChoice,
    candidates: list[DefectCandidate],
    candidate: DefectCandidate,
    cell: DefectCell,
    start: Structure,
    relaxed: CalculationDoc,
    perfect: CalculationDoc,
    mu: float,
    calculator: Calculator,
    settings: DefectSettings,
) -> DefectOutcome | Response:
    """Formation energy, geometry and flags of one relaxed defect; when the host reconstructed,
    relax it again with the far atoms held fixed."""
    check_same_calculator([relaxed.calculator, perfect.calculator])
    radius = far_field_radius(settings.reconstruction_radius_A, choice)
    e_f = formation_energy(relaxed.energy_eV, perfect.energy_eV, added_atoms(candidate.kind), mu)
    perfect_structure = perfect.structure
    geometry = relaxation_geometry(
        cell.structure,
        relaxed.structure,
        perfect_structure,
        candidate.kind,
        candidate.species,
        cell.site_cart,
        _candidate_sites(host, choice, candidates, candidate.kind),
        radius,
    )
    flags = []
    if not relaxed.converged:
        flags.append(
            Flag(code=FlagCode.NOT_CONVERGED, text=f"not converged in {relaxed.steps} steps")
        )
    if geometry.ended_at is None:
        flags.append(
            Flag(
                code=FlagCode.OFF_SITE,
                text="ended off every candidate site "
                f"(centre moved {geometry.defect_shift_A:.2f} A)",
            )
        )
    elif geometry.ended_at != candidate.name:
        verb = "vacancy refilled; vacancy now at" if candidate.kind == "vacancy" else "relaxed into"
        flags.append(Flag(code=FlagCode.CHANGED_SITE, text=f"{verb} {geometry.ended_at}"))
    ran_together = relaxed.stopped or collapse(relaxed.structure, perfect_structure)
    if ran_together:
        flags.append(Flag(code=FlagCode.COLLAPSED, text=ran_together))
    evidence = reconstruction_evidence(
        e_f,
        geometry.far_field_displacement_A,
        radius,
        settings.reconstruction_threshold_A,
        can_reorder=len(host.composition.elements) > 1,
    )
    if evidence:
        flags.append(
            Flag(
                code=FlagCode.HOST_RECONSTRUCTION,
                text="host reconstruction: " + "; ".join(evidence),
            )
        )
    outcome = DefectOutcome(
        host=label,
        name=candidate.name,
        kind=candidate.kind,
        species=candidate.species,
        frac_coords=candidate.frac_coords,
        multiplicity=candidate.multiplicity,
        energy_eV=relaxed.energy_eV,
        formation_energy_eV=e_f,
        converged=relaxed.converged,
        steps=relaxed.steps,
        max_displacement_A=geometry.max_displacement_A,
        far_field_displacement_A=geometry.far_field_displacement_A,
        defect_shift_A=geometry.defect_shift_A,
        ended_at=geometry.ended_at,
        flags=flags,
        provenance=relaxed.provenance(),
        structure=relaxed.structure,
    )
    if not settings.local_relaxation or not wants_local_relaxation(outcome):
        return outcome
    jobs, relaxed_locally = local_relaxation(
        label, outcome, cell, start, perfect, mu, calculator, radius
    )
    return Response(replace=Flow(jobs, output=relaxed_locally))


def wants_local_relaxation(outcome: DefectOutcome) -> bool:
    """A host reconstruction whose atoms did not run together, that has no relaxation with
    the far field held yet (:func:`local_relaxation`) and that was not found not to need one
    (:func:`carrierflow.workflows.refine.local_not_needed`)."""
    return (
        has(outcome.flags, FlagCode.HOST_RECONSTRUCTION)
        and not outcome.collapsed
        and outcome.local is None
        and not has(outcome.flags, FlagCode.LOCAL_NOT_NEEDED)
    )


def local_relaxation(
    label: str,
    outcome: DefectOutcome,
    cell: DefectCell,
    start: Structure,
    perfect: CalculationDoc,
    mu: float,
    calculator: Calculator,
    radius_A: float,
) -> tuple[list[Job], object]:
    """The relaxation of a reconstructed defect from its start with the atoms beyond
    ``radius_A`` held, attached to its outcome: the jobs, and the outcome's reference."""
    logger.warning(
        "%s %s: %s; relaxing again with atoms beyond %.3g A fixed",
        label,
        outcome.name,
        next(f.text for f in outcome.flags if f.code == FlagCode.HOST_RECONSTRUCTION),
        radius_A,
    )
    held = hold_far_atoms(start, cell.site_cart, radius_A)
    local = calculation(calculator, "ion_relax", held, f"{label} {outcome.name} (local)")
    attach = attach_local_relaxation(outcome, cell, local.output, perfect, mu, radius_A)
    return [local, attach], attach.output


def ranking_key(outcome: DefectOutcome) -> tuple[bool, float]:
    """How a defect's states rank: by energy, a relaxation whose atoms ran together last."""
    return outcome.collapsed, outcome.ranking_energy_eV


# starts that end within this of each other reached one final state
SAME_STATE_EV = 0.001


@job
def lowest_start(tags: list[str], outcomes: list[DefectOutcome]) -> DefectOutcome:
    """The lowest final state one defect's starts reached, with the record of the search: what
    each start reached, how many distinct states, the spread (the path dependence a single
    relaxation would have hidden) and the winner."""
    best = min(range(len(outcomes)), key=lambda i: ranking_key(outcomes[i]))
    # starts whose atoms ran together are no states: listed apart, never the spread
    states = [(t, o) for t, o in zip(tags, outcomes, strict=True) if not o.collapsed]
    energies = [o.ranking_energy_eV for _, o in states] or [outcomes[best].ranking_energy_eV]
    distinct = 1 + int(np.count_nonzero(np.diff(np.sort(energies)) > SAME_STATE_EV))
    winner = outcomes[best].model_copy(deep=True)
    winner.search = StartsSearch(
        starts=[t for t, _ in states],
        formation_energies_eV=[o.ranking_energy_eV for _, o in states],
        distinct_states=distinct if states else 0,
        spread_eV=float(max(energies) - min(energies)),
        winner=tags[best],
        collapsed=[t for t, o in zip(tags, outcomes, strict=True) if o.collapsed],
    )
    return winner


@job
def attach_local_relaxation(
    outcome: DefectOutcome,
    cell: DefectCell,
    local: CalculationDoc,
    perfect: CalculationDoc,
    mu: float,
    radius_A: float,
) -> DefectOutcome:
    """Add the far-field-fixed relaxation to a reconstructed defect; ranking then uses it."""
    moved = displacements(cell.structure, local.structure)
    outcome.local = LocalRelaxation(
        radius_A=radius_A,
        energy_eV=local.energy_eV,
        formation_energy_eV=formation_energy(
            local.energy_eV, perfect.energy_eV, added_atoms(outcome.kind), mu
        ),
        converged=local.converged,
        steps=local.steps,
        max_displacement_A=float(moved.max()),
        provenance=local.provenance(),
    )
    outcome.flags.append(
        Flag(
            code=FlagCode.LOCAL_RANKING,
            text=f"ranked with the local relaxation (atoms beyond {radius_A:.3g} A fixed)",
        )
    )
    return outcome


@job
def collect_host(
    label: str,
    source: StructureSource,
    bulk: CalculationDoc,
    choice: SupercellChoice,
    perfect: CalculationDoc,
    outcomes: list[DefectOutcome],
    is_reference: bool,
    screened: list[DefectOutcome] | None = None,
    screen_choice: SupercellChoice | None = None,
) -> HostOutcome:
    """Gather one host's defects (and a small-cell screen's, when there was one), refusing
    energies from different calculators."""
    check_same_calculator([bulk.calculator, perfect.calculator])
    mark_shared_final_states(outcomes)
    host = bulk.structure
    return HostOutcome(
        label=label,
        formula=host.composition.reduced_formula,
        is_reference=is_reference,
        source=source,
        bulk_energy_per_atom_eV=bulk.energy_eV / bulk.natoms,
        bulk_lattice_abc_A=list(host.lattice.abc),
        supercell=choice,
        perfect_energy_eV=perfect.energy_eV,
        defects=outcomes,
        screened=screened or [],
        screen_supercell=screen_choice,
        provenance={"bulk": bulk.provenance(), "perfect": perfect.provenance()},
    )


def check_same_calculator(descriptions: list[dict]) -> None:
    """Refuse energies of different calculators in one formation energy; a model file counts
    by its content (SHA-256), not the path it was read from."""
    keys = {
        json.dumps(
            by_content(
                {k: d.get(k) for k in ("name", "model", "model_sha256", "fmax_eV_A", "settings")}
            ),
            sort_keys=True,
        )
        for d in descriptions
    }
    if len(keys) > 1:
        raise ValueError(f"refusing to mix calculators in one formation energy: {sorted(keys)}")


@job
def summarize_results(
    system: str,
    calculator: dict,
    settings: DefectSettings,
    reference: HostOutcome,
    hosts: list[HostOutcome],
) -> Results:
    """The results document (results.json), stored with the flow."""
    results = summarize(
        system,
        settings.species,
        calculator,
        settings.temperature_K,
        settings.model_dump(),
        reference,
        hosts,
    )
    logger.info(
        "results ready: %s",
        ", ".join(f"{h.formula} {h.dominant_carrier}" for h in results.hosts),
    )
    return results
