"""Refinement: the stand-in's lowest defects of each phase recomputed with DFT.

Per phase, in a DFT-sized supercell of the DFT-relaxed bulk: the perfect supercell with DFT and
with the stand-in, every candidate relaxed by the stand-in there (:func:`screen_in_dft_cell`),
and for the lowest of the screen and the lowest of those (:func:`refinement_choice`) a DFT
relaxation from the stand-in's geometry. The verdict then comes from DFT; the stand-in's E_f in
the same cell shows its error.
"""

from __future__ import annotations

import logging

from jobflow import Flow, Response, job
from pymatgen.core import Structure

from carrierflow.analysis.documents import RefinedFrom, Results, verdicts
from carrierflow.analysis.flags import Flag, FlagCode, has
from carrierflow.analysis.formation import added_atoms, chemical_potential, formation_energy
from carrierflow.analysis.relaxation import mark_shared_final_states
from carrierflow.analysis.schemas import DefectOutcome, HostOutcome, ScreenComparison
from carrierflow.structures.defects import (
    DefectCandidate,
    DefectCell,
    find_vacancies,
    interstitial_at,
)
from carrierflow.structures.sources import StructureError, StructureSource
from carrierflow.structures.supercells import choose_supercell
from carrierflow.structures.symmetry import symmetrize
from carrierflow.workflows.calculators import Calculator
from carrierflow.workflows.engine import calculation
from carrierflow.workflows.jobs import (
    SAME_STATE_EV,
    DefectPlan,
    assess_defect,
    check_same_calculator,
    collect_host,
    far_field_radius,
    local_relaxation,
    placed_plan,
    ranking_key,
    search_starts,
    wants_local_relaxation,
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


# which ranking put a defect among those DFT refines (ScreenComparison.chosen_by)
BY_SCREEN, BY_DFT_CELL = "screen", "dft_cell"

# The rule of refinement_choice, part of every refining run's identity: a finished run's results
# are never served to a run that would refine other defects (the calculations both need are
# reused all the same). Until 2026-12-05 DFT refined the screen's lowest only.
REFINEMENT_CHOICE = f"{BY_SCREEN}+{BY_DFT_CELL}"


def refinement_choice(
    screened: list[DefectOutcome], in_dft_cell: list[DefectOutcome], k: int
) -> dict[str, list[str]]:
    """What DFT refines in one phase: the ``k`` lowest vacancies and interstitials of the
    screen, and those of the stand-in's own relaxations of every candidate in the DFT cell,
    each name with the rankings that chose it (screen's first). A DFT-cell choice that relaxed
    there into the state of a screen's choice (within SAME_STATE_EV) is that one.

    Why both: DFT's verdict is in the DFT cell, and a small cell can reorder near-degenerate
    sites. Measured on Li-In (the README's loop, 2026-12-04): the shipped 7net-li-in's 63-atom
    screen put Li5In4 Li_i1 lowest, 64 meV below Li_i5; in DFT's 27-atom cell the same model puts
    Li_i5 123 meV below Li_i1, and GPAW there found Li_i5 at 0.936 eV, Li_i1 at 1.171. The loop
    refined Li_i1 only and reported a margin 0.24 eV too large."""
    chosen: dict[str, list[str]] = {d.name: [BY_SCREEN] for d in lowest_defects(screened, k)}
    in_cell = {d.name: d for d in in_dft_cell}
    for defect in lowest_defects(in_dft_cell, k):
        same = [
            name
            for name in chosen
            if name in in_cell
            and name != defect.name
            and in_cell[name].kind == defect.kind
            and abs(in_cell[name].ranking_energy_eV - defect.ranking_energy_eV) < SAME_STATE_EV
        ]
        # a screen's choice that relaxed into this state in the DFT cell is this one
        chosen.setdefault(same[0] if same else defect.name, []).append(BY_DFT_CELL)
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
def screen_in_dft_cell(
    label: str,
    bulk: CalculationDoc,
    screen_reference_bulk: CalculationDoc,
    screen: HostOutcome,
    screen_calculator: Calculator,
    settings: DefectSettings,
    refine: RefineSettings,
    given: Structure | None = None,
) -> Response:
    """Every screened candidate of one phase relaxed by the stand-in in the DFT cell (with
    ``--starts``, searched there: the lowest state of each) and assessed against the stand-in's
    perfect DFT cell: what :func:`refinement_choice` ranks, and where each DFT relaxation starts.

    Why every candidate: the stand-in's relaxations in a 27-31-atom cell take 5-45 s each on 2
    cores (Li-In, 7net-li-in), a DFT relaxation there 5-30 min; ranking the candidates in the
    cell DFT computes costs about as much as one DFT ionic step."""
    screen_mu = chemical_potential(screen_reference_bulk.energy_eV, screen_reference_bulk.natoms)
    plan = dft_plan(label, bulk, screen, {d.name for d in screen.defects}, settings, refine, given)
    perfect = calculation(
        screen_calculator, "static", plan.perfect, f"{label} perfect supercell [DFT cell]"
    )
    # seeded apart from the screen's starts ("/dft"), as the refinement's have always been
    made, outcomes, _ = search_starts(
        label, plan, perfect, screen_mu, screen_calculator, settings, " [DFT cell]", "/dft"
    )
    ranked = rank_in_dft_cell(label, outcomes)
    return Response(replace=Flow([perfect, *made, ranked], output=ranked.output))


@job
def rank_in_dft_cell(label: str, outcomes: list[DefectOutcome]) -> list[DefectOutcome]:
    """The stand-in's DFT-cell outcomes of one phase, candidates that relaxed into an earlier
    one's state flagged (as a screen's are), logged lowest first."""
    mark_shared_final_states(outcomes)
    ordered = sorted(outcomes, key=ranking_key)
    logger.info(
        "%s in the DFT cell (stand-in): %s",
        label,
        ", ".join(f"{d.name} {d.ranking_energy_eV:.3f}" for d in ordered),
    )
    return outcomes


@job
def refine_defects(
    label: str,
    bulk: CalculationDoc,
    reference_bulk: CalculationDoc,
    screen_reference_bulk: CalculationDoc,
    screen: HostOutcome,
    in_dft_cell: list[DefectOutcome],
    source: StructureSource,
    screen_calculator: Calculator,
    calculator: Calculator,
    settings: DefectSettings,
    refine: RefineSettings,
    is_reference: bool = False,
    given: Structure | None = None,
    names: list[str] | None = None,
    earlier: list[DefectOutcome] | None = None,
) -> Response:
    """Recompute with DFT what :func:`refinement_choice` takes of one phase (or of it the
    defects ``names``: a learning round refines only what it has not refined yet, ``earlier``
    its earlier DFT defects, same cell: their E_f rank a reconstruction too), each from
    the stand-in's lowest state in the DFT cell (``in_dft_cell``: :func:`screen_in_dft_cell`),
    and replace this job by the calculations (choices made on the symmetrized host, as the
    screen's: :func:`carrierflow.workflows.jobs.plan_defects`)."""
    check_same_calculator([bulk.calculator, reference_bulk.calculator])
    mu = chemical_potential(reference_bulk.energy_eV, reference_bulk.natoms)
    screen_mu = chemical_potential(screen_reference_bulk.energy_eV, screen_reference_bulk.natoms)
    choice = refinement_choice(screen.defects, in_dft_cell, refine.k)
    if names is not None:
        choice = {name: choice.get(name, []) for name in names}
    plan = dft_plan(label, bulk, screen, set(choice), settings, refine, given)
    logger.info(
        "%s: refining %s with %s in a %d-atom supercell (images %.2f A apart)",
        label,
        ", ".join(f"{name} ({' and '.join(why)})" if why else name for name, why in choice.items()),
        calculator.label,
        plan.choice.natoms,
        plan.choice.min_image_distance_A,
    )
    dft_perfect = calculation(
        calculator, "static", plan.perfect, f"{label} perfect supercell [DFT]"
    )
    # the stand-in's perfect DFT cell again: the one screen_in_dft_cell computed, reused
    screen_perfect = calculation(
        screen_calculator, "static", plan.perfect, f"{label} perfect supercell [DFT cell]"
    )
    jobs = [dft_perfect, screen_perfect]
    stand_in = {d.name: d for d in in_dft_cell}
    # every DFT relaxation free first; then a local one only where it can change the verdict
    free = settings.model_copy(update={"local_relaxation": False})
    assessed = []
    for candidate, cell in zip(plan.selected, plan.cells, strict=True):
        start = stand_in[candidate.name]
        relax = calculation(
            calculator,
            "ion_relax",
            start.structure,
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
            start.structure,
            relax.output,
            dft_perfect.output,
            mu,
            calculator,
            free,
        )
        jobs += [relax, assess]
        assessed.append(assess.output)
    local = local_where_it_counts(
        label,
        plan.cells,
        [stand_in[c.name].structure for c in plan.selected],
        assessed,
        dft_perfect.output,
        mu,
        calculator,
        settings,
        far_field_radius(settings.reconstruction_radius_A, plan.choice),
        earlier or [],
    )
    jobs.append(local)
    outcomes = []
    for index, candidate in enumerate(plan.selected):
        compare = compare_with_screen(
            local.output[index],
            stand_in[candidate.name],
            screen_perfect.output,
            screen_mu,
            next(d for d in screen.defects if d.name == candidate.name),
            choice[candidate.name],
        )
        jobs.append(compare)
        outcomes.append(compare.output)
    host_job = collect_host(
        label, source, bulk, plan.choice, dft_perfect.output, outcomes, is_reference
    )
    jobs.append(host_job)
    return Response(replace=Flow(jobs, output=host_job.output, name=f"{label} refinement"))


def final_states(
    outcomes: list[DefectOutcome], earlier: list[DefectOutcome] = ()
) -> list[DefectOutcome]:
    """The defects, of this phase's DFT and of ``earlier`` ones, whose E_f is final: no local
    relaxation still to come, and atoms that did not run together."""
    return [o for o in [*earlier, *outcomes] if not wants_local_relaxation(o) and not o.collapsed]


def local_not_needed(
    outcomes: list[DefectOutcome], margin_eV: float, earlier: list[DefectOutcome] = ()
) -> dict[str, str]:
    """The host reconstructions among one phase's DFT defects whose relaxation with the far field
    held cannot change the verdict, each with the sentence its flag says: its free relaxation
    already lies more than ``margin_eV`` above the lowest final E_f of its kind (a defect that
    needs no local relaxation). Why that suffices: the local relaxation starts where the free
    one did with atoms held, and ended higher in every GPAW case of fixtures/dft (Li3In2 Li_i2
    +0.007, Li5In4 Li_i2 +0.03, Li_i1 +0.08, Li3In2 Li_i3 +0.15 to +0.16, Li_i1 +0.08 eV), so
    such a defect cannot become its kind's lowest; the margin covers a local relaxation that
    ends lower. A DFT local relaxation costs 20-25 min of GPAW on 2 cores (Li-In, fast
    preset), paid until 2026-12-05 for reconstructions already outranked (the 7net-0 loop's
    Li5In4 Li_i1, 0.44 eV above Li_i3). ``earlier``: final DFT defects of the same cell from
    before (a learning round's earlier refinements)."""
    final = final_states(outcomes, earlier)
    skipped = {}
    for outcome in filter(wants_local_relaxation, outcomes):
        rivals = [o for o in final if o.kind == outcome.kind]
        if not rivals:
            continue
        lowest = min(rivals, key=lambda o: o.ranking_energy_eV)
        gap = outcome.formation_energy_eV - lowest.ranking_energy_eV
        if gap > margin_eV:
            skipped[outcome.name] = (
                f"no local relaxation: its free relaxation already lies {gap:.2f} eV above "
                f"{lowest.name} (more than the {margin_eV:g} eV uncertainty; holding the far "
                "field has raised every one measured)"
            )
    return skipped


def relax_locally_first(
    outcomes: list[DefectOutcome], earlier: list[DefectOutcome] = ()
) -> list[str]:
    """Of one phase's reconstructions still to be relaxed with the far field held, those to
    relax now: each whose kind has a final E_f to be judged against (:func:`local_not_needed`
    kept it, so it may win), and of a kind with none, only its lowest. The others wait for it:
    once it has its local E_f, :func:`local_not_needed` judges them against that, and one
    that already lies above it by the margin is spared (the 7net-0 loop's Li3In2, 2026-12-05:
    Li_i1 and Li_i3 both reconstructed, Li_i3's free relaxation 0.27 eV above Li_i1's, whose
    local relaxation then rose 0.08 eV; Li_i3's 25 min of GPAW went for nothing)."""
    final = {o.kind for o in final_states(outcomes, earlier)}
    waiting = [o for o in outcomes if wants_local_relaxation(o)]
    now = [o.name for o in waiting if o.kind in final]
    for kind in dict.fromkeys(o.kind for o in waiting if o.kind not in final):
        lowest = min((o for o in waiting if o.kind == kind), key=lambda o: o.formation_energy_eV)
        now.append(lowest.name)
    return now


@job
def local_where_it_counts(
    label: str,
    cells: list[DefectCell],
    starts: list[Structure],
    outcomes: list[DefectOutcome],
    perfect: CalculationDoc,
    mu: float,
    calculator: Calculator,
    settings: DefectSettings,
    radius_A: float,
    earlier: list[DefectOutcome] = (),
) -> list[DefectOutcome] | Response:
    """One phase's DFT defects, each reconstructed one relaxed again with the far field held
    (:func:`carrierflow.workflows.jobs.local_relaxation`) unless :func:`local_not_needed`; in
    the order given. Those that wait (:func:`relax_locally_first`) are judged by this job
    again once the first are relaxed."""
    if not settings.local_relaxation:
        return outcomes
    skipped = local_not_needed(outcomes, calculator.uncertainty_eV, earlier)
    for outcome in outcomes:
        if outcome.name in skipped:
            logger.info("%s %s: %s", label, outcome.name, skipped[outcome.name])
            outcome.flags.append(Flag(code=FlagCode.LOCAL_NOT_NEEDED, text=skipped[outcome.name]))
    now = relax_locally_first(outcomes, earlier)
    jobs, out = [], []
    for outcome, cell, start in zip(outcomes, cells, starts, strict=True):
        if outcome.name in now:
            made, relaxed = local_relaxation(
                label, outcome, cell, start, perfect, mu, calculator, radius_A
            )
            jobs += made
            out.append(relaxed)
        else:
            out.append(outcome)
    if not jobs:
        return out
    if any(wants_local_relaxation(o) and o.name not in now for o in outcomes):
        judge = local_where_it_counts(
            label, cells, starts, out, perfect, mu, calculator, settings, radius_A, earlier
        )
        return Response(replace=Flow([*jobs, judge], output=judge.output))
    return Response(replace=Flow(jobs, output=out))


@job
def compare_with_screen(
    outcome: DefectOutcome,
    screen_relaxed: DefectOutcome,
    screen_perfect: CalculationDoc,
    screen_mu: float,
    screened: DefectOutcome,
    chosen_by: list[str] | None = None,
) -> DefectOutcome:
    """Put the stand-in's E_f of the same defect in the same cell beside the DFT one (its
    relaxation there, or the lowest state of its search there, from :func:`screen_in_dft_cell`,
    assessed on ``screen_perfect``), with the rankings that chose it for DFT."""
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
        search=screen_relaxed.search,
        chosen_by=chosen_by or [],
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
