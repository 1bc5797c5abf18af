"""Jobs of the transport step: hops of each phase's lowest vacancy and interstitial,
climbing-image NEB between relaxed endpoints, and the diffusion coefficient they imply."""

from __future__ import annotations

import logging

from ase.mep import NEB
from jobflow import Flow, Job, Response, job
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from carrierflow.analysis.documents import Results
from carrierflow.analysis.flags import Flag, FlagCode
from carrierflow.analysis.schemas import (
    CarrierTransport,
    DefectOutcome,
    HopOutcome,
    HostOutcome,
    PhaseTransport,
)
from carrierflow.analysis.transport import (
    barriers,
    carrier_transport,
    hop_counts,
    phase_transport,
    profile_flags,
)
from carrierflow.structures.defects import rattle_near
from carrierflow.structures.hops import (
    LOCALIZED_MOVE_A,
    Hop,
    find_hops,
    hop_end_state,
    moving_atom_and_end,
    symmetry_image_hops,
)
from carrierflow.structures.sources import StructureError
from carrierflow.workflows.calculators import Calculator
from carrierflow.workflows.engine import calculation
from carrierflow.workflows.jobs import DefectPlan, plan_defects
from carrierflow.workflows.schemas import (
    CalculationDoc,
    DefectSettings,
    MigrationSettings,
    PathDoc,
)

logger = logging.getLogger("carrierflow")

KINDS = ("vacancy", "interstitial")
# a moving atom that ends farther than this from its end site did not make the hop
END_SITE_TOLERANCE_A = 0.5


def hop_start(defects: list[DefectOutcome], kind: str) -> tuple[DefectOutcome | None, list[Flag]]:
    """The lowest defect of a kind whose relaxed state can start hops, and notes.

    The defect must not have reconstructed the host. A vacancy must have stayed on its own
    site (hops go from site to site); an interstitial that left its site (split or displaced)
    hops to the symmetry images of its relaxed state.
    """
    of_kind = sorted(
        (d for d in defects if d.kind == kind and not d.collapsed),
        key=lambda d: d.ranking_energy_eV,
    )
    usable = [
        d
        for d in of_kind
        if d.local is None
        and d.structure is not None
        and (kind == "interstitial" or d.ended_at == d.name)
    ]
    if not usable:
        stayed = "stayed on its site without reconstructing" if kind == "vacancy" else "kept"
        return None, [
            Flag(code=FlagCode.NO_HOPS, text=f"no {kind} {stayed} the host: no hops computed")
        ]
    notes = []
    if usable[0] is not of_kind[0]:
        notes.append(
            Flag(
                code=FlagCode.HOPS_FROM_ANOTHER,
                text=f"hops from {usable[0].name}: the lowest {kind} {of_kind[0].name} "
                + (
                    "left its site or reconstructed the host"
                    if kind == "vacancy"
                    else "reconstructed the host"
                ),
            )
        )
    if usable[0].ended_at != usable[0].name:
        notes.append(
            Flag(
                code=FlagCode.HOPS_FROM_RELAXED_STATE,
                text=f"{usable[0].name} left its site (split or displaced): hops to the "
                "symmetry images of its relaxed state",
            )
        )
    return usable[0], notes


