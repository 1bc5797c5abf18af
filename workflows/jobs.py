"""Jobs: one calculation each, plus the jobs that place defects, assess them and summarise."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import re
import shutil
import sys
import time
import types
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from jobflow import CURRENT_JOB, Flow, Job, JobConfig, Maker, Response, job
from monty.json import jsanitize
from monty.os import cd
from pydantic import BaseModel, ConfigDict, Field
from pymatgen.core import Structure

from carrierflow.analysis.formation import added_atoms, chemical_potential, formation_energy
from carrierflow.analysis.relaxation import (
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
from carrierflow.structures.sources import StructureSource
from carrierflow.structures.supercells import SupercellChoice, choose_supercell, make_supercell
from carrierflow.structures.symmetry import symmetrize
from carrierflow.workflows.calculators import Calculator
from carrierflow.workflows.schemas import (
    CalculationDoc,
    CalculationFailure,
    DefectSettings,
    PathDoc,
    numbers_checksum,
)

logger = logging.getLogger("carrierflow")

# bump when a change makes stored calculations incomparable with new ones
CACHE_VERSION = 1

_SHARED_CALCULATORS: dict[str, object] = {}


# settings that say how or where a code runs, not what it computes
_RUN_ONLY_SETTINGS = ("name", "run_vasp_kwargs", "write_input_set_kwargs", "python", "cores")


def fingerprint(
    task: str,
    makers: list[Maker],
    structure: Structure | list[Structure],
    model_sha256: str | None = None,
) -> str:
    """Hash of everything that determines a calculation's result (of one structure, or of a
    path's images): the Makers' settings, the structure and, for a model file, its content
    (the Makers know only its path)."""
    settings = [
        {
            k: v
            for k, v in jsanitize(maker.as_dict(), strict=True).items()
            if k not in _RUN_ONLY_SETTINGS
        }
        for maker in makers
    ]
    # a one-Maker task hashes as before Makers came in lists, so stores stay valid
    payload = [
        CACHE_VERSION,
        task,
        settings[0] if len(settings) == 1 else settings,
        jsanitize(
            [s.as_dict() for s in structure]
            if isinstance(structure, list)
            else structure.as_dict(),
            strict=True,
        ),
    ]
    # appended only for model files, so that stored calculations of shipped models stay valid
    if model_sha256 is not None:
        payload.append({"model_sha256": model_sha256})
    payload = json.dumps(payload, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def load_calculator(maker: Maker):
    """The ASE calculator of a force-field Maker; a torch model runs deterministically.

    With 2 torch threads, SevenNet's forces and stress on one structure differed in the last
    float32 digits from call to call (the energy did not): the backward pass sums per-edge
    terms in parallel, in whatever order the threads finish. A cell relaxation of Li5In4 then
    ended at a = 4.789690 or 4.789696 A in two runs of one command. torch's deterministic
    algorithms remove it (same bits as 1 thread) at no measurable cost here (81 atoms, 0.77
    against 0.82 s per force call); ``warn_only`` keeps GPU kernels without a deterministic
    variant running.
    """
    calculator = maker._get_calculator()
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.use_deterministic_algorithms(True, warn_only=True)
    return calculator


def _share_calculator(maker: Maker) -> Maker:
    """Load each model once per process: Makers built from the same settings share it."""
    if not hasattr(maker, "_get_calculator"):
        return maker
    key = json.dumps(
        jsanitize(
            [
                type(maker).__name__,
                getattr(maker, "calculator_meta", None),
                maker.calculator_kwargs,
            ],
            strict=True,
        ),
        sort_keys=True,
    )
    if key not in _SHARED_CALCULATORS:
        _SHARED_CALCULATORS[key] = load_calculator(maker)
    maker._calculator = _SHARED_CALCULATORS[key]
    return maker


@contextmanager
def _progress(maker: Maker, label: str, every_s: float = 30.0):
    """Log the force calls of a long calculation every ``every_s`` seconds (NEB images run
    on copies of the calculator: they count too)."""
    calculator = getattr(maker, "_calculator", None)
    if calculator is None:
        yield
        return
    calls, last = 0, time.perf_counter()

    def calculate(self, atoms=None, *args, **kwargs):
        nonlocal calls, last
        type(self).calculate(self, atoms, *args, **kwargs)
        calls += 1
        if time.perf_counter() - last >= every_s and "forces" in self.results:
            forces = np.array(self.results["forces"], copy=True)
            for constraint in getattr(atoms, "constraints", []):
                constraint.adjust_forces(atoms, forces)
            logger.info(
                "%s: %d force calls, E = %.4f eV, largest force %.3f eV/A",
                label,
                calls,
                self.results.get("energy", float("nan")),
                float(np.linalg.norm(forces, axis=1).max()),
            )
            last = time.perf_counter()

    # a bound method: a deep copy of the calculator (one per NEB image) binds it to the copy
    calculator.calculate = types.MethodType(calculate, calculator)
    try:
        yield
    finally:
        del calculator.calculate


def _find_stored(fp: str) -> CalculationDoc | PathDoc | None:
    store = CURRENT_JOB.store
    if store is None:
        return None
    corrupt = None
    for found in store.query({"output.fingerprint": fp}, properties=["output"]):
        output = {k: v for k, v in found["output"].items() if not k.startswith("@")}
        document = PathDoc if output.get("task") == "neb" else CalculationDoc
        stored = document.model_validate({**output, "reused": True})
        # a stored number changed after it was written (one byte of an energy gave a wrong E_f
        # silently): never reuse it
        if stored.checksum is None or stored.checksum == numbers_checksum(stored.reused_numbers()):
            return stored
        corrupt = stored
    if corrupt is not None:
        logger.warning(
            "%s: the stored result fails its checksum (changed after it was written); "
            "computing it again",
            corrupt.label,
        )
    return None


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_")


def _run_steps(
    makers: list[Maker],
    structure: Structure | list[Structure],
    label: str,
    directory: Path | None,
) -> list:
    """Run the Makers in order, each from the previous final structure; codes that write
    files run in one folder per step, later steps see the previous folder as ``prev_dir``."""
    outputs, prev_dir = [], None
    for number, maker in enumerate(makers, start=1):
        # atomate2's Makers keep state of the run (input generator, from_prev): run a copy, so
        # that Makers shared between jobs keep fingerprinting the same
        maker = _share_calculator(copy.deepcopy(maker))
        if directory is None:
            with _progress(maker, label):
                result = type(maker).make.original(maker, structure)
        else:
            step_dir = directory / f"{number}-{slug(maker.name)}"
            if step_dir.exists() and not getattr(maker, "resumable", False):
                shutil.rmtree(step_dir)
            step_dir.mkdir(parents=True, exist_ok=True)
            logger.info("%s: %s in %s", label, maker.name, step_dir)
            with cd(step_dir):
                result = type(maker).make.original(maker, structure, prev_dir=prev_dir)
            prev_dir = str(step_dir)
        task_doc = result.output if isinstance(result, Response) else result
        outputs.append(task_doc)
        if isinstance(structure, Structure):
            structure = task_doc.output.structure
    return outputs


def _code_record(task_docs: list) -> dict:
    """What the code itself reports: versions, inputs and task directories (DFT codes)."""
    records = []
    for task_doc in task_docs:
        if hasattr(task_doc, "record"):
            records.append(task_doc.record)
            continue
        # a VASP TaskDoc, or the NebIntermediateImagesDoc of a VASP NEB
        calcs = getattr(task_doc, "calcs_reversed", None) or getattr(task_doc, "calculations", None)
        calc = (calcs or [None])[0]
        if calc is None or not hasattr(calc, "vasp_version"):
            continue
        inputs = getattr(task_doc, "input", None) or task_doc.inputs
        records.append(
            {
                "task_label": task_doc.task_label,
                "directory": task_doc.dir_name,
                "code_version": calc.vasp_version,
                "incar": dict(inputs.incar or {}),
                "kpoints": list(inputs.kpoints.kpts[0]) if inputs.kpoints else None,
                "potcars": [p.titel for p in getattr(inputs, "potcar_spec", None) or []],
                "state": str(task_doc.state),
                "custodian_corrections": sum(len(c.corrections) for c in task_doc.custodian or []),
            }
        )
    return {"runs": records} if records else {}


@job(config=JobConfig(expose_store=True))
def calculate(
    makers: list[Maker],
    structure: Structure | list[Structure],
    task: str,
    label: str,
    calculator: Calculator,
    endpoint_energies_eV: list[float] | None = None,
) -> CalculationDoc | PathDoc | Response:
    """Run one flow role's atomate2 Makers on a structure (on a path's images for ``neb``), or
    reuse the stored result of the same inputs. A failed calculation is stored as a
    :class:`CalculationFailure` and stops only the jobs that need it; under jobflow-remote it
    fails the job instead. ``endpoint_energies_eV`` completes a path whose code computes the
    intermediate images only (VASP)."""
    fp = fingerprint(task, makers, structure, calculator.model_sha256)
    stored = _find_stored(fp)
    if stored is not None:
        energy = stored.energy_eV if isinstance(stored, CalculationDoc) else stored.energies_eV[0]
        logger.info("%s: reused from the store (%s, E = %.4f eV)", label, task, energy)
        return stored
    what = {
        "bulk_relax": "cell + ions relaxation",
        "ion_relax": "ionic relaxation",
        "static": "single point",
        "neb": "climbing-image NEB",
    }[task]
    size = (
        f"{len(structure)} images of {len(structure[0])} atoms"
        if isinstance(structure, list)
        else f"{len(structure)} atoms"
    )
    logger.info("%s: %s of %s ...", label, what, size)
    described = calculator.describe()
    directory = (
        Path(calculator.workdir).resolve() / f"{slug(label)}-{task}-{fp[:8]}"
        if calculator.writes_files
        else None
    )
    started = time.perf_counter()
    try:
        task_docs = _run_steps(makers, structure, label, directory)
    except Exception as exc:
        if _queue_tracks_failures():
            raise
        failure = CalculationFailure(
            task=task,
            label=label,
            calculator=described,
            error=_failure_reason(exc, directory),
            directory=str(directory) if directory else None,
        )
        logger.error("%s: %s FAILED: %s", label, what, failure.error)
        logger.debug("traceback of the failure", exc_info=True)
        return Response(output=failure, stop_children=True)
    elapsed = time.perf_counter() - started
    if task == "neb":
        return _path_document(
            task_docs[-1], structure, endpoint_energies_eV, fp, label, described, elapsed
        )
    last = task_docs[-1]
    output = last.output
    forces = getattr(output, "forces", None)
    max_force = float(np.linalg.norm(np.array(forces), axis=1).max()) if forces else None
    final = output.structure
    doc = CalculationDoc(
        fingerprint=fp,
        task=task,
        label=label,
        calculator=described,
        energy_eV=float(output.energy),
        natoms=len(final),
        formula=final.composition.reduced_formula,
        structure=final,
        steps=sum(_ionic_steps(d) for d in task_docs),
        converged=task == "static" or all(_converged(d) for d in task_docs),
        max_force_eV_A=max_force,
        elapsed_s=elapsed,
        job_uuid=CURRENT_JOB.job.uuid if CURRENT_JOB.job else None,
        code=_code_record(task_docs),
    )
    doc.checksum = numbers_checksum(doc.reused_numbers())
    logger.info(
        "%s: E = %.4f eV, %d steps%s, %.1f s",
        label,
        doc.energy_eV,
        doc.steps,
        "" if doc.converged else " (NOT converged)",
        elapsed,
    )
    return doc


def _path_document(
    result,
    band: list[Structure],
    endpoint_energies_eV: list[float] | None,
    fp: str,
    label: str,
    described: dict,
    elapsed: float,
) -> PathDoc:
    """A NEB run (atomate2's NebResult, or the NebIntermediateImagesDoc of VASP, which has the
    intermediate images only) as a :class:`PathDoc` of the whole band."""
    images, energies = list(result.images), [float(e) for e in result.energies]
    if len(images) == len(band) - 2:
        if endpoint_energies_eV is None:
            raise ValueError(f"{label}: the NEB has no endpoint energies to complete the path")
        images = [band[0], *images, band[-1]]
        energies = [endpoint_energies_eV[0], *energies, endpoint_energies_eV[1]]
    steps = [0.0]
    for before, after in itertools.pairwise(images):
        steps.append(steps[-1] + float(np.sqrt((displacements(before, after) ** 2).sum())))
    doc = PathDoc(
        fingerprint=fp,
        label=label,
        calculator=described,
        energies_eV=energies,
        path_A=steps,
        images=images,
        converged=str(result.state) == "successful",
        elapsed_s=elapsed,
        job_uuid=CURRENT_JOB.job.uuid if CURRENT_JOB.job else None,
        code=_code_record([result]),
    )
    doc.checksum = numbers_checksum(doc.reused_numbers())
    barrier = max(doc.energies_eV) - doc.energies_eV[0]
    logger.info(
        "%s: highest image %.3f eV above the start%s, %.1f s",
        label,
        barrier,
        "" if doc.converged else " (NOT converged)",
        elapsed,
    )
    return doc


def calculation(
    calculator: Calculator,
    task: str,
    structure: Structure | list[Structure],
    label: str,
    makers: list[Maker] | None = None,
    endpoint_energies_eV: list[float] | None = None,
) -> Job:
    """The job that runs ``calculator``'s Makers of ``task`` (or the ``makers`` given) on a
    structure, named after its label (the name a queue shows: ``Cu3Au_v_Cu_1``)."""
    makers = makers if makers is not None else calculator.makers(task)
    job = calculate(makers, structure, task, label, calculator, endpoint_energies_eV)
    job.name = slug(label)
    return job


def _queue_tracks_failures() -> bool:
    """Whether this job runs under jobflow-remote: there a failed calculation fails its job, so
    that the queue shows it (``jf job list``) and ``jf job rerun`` retries it."""
    run = sys.modules.get("jobflow_remote.jobs.run")
    return run is not None and run.CURRENT_JOBDOC.job_doc is not None


def _ionic_steps(task_doc) -> int:
    n_steps = getattr(task_doc.output, "n_steps", None)
    if n_steps is not None:
        return int(n_steps) or 1
    calcs = getattr(task_doc, "calcs_reversed", None) or []
    return sum(len(c.output.ionic_steps or []) for c in calcs) or 1


def _converged(task_doc) -> bool:
    if hasattr(task_doc, "is_force_converged"):
        return bool(task_doc.is_force_converged)
    return str(task_doc.state) == "successful"


def _failure_reason(exc: Exception, directory: Path | None) -> str:
    """One line: the exception, and the last line of the code's error output if it wrote one."""
    reason = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    reason = f"{type(exc).__name__}: {reason}"[:400]
    if directory is not None:
        logs = sorted(directory.glob("*/std_err.txt"), key=lambda p: p.stat().st_mtime)
        tail = logs[-1].read_text(errors="replace").strip().splitlines() if logs else []
        if tail:
            reason += f" (stderr: {tail[-1].strip()[:200]})"
    return reason


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
) -> list[tuple[str, Structure]]:
    """The tagged, reproducible starts of one defect (the first is a single-start run's)."""
    return defect_starts(
        cell,
        f"{label}/{candidate.name}{seed_tag}",
        count,
        settings.rattle_radius_A,
        settings.rattle_amplitude_A,
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
    perfect = make_supercell(host, choice)
    candidates = find_defects(
        host, settings.species, settings.interstitial_min_distance_A, given=given
    )
    selected = [c for c in candidates if c.kind in settings.defect_kinds]
    cells, starts = place_defects(label, host, choice, perfect, selected, settings)
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
    host = plan.host
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
    perfect_job = calculation(calculator, "static", plan.perfect, f"{label} perfect supercell")
    jobs = [perfect_job]
    outcomes = []
    for candidate, cell in zip(plan.selected, plan.cells, strict=True):
        tagged = starts_of(label, candidate, cell, settings, settings.starts)
        searched = []
        for number, (tag, start) in enumerate(tagged):
            name = f"{label} {candidate.name}" + (f" [{tag}]" if number else "")
            relax = calculation(calculator, "ion_relax", start, name)
            assess = assess_defect(
                label,
                host,
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
            jobs += [relax, assess]
            searched.append(assess.output)
        if len(tagged) == 1:
            outcomes.append(searched[0])
            continue
        lowest = lowest_start([tag for tag, _ in tagged], searched)
        jobs.append(lowest)
        outcomes.append(lowest.output)
    host_job = collect_host(
        label, source, bulk, plan.choice, perfect_job.output, outcomes, is_reference
    )
    jobs.append(host_job)
    return Response(replace=Flow(jobs, output=host_job.output, name=f"{label} defects"))


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
        flags.append(f"not converged in {relaxed.steps} steps")
    if geometry.ended_at is None:
        flags.append(
            f"ended off every candidate site (centre moved {geometry.defect_shift_A:.2f} A)"
        )
    elif geometry.ended_at != candidate.name:
        verb = "vacancy refilled; vacancy now at" if candidate.kind == "vacancy" else "relaxed into"
        flags.append(f"{verb} {geometry.ended_at}")
    evidence = reconstruction_evidence(
        e_f,
        geometry.far_field_displacement_A,
        radius,
        settings.reconstruction_threshold_A,
        can_reorder=len(host.composition.elements) > 1,
    )
    if evidence:
        flags.append("host reconstruction: " + "; ".join(evidence))
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
    if not evidence or not settings.local_relaxation:
        return outcome
    logger.warning(
        "%s %s: host reconstruction (%s); relaxing again with atoms beyond %.3g A fixed",
        label,
        candidate.name,
        "; ".join(evidence),
        radius,
    )
    held = hold_far_atoms(start, cell.site_cart, radius)
    local = calculation(calculator, "ion_relax", held, f"{label} {candidate.name} (local)")
    attach = attach_local_relaxation(outcome, cell, local.output, perfect, mu, radius)
    return Response(replace=Flow([local, attach], output=attach.output))


# starts that end within this of each other reached one final state
SAME_STATE_EV = 0.001


@job
def lowest_start(tags: list[str], outcomes: list[DefectOutcome]) -> DefectOutcome:
    """The lowest final state one defect's starts reached, with the record of the search: what
    each start reached, how many distinct states, the spread (the path dependence a single
    relaxation would have hidden) and the winner."""
    energies = [o.ranking_energy_eV for o in outcomes]
    best = int(np.argmin(energies))
    distinct = 1 + int(np.count_nonzero(np.diff(np.sort(energies)) > SAME_STATE_EV))
    winner = outcomes[best].model_copy(deep=True)
    winner.search = StartsSearch(
        starts=tags,
        formation_energies_eV=energies,
        distinct_states=distinct,
        spread_eV=float(max(energies) - min(energies)),
        winner=tags[best],
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
    outcome.flags.append(f"ranked with the local relaxation (atoms beyond {radius_A:.3g} A fixed)")
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
) -> HostOutcome:
    """Gather one host's defects, refusing energies from different calculators."""
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
        provenance={"bulk": bulk.provenance(), "perfect": perfect.provenance()},
    )


def check_same_calculator(descriptions: list[dict]) -> None:
    keys = {
        json.dumps(
            {k: d.get(k) for k in ("name", "model", "model_sha256", "fmax_eV_A", "settings")},
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
) -> dict:
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
        ", ".join(f"{h['formula']} {h['dominant_carrier']}" for h in results["hosts"]),
    )
    return results
