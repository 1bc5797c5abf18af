"""The calculation engine: one calculation per job, fingerprinted, reused from the store when it
was done before (and its numbers pass their checksum), its failures recorded, its progress shown."""

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
from contextlib import chdir, contextmanager
from pathlib import Path

import numpy as np
from ase.neighborlist import neighbor_list
from jobflow import CURRENT_JOB, Job, JobConfig, Maker, Response, job
from monty.json import jsanitize
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from carrierflow.analysis.relaxation import STOP_FRACTION, displacements
from carrierflow.workflows.calculators import Calculator, by_content
from carrierflow.workflows.claims import claimed
from carrierflow.workflows.dataset import CALCULATION_FILE
from carrierflow.workflows.processes import children_ended
from carrierflow.workflows.schemas import (
    CalculationDoc,
    CalculationFailure,
    PathDoc,
    numbers_checksum,
)

logger = logging.getLogger("carrierflow")

# bump when a change makes stored calculations incomparable with new ones
CACHE_VERSION = 1

_SHARED_CALCULATORS: dict[str, object] = {}


# settings that say how or where a code runs, not what it computes (``resume_from``: where a
# relaxation starts its path, within SAME_START_A of its input; the result is still computed)
_RUN_ONLY_SETTINGS = (
    "name",
    "run_vasp_kwargs",
    "write_input_set_kwargs",
    "python",
    "cores",
    "resume_from",
    "calculation",
)
# Maker settings added after stores held results: hashed only when set, so that those stay valid
_HASHED_WHEN_SET = ("hessian_from",)


def fingerprint(
    task: str,
    makers: list[Maker],
    structure: Structure | list[Structure],
    model_sha256: str | None = None,
    model_file: str | None = None,
) -> str:
    """Hash of everything that determines a calculation's result (of one structure, or of a
    path's images): the Makers' settings, the structure and, for a model file, its content
    (``model_sha256``) and not its path (``model_file``, which the Makers name)."""
    settings = [hashed_settings(maker, model_file) for maker in makers]
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


def hashed_settings(maker: Maker, model_file: str | None = None) -> dict:
    """The settings of a Maker that a calculation's fingerprint hashes: a model file by its
    content, never its path (:func:`_by_content`)."""
    return _by_content(
        {
            k: v
            for k, v in jsanitize(maker.as_dict(), strict=True).items()
            if k not in _RUN_ONLY_SETTINGS and not (k in _HASHED_WHEN_SET and v is None)
        },
        model_file,
    )


def _by_content(value, model_file: str | None):
    """Settings without the paths of model files, whose content the fingerprint hashes: the
    calculator's own (``model_file``, in its Makers' arguments) and a stand-in's in an
    identity that carries its SHA-256 (``hessian_from``; :func:`by_content`)."""
    if isinstance(value, dict):
        return {k: _by_content(v, model_file) for k, v in by_content(value).items()}
    if isinstance(value, list):
        return [_by_content(v, model_file) for v in value]
    return "<model file>" if model_file is not None and value == model_file else value


def load_calculator(maker: Maker):
    """The ASE calculator of a force-field Maker; a torch model runs deterministically.

    With 2 torch threads, SevenNet's forces and stress on one structure differed in the last
    float32 digits from call to call (the energy did not): the backward pass sums per-edge
    terms in parallel, in whatever order the threads finish. A cell relaxation of Li5In4 then
    ended at a = 4.789690 or 4.789696 A in two runs of one command. torch's deterministic
    algorithms remove it (same bits as 1 thread) at no measurable cost here (81 atoms, 0.77
    against 0.82 s per force call); ``warn_only`` keeps GPU kernels without a deterministic
    variant running. Not entirely on an Intel Ice Lake Xeon: there all 8 calls differed
    without them, and with them a call still differed in about 1 of 7 runs of the test suite;
    the workflow's choices do not hang on those digits (canonical, with tolerances).
    """
    calculator = maker._get_calculator()
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.use_deterministic_algorithms(True, warn_only=True)
    return calculator


def shared_calculator(calculator: Calculator):
    """The ASE calculator of a force field, loaded once per process like its calculations'."""
    return _share_calculator(calculator.makers("static")[0])._calculator


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


class AtomsRanTogetherError(Exception):
    """A relaxation stopped by its guard: its atoms ran together (a hole in the model, where the
    energy falls without bound), with the last state it reached."""

    def __init__(self, atoms, energy: float, forces: np.ndarray, calls: int, reason: str):
        super().__init__(reason)
        self.atoms, self.energy, self.forces, self.calls = atoms, energy, forces, calls

    @property
    def finite(self) -> bool:
        """Whether the last state has numbers to keep (else the calculation failed)."""
        return bool(np.isfinite(self.energy) and np.isfinite(self.forces).all())