@job
def migration_calculations(
    label: str,
    bulk: CalculationDoc,
    outcome: HostOutcome,
    calculator: Calculator,
    settings: DefectSettings,
    migration: MigrationSettings,
    given: Structure | None = None,
) -> Response:
    """Replace this job by the hops of the phase's lowest vacancy and interstitial: the end
    state of each hop relaxed, NEB between the two, and the phase's transport (the defects
    planned as the flow planned them: :func:`plan_defects`)."""
    plan = plan_defects(label, bulk.structure, settings, given)
    host = plan.host
    jobs: list[Job] = []
    starts, hop_outputs = [], []
    for kind in KINDS:
        defect, notes = hop_start(outcome.defects, kind)
        outputs = []
        if defect is not None:
            try:
                hop_jobs = carrier_hops(label, host, plan, defect, calculator, settings, migration)
            except StructureError as exc:
                notes.append(Flag(code=FlagCode.NO_HOPS, text=f"no hops: {exc}"))
                hop_jobs = []
            for one_hop in hop_jobs:
                jobs += one_hop
                outputs.append(one_hop[-1].output)
        starts.append(
            {
                "kind": kind,
                "defect": defect.name if defect else None,
                "formation_energy_eV": defect.ranking_energy_eV if defect else None,
                "flags": notes,
            }
        )
        hop_outputs.append(outputs)
    collect = collect_transport(
        label, starts, hop_outputs, settings.temperature_K, migration.attempt_frequency_Hz
    )
    jobs.append(collect)
    return Response(replace=Flow(jobs, output=collect.output, name=f"{label} migration"))


def carrier_hops(
    label: str,
    host: Structure,
    plan: DefectPlan,
    defect: DefectOutcome,
    calculator: Calculator,
    settings: DefectSettings,
    migration: MigrationSettings,
) -> list[list[Job]]:
    """The jobs of each symmetry-distinct hop of one relaxed defect: the hop's end state
    (relaxed after the moving atom is put on the end site; none for a hop to a symmetry image
    of a defect that left its site), interpolation, NEB, assessment (last)."""
    neb_makers = calculator.neb_makers(migration.fmax_eV_A, migration.max_steps)
    candidate = next(c for c in plan.candidates if c.name == defect.name)
    shape = (migration.shell_tolerance, migration.max_length_A)
    if defect.ended_at == defect.name:
        targets = [c for c in plan.candidates if c.kind == defect.kind]
        hops = find_hops(host, candidate, targets, *shape)[: migration.max_hops]
        ends = [_relaxed_end(label, host, plan, defect, hop, calculator, settings) for hop in hops]
    else:
        # to a symmetry image of the relaxed state: an end state of the same energy
        image_hops = symmetry_image_hops(plan.perfect, defect.structure, candidate, *shape)
        ends = [
            (hop, [], end, defect.energy_eV, {}) for hop, end in image_hops[: migration.max_hops]
        ]
    logger.info("%s: %d symmetry-distinct hops of %s", label, len(ends), defect.name)
    all_jobs = []
    for hop, end_jobs, end_state, end_energy, end_check in ends:
        images = neb_images(defect.structure, end_state, migration.images)
        path = calculation(
            calculator,
            "neb",
            images.output,
            f"{label} {hop.name} NEB",
            makers=neb_makers,
            endpoint_energies_eV=[defect.energy_eV, end_energy],
        )
        all_jobs.append([*end_jobs, images, path, assess_hop(hop, path.output, **end_check)])
    return all_jobs


def _relaxed_end(
    label: str,
    host: Structure,
    plan: DefectPlan,
    defect: DefectOutcome,
    hop: Hop,
    calculator: Calculator,
    settings: DefectSettings,
) -> tuple:
    """The end of a site-to-site hop: the relaxed start with the moving atom put on the end
    site, rattled and relaxed. Returns the hop, its jobs, the end state and energy, and what
    :func:`assess_hop` checks of it."""
    cell = plan.cells[[c.name for c in plan.selected].index(defect.name)]
    index, end_cart = moving_atom_and_end(cell, host, hop)
    start = rattle_near(
        hop_end_state(defect.structure, index, end_cart),
        end_cart,
        settings.rattle_radius_A,
        settings.rattle_amplitude_A,
        seed=f"{label}/{hop.name}",
    )
    end = calculation(calculator, "ion_relax", start, f"{label} {hop.name} end")
    check = {"end": end.output, "index": index, "end_site_cart": end_cart.tolist()}
    return hop, [end], end.output.structure, end.output.energy_eV, check


@job
def neb_images(start: Structure, end: Structure, images: int) -> list[Structure]:
    """The NEB band between two endpoints: IDPP interpolation (ASE), minimum-image moves."""
    band = [AseAtomsAdaptor.get_atoms(start)]
    band += [band[0].copy() for _ in range(images)]
    band.append(AseAtomsAdaptor.get_atoms(end))
    NEB(band).interpolate(method="idpp", mic=True)
    return [AseAtomsAdaptor.get_structure(atoms) for atoms in band]


@job
def assess_hop(
    hop: Hop,
    path: PathDoc,
    end: CalculationDoc | None = None,
    index: int | None = None,
    end_site_cart: list[float] | None = None,
) -> HopOutcome:
    """Barriers and flags of one hop and, for a relaxed end state, whether atom ``index``
    stayed at the end site when it relaxed."""
    energies = [e - path.energies_eV[0] for e in path.energies_eV]
    forward, reverse = barriers(energies)
    flags = []
    if end is not None:
        if not end.converged:
            flags.append(
                Flag(
                    code=FlagCode.END_NOT_CONVERGED,
                    text=f"end state not converged in {end.steps} steps",
                )
            )
        final = end.structure
        moved = final.lattice.get_distance_and_image(
            final[index].frac_coords, final.lattice.get_fractional_coords(end_site_cart)
        )[0]
        if moved > END_SITE_TOLERANCE_A:
            flags.append(
                Flag(
                    code=FlagCode.END_LEFT_SITE,
                    text=f"end state left its site: the moving atom relaxed {moved:.2f} A away "
                    "from it",
                )
            )
    if hop.largest_move_A is not None and hop.largest_move_A < LOCALIZED_MOVE_A:
        flags.append(
            Flag(
                code=FlagCode.DELOCALIZED,
                text=f"delocalized defect: no atom moves more than {hop.largest_move_A:.2f} A, "
                "the defect shifts (a crowdion gliding) and has no hop length in this supercell",
            )
        )
    if not path.converged:
        flags.append(Flag(code=FlagCode.NEB_NOT_CONVERGED, text="NEB not converged"))
    flags += profile_flags(energies, hop.symmetric)
    return HopOutcome(
        **hop.model_dump(include=set(HopOutcome.model_fields)),  # what the hop is
        energies_eV=energies,
        path_A=path.path_A,
        barrier_eV=forward,
        reverse_barrier_eV=reverse,
        converged=path.converged,
        counts=hop_counts(path.converged, flags),
        flags=flags,
        provenance={"neb": path.provenance()} | ({"end": end.provenance()} if end else {}),
    )


@job
def collect_transport(
    label: str,
    starts: list[dict],
    hops: list[list[HopOutcome]],
    temperature_K: float,
    attempt_frequency_Hz: float,
) -> PhaseTransport:
    """Activation energies, diffusion coefficients and the dominant carrier of one phase."""
    carriers: list[CarrierTransport] = [
        carrier_transport(
            start["kind"],
            start["defect"],
            start["formation_energy_eV"],
            hops_of_carrier,
            temperature_K,
            attempt_frequency_Hz,
            start["flags"],
        )
        for start, hops_of_carrier in zip(starts, hops, strict=True)
    ]
    transport = phase_transport(label, carriers, temperature_K, attempt_frequency_Hz)
    logger.info(
        "%s transport at %g K: %s (%s)",
        label,
        temperature_K,
        transport.dominant_transport_carrier,
        transport.reason,
    )
    return transport


@job
def add_transport(
    results: Results, transports: list[PhaseTransport], migration: MigrationSettings
) -> Results:
    """The results document with each phase's transport (reference first)."""
    reference, *hosts = transports
    results.migration = migration.model_dump()
    results.reference.transport = reference
    for block, transport in zip(results.hosts, hosts, strict=True):
        block.transport = transport
    return results