def _closest_pair(atoms, cutoff: float) -> float:
    """The closest pair of atoms within ``cutoff`` (periodic images included), inf if none."""
    distances = neighbor_list("d", atoms, cutoff)
    return float(distances.min()) if len(distances) else float("inf")


# the closest pair of a start is looked for within this (A): every solid has one nearer
_START_PAIR_CUTOFF_A = 5.0


@contextmanager
def _watched(maker: Maker, label: str, every_s: float = 30.0):
    """Watch every force call of an in-process calculation: log the progress of a long one
    every ``every_s`` seconds (NEB images run on copies of the calculator: they count too), and
    stop a relaxation whose closest pair falls below STOP_FRACTION of its start's, or whose
    energy is no number (:class:`AtomsRanTogetherError`). The check is a neighbour list within that
    distance: about a millisecond against 0.2-3 s per SevenNet force call."""
    calculator = getattr(maker, "_calculator", None)
    if calculator is None:
        yield
        return
    calls, last, floor = 0, time.perf_counter(), None

    def calculate(self, atoms=None, *args, **kwargs):
        nonlocal calls, last, floor
        type(self).calculate(self, atoms, *args, **kwargs)
        calls += 1
        atoms = atoms if atoms is not None else self.atoms
        energy = float(self.results.get("energy", float("nan")))
        if floor is None:
            floor = STOP_FRACTION * _closest_pair(atoms, _START_PAIR_CUTOFF_A)
        closest = _closest_pair(atoms, floor) if np.isfinite(floor) else float("inf")
        if closest < floor or not np.isfinite(energy):
            reason = (
                f"atoms ran together: {closest:.2f} A apart after {calls} force calls "
                f"(E = {energy:.4g} eV; stopped below {floor:.2f} A, {STOP_FRACTION:.0%} of "
                "the start's closest pair)"
                if closest < floor
                else f"the energy is no number after {calls} force calls"
            )
            forces = np.array(self.results.get("forces", np.zeros((len(atoms), 3))), copy=True)
            raise AtomsRanTogetherError(atoms.copy(), energy, forces, calls, reason)
        if time.perf_counter() - last >= every_s and "forces" in self.results:
            forces = np.array(self.results["forces"], copy=True)
            for constraint in getattr(atoms, "constraints", []):
                constraint.adjust_forces(atoms, forces)
            logger.info(
                "%s: %d force calls, E = %.4f eV, largest force %.3f eV/A",
                label,
                calls,
                energy,
                float(np.linalg.norm(forces, axis=1).max()),
            )
            last = time.perf_counter()

    # a bound method: a deep copy of the calculator (one per NEB image) binds it to the copy
    calculator.calculate = types.MethodType(calculate, calculator)
    try:
        yield
    finally:
        del calculator.calculate


def _installed_version(calculator: Calculator) -> str | None:
    """What computes a calculator's numbers here, as its stored results record it."""
    if calculator.code.is_dft:
        return calculator.code.installed_version(calculator)
    package = calculator.describe()["version"]
    return f"{calculator.package} {package}" if package else None


def _recorded_versions(stored: CalculationDoc | PathDoc, calculator: Calculator) -> set[str]:
    """The versions that computed a stored result: a shipped model is named, not hashed (7net-0
    is whatever weights the installed sevenn ships under that name), and a package's code
    computes the numbers too; a DFT code's version (and with it the PAW setups and defaults it
    ships) sits in the total energies that every E_f takes a difference of, and a perfect cell
    of one version beside a defect of another is no formation energy."""
    if calculator.code.is_dft:
        return {run["code_version"] for run in stored.code.get("runs", []) if "code_version" in run}
    recorded = stored.calculator.get("version")
    return {f"{calculator.package} {recorded}"} if recorded else set()


def _find_stored(
    fp: str, calculator: Calculator, warn: bool = True
) -> CalculationDoc | PathDoc | None:
    """The stored result of a fingerprint that passes its checksum, computed by the installed
    version of its code where that can be known before a run; ``warn``: say so when one fails
    (once per calculation: the claim looks again, quietly)."""
    store = CURRENT_JOB.store
    if store is None:
        return None
    corrupt = None
    installed = _installed_version(calculator)
    for found in store.query({"output.fingerprint": fp}, properties=["output"]):
        output = {k: v for k, v in found["output"].items() if not k.startswith("@")}
        document = PathDoc if output.get("task") == "neb" else CalculationDoc
        stored = document.model_validate({**output, "reused": True})
        other = _recorded_versions(stored, calculator) - {installed}
        if installed is not None and other:
            if warn:
                logger.info(
                    "%s: stored by %s, installed %s: computing it again",
                    stored.label,
                    ", ".join(sorted(other)),
                    installed,
                )
            continue
        # a stored number changed after it was written (one byte of an energy gave a wrong E_f
        # silently): never reuse it
        if stored.checksum is None or stored.checksum == numbers_checksum(stored.reused_numbers()):
            return stored
        corrupt = stored
    if corrupt is not None and warn:
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
            with _watched(maker, label):
                result = type(maker).make.original(maker, structure)
        else:
            step_dir = directory / f"{number}-{slug(maker.name)}"
            if step_dir.exists() and not getattr(maker, "resumable", False):
                shutil.rmtree(step_dir)
            step_dir.mkdir(parents=True, exist_ok=True)
            if getattr(maker, "resumable", False):
                maker.calculation = label  # what it continues from is this calculation's
            logger.info("%s: %s in %s", label, maker.name, step_dir)
            with chdir(step_dir):
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
    fp = fingerprint(
        task, makers, structure, calculator.model_sha256, calculator.code.model_file(calculator)
    )
    stored = _find_stored(fp, calculator)
    if stored is None:
        find = lambda: _find_stored(fp, calculator, warn=False)  # noqa: E731
        with claimed(_claims_store(), fp, label, find) as stored:
            if stored is None:
                return _compute(
                    makers, structure, task, label, calculator, endpoint_energies_eV, fp
                )
    energy = stored.energy_eV if isinstance(stored, CalculationDoc) else stored.energies_eV[0]
    logger.info("%s: reused from the store (%s, E = %.4f eV)", label, task, energy)
    return stored


def _claims_store():
    """Where calculations are claimed: the job's store, except under jobflow-remote (its queue
    runs each job once)."""
    store = CURRENT_JOB.store
    return None if store is None or _queue_tracks_failures() else store.docs_store


def _compute(
    makers: list[Maker],
    structure: Structure | list[Structure],
    task: str,
    label: str,
    calculator: Calculator,
    endpoint_energies_eV: list[float] | None,
    fp: str,
) -> CalculationDoc | PathDoc | Response:
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
    if directory is not None:
        # the folder says which calculation it is: the steps of an unfinished one can then be
        # exported (carrierflow dataset --unfinished) and continued on another machine
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CALCULATION_FILE).write_text(
            json.dumps({"label": label, "task": task, "fingerprint": fp})
        )
    started = time.perf_counter()
    try:
        # the code's own processes (GPAW's worker, VASP under custodian) end with the
        # calculation when it fails or is interrupted, rather than run on without a caller
        with children_ended():
            task_docs = _run_steps(makers, structure, label, directory)
    except Exception as exc:
        if isinstance(exc, AtomsRanTogetherError) and exc.finite and task != "neb":
            return _stopped_document(exc, fp, task, label, described, started)
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
    doc = _calculation_document(
        fp,
        task,
        label,
        described,
        output.structure,
        energy_eV=float(output.energy),
        steps=sum(_ionic_steps(d) for d in task_docs),
        converged=task == "static" or all(_converged(d) for d in task_docs),
        max_force_eV_A=max_force,
        elapsed_s=elapsed,
        code=_code_record(task_docs),
    )
    logger.info(
        "%s: E = %.4f eV, %d steps%s, %.1f s",
        label,
        doc.energy_eV,
        doc.steps,
        "" if doc.converged else " (NOT converged)",
        elapsed,
    )
    return doc


def _stopped_document(
    stop: AtomsRanTogetherError, fp: str, task: str, label: str, described: dict, started: float
) -> CalculationDoc:
    """A relaxation that stopped itself (its atoms ran together): its last state, not
    converged, with the reason; the defect's assessment flags it and nothing ranks it."""
    doc = _calculation_document(
        fp,
        task,
        label,
        described,
        AseAtomsAdaptor.get_structure(stop.atoms),
        energy_eV=stop.energy,
        steps=stop.calls,
        converged=False,
        max_force_eV_A=float(np.linalg.norm(stop.forces, axis=1).max()),
        elapsed_s=time.perf_counter() - started,
        stopped=str(stop),
    )
    logger.warning("%s: stopped: %s", label, doc.stopped)
    return doc


def _calculation_document(
    fp: str, task: str, label: str, described: dict, structure: Structure, **numbers
) -> CalculationDoc:
    """The stored document of a finished calculation (its final ``structure`` and the numbers
    given), with this job's id and the checksum a rerun checks."""
    doc = CalculationDoc(
        fingerprint=fp,
        task=task,
        label=label,
        calculator=described,
        natoms=len(structure),
        formula=structure.composition.reduced_formula,
        structure=structure,
        job_uuid=CURRENT_JOB.job.uuid if CURRENT_JOB.job else None,
        **numbers,
    )
    doc.checksum = numbers_checksum(doc.reused_numbers())
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
