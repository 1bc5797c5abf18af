"""DFT training data: every ionic step of every DFT calculation in a store, as extended XYZ.

A refinement pays hours of DFT for a handful of formation energies; its trajectories are the data
that fine-tuning a stand-in needs (Deng et al., npj Comput. Mater. 11, 9 (2025): universal
potentials soften away from equilibrium, a few DFT points largely fix it). Each frame is one
ionic step with the energy the forces belong to (GPAW: the smeared free energy; the
extrapolated zero-width energy rides along as ``energy_zero_width``), forces, and stress where
the cell relaxed, plus where it came from: the calculation's label, task, fingerprint, job, the
code and its settings. ``ase.io.read`` and SevenNet's trainer read the file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write
from jobflow import JobStore

# the formats of the worker's files, read here and written by gpaw_worker.py
GPAW_INPUT, GPAW_STEPS = "gpaw-input.json", "gpaw-steps.jsonl"
# what a DFT calculation's folder holds (label, task, fingerprint), written by the engine
CALCULATION_FILE = "calculation.json"
CARD_VERSION = 1


class DatasetError(ValueError):
    """No frames to export, or frames that cannot be read."""


def gpaw_frames(directory: Path) -> list[Atoms]:
    """The ionic steps of one GPAW run folder (its input and its step log), oldest first.

    Steps recorded before the worker kept forces (no ``forces`` in the line) are skipped:
    an energy without forces is no training frame; so are steps of a run with fixed atoms
    recorded before the worker kept the forces DFT gave (a fixed atom's force was stored as
    zero), and a step at the geometry of the frame before it (the worker recorded a resumed
    relaxation's start again before it skipped it): one frame per geometry.
    """
    spec = json.loads((directory / GPAW_INPUT).read_text())
    steps_file = directory / GPAW_STEPS
    lines = steps_file.read_text().splitlines() if steps_file.exists() else []
    frames = []
    previous = None
    for number, line in enumerate(lines, start=1):
        try:
            step = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                # being written by a running worker, or cut short by one that was killed (its
                # next run drops the line and computes the step again)
                break
            raise DatasetError(f"{steps_file}: line {number} is no recorded step") from None
        again = previous is not None and (previous["positions"], previous["cell"]) == (
            step["positions"],
            step["cell"],
        )
        if again or "forces" not in step or (spec.get("fixed") and not step.get("raw_forces")):
            continue
        previous = step
        atoms = Atoms(
            numbers=spec["numbers"], cell=step["cell"], positions=step["positions"], pbc=True
        )
        results = {"energy": step["free_energy"], "forces": np.array(step["forces"])}
        if "stress" in step:
            results["stress"] = np.array(step["stress"])
        atoms.calc = SinglePointCalculator(atoms, **results)
        atoms.info.update(
            {
                "energy_zero_width": step["energy"],
                "step": number,
                "kpts": "x".join(str(k) for k in spec["kpts"]),
                "dft_settings": json.dumps(spec["settings"], sort_keys=True),
                "fixed_atoms": json.dumps(spec.get("fixed") or []),
            }
        )
        # what the step cost where it ran (steps recorded before 2026-12-03 do not say)
        for key in ("scf_iterations", "step_s"):
            if key in step:
                atoms.info[key] = step[key]
        frames.append(atoms)
    return frames


def vasp_frames(directory: Path) -> list[Atoms]:
    """The ionic steps of one VASP run folder (``vasprun.xml``, gzipped or not), oldest first,
    each with the free energy its forces belong to (VASP's ``e_fr_energy``)."""
    found = sorted(directory.glob("vasprun.xml*"))
    if not found:
        return []
    frames = []
    for number, atoms in enumerate(read(found[0], index=":", format="vasp-xml"), start=1):
        results = dict(atoms.calc.results)
        zero_width = results.get("energy")
        results["energy"] = results.pop("free_energy", zero_width)
        copy = atoms.copy()
        copy.calc = SinglePointCalculator(copy, **results)
        copy.info.update({"energy_zero_width": zero_width, "step": number})
        frames.append(copy)
    return frames


def same_dft(described: dict, calculator: dict) -> bool:
    """Whether a stored calculation's calculator is ``calculator``: the same code with the same
    DFT settings (the version and where it ran aside)."""
    keys = ("name", "preset", "settings")
    return all(described.get(k) == calculator.get(k) for k in keys)


def dft_frames(
    store: JobStore, calculator: dict | None = None, elements: set[str] | None = None
) -> list[Atoms]:
    """Every ionic step of every DFT calculation (GPAW, VASP) in the store whose run folder is
    still there, each once (a reused calculation points to the same folders), in a stable
    order; only those of ``calculator`` (a described DFT calculator: code and settings) and of
    structures made of ``elements`` when given."""
    documents = store.query(
        {
            "output.calculator.name": {"$in": ["gpaw", "vasp"]},
            "output.task": {"$in": ["bulk_relax", "ion_relax", "static"]},
            "output.fingerprint": {"$exists": True},  # not a stored failure
        },
        properties=[
            "output.label",
            "output.task",
            "output.fingerprint",
            "output.job_uuid",
            "output.calculator",
            "output.code",
        ],
    )
    seen: set[str] = set()
    frames = []
    for document in sorted(documents, key=lambda d: d["output"]["fingerprint"]):
        output = document["output"]
        if calculator is not None and not same_dft(output["calculator"], calculator):
            continue
        for run in output.get("code", {}).get("runs", []):
            # atomate2 writes VASP folders as host:/path
            directory = Path(str(run.get("directory") or "").split(":", 1)[-1])
            if not str(directory) or str(directory) in seen or not directory.is_dir():
                continue
            seen.add(str(directory))
            if output["calculator"]["name"] == "gpaw":
                steps = gpaw_frames(directory) if (directory / GPAW_INPUT).is_file() else []
            else:
                steps = vasp_frames(directory)
                settings = {"incar": run.get("incar", {}), "kpoints": run.get("kpoints")}
                for atoms in steps:
                    atoms.info["kpts"] = "x".join(str(k) for k in run.get("kpoints") or [])
                    atoms.info["dft_settings"] = json.dumps(settings, sort_keys=True)
            if elements is not None:
                steps = [a for a in steps if set(a.get_chemical_symbols()) <= elements]
            frames += _from(
                steps,
                output,
                run=run.get("task_label", ""),
                job_uuid=output.get("job_uuid") or "",
                code=_code(output["calculator"]["name"], run),
            )
    return frames


def _from(
    frames: list[Atoms], calculation: dict, run: str, job_uuid: str, code: str, **extra
) -> list[Atoms]:
    """The frames, each saying which calculation (label, task, fingerprint), run, job and code
    made it."""
    for atoms in frames:
        atoms.info.update(
            {
                "label": calculation["label"],
                "task": calculation["task"],
                "run": run,
                "fingerprint": calculation["fingerprint"],
                "job_uuid": job_uuid,
                "code": code,
                **extra,
            }
        )
    return frames


def unfinished_frames(workdir: Path, finished: set[str]) -> list[Atoms]:
    """The ionic steps of the GPAW calculations under ``workdir`` (``--workdir``) that are not
    finished (their fingerprint is not in ``finished``): a relaxation still running, or stopped
    with its machine. Each step is a complete DFT single point, so a frame like any other; the
    info says ``unfinished``. Exported and committed, another machine continues them
    (``--resume-from``) instead of computing them again."""
    frames = []
    for record in sorted(workdir.glob(f"*/{CALCULATION_FILE}")):
        calculation = json.loads(record.read_text())
        if calculation["fingerprint"] in finished:
            continue
        for inputs in sorted(record.parent.glob(f"*/{GPAW_INPUT}")):
            run = json.loads(inputs.read_text()).get("run", "")
            frames += _from(
                gpaw_frames(inputs.parent),
                calculation,
                run=run,
                job_uuid="",
                code="GPAW",
                unfinished=True,
            )
    return frames


def _code(name: str, run: dict) -> str:
    """``GPAW 22.8.0``, ``VASP 6.4.2``: the code and the version its run reported."""
    version = str(run.get("code_version") or "")
    return version if version.upper().startswith(name.upper()) else f"{name.upper()} {version}"


# A relaxation whose input lies within this of a stored relaxation's first frame is that
# relaxation: along the committed Li-In GPAW relaxations a force changes by at most 14 eV/A^2
# times the largest displacement (148 pairs of steps; median 3.4), so 1e-4 A moves a force by at
# most 1.4e-3 eV/A, under a seventh of the study's force criterion. A new machine's inputs lie
# 1e-8 A off the frames it committed (the relaxed bulk cells come back from extended XYZ's 8
# decimals), so exact equality would never match.
SAME_START_A = 1e-4


def recorded_relaxation(
    frames_file: Path, spec: dict, label: str | None = None
) -> list[dict] | None:
    """The recorded ionic steps, as lines of the GPAW worker's step log, of the relaxation in
    ``frames_file`` (a data set this module wrote) that the worker input ``spec`` starts: the same
    calculation (``label``, when given) and run (the input's ``run``: ``bulk relax``, ``ion
    relax``) with the same DFT settings and k-mesh, the same atoms (and the same fixed ones,
    where the frames say), and a first frame within :data:`SAME_START_A` of the input's cell and
    positions (periodic images allowed). None when the file holds none; the longest when it
    holds several.

    The worker then continues from the last of them, as from its own interrupted run: the DFT
    of hours on another machine is not paid again. A finished calculation of the GPAW version
    installed here is taken as recorded; any other has its last geometry computed again (see
    ``gpaw_worker.finished_elsewhere``).
    """
    settings = json.dumps(spec["settings"], sort_keys=True)
    kpts = "x".join(str(k) for k in spec["kpts"])
    calculations: dict[str, list[Atoms]] = {}
    for atoms in read(frames_file, index=":", format="extxyz"):
        info = atoms.info
        same = (spec["run"], settings, kpts)
        if (info.get("run"), info.get("dft_settings"), info.get("kpts")) != same:
            continue
        # a local relaxation (far field fixed) starts where its free one did, and frames
        # exported before 2026-12-02 do not say which atoms were fixed: the label tells them
        # apart (a Li5In4 interstitial's local relaxation was continued from the free one's
        # end before it did)
        if label is None or info.get("label") == label:
            calculations.setdefault(str(info.get("fingerprint")), []).append(atoms)
    found = None
    for _, steps in sorted(calculations.items()):
        first = steps[0]
        if first.info.get("step") != 1 or list(first.numbers) != list(spec["numbers"]):
            continue
        fixed = first.info.get("fixed_atoms")
        if fixed is not None and json.loads(fixed) != list(spec.get("fixed") or []):
            continue
        if not _same_start(first, np.array(spec["cell"]), np.array(spec["frac"])):
            continue
        if found is None or len(steps) > len(found):
            found = steps
    if found is None:
        return None
    fixed = spec.get("fixed") or []
    lines = []
    for atoms in found:
        forces = atoms.get_forces()
        free = np.delete(forces, fixed, axis=0) if fixed else forces
        line = {
            "energy": float(atoms.info["energy_zero_width"]),
            "free_energy": float(atoms.get_potential_energy()),
            "cell": atoms.cell.array.tolist(),
            "positions": atoms.positions.tolist(),
            "forces": forces.tolist(),
            "raw_forces": True,
            "fmax": float(np.linalg.norm(free, axis=1).max()),
            "elapsed_s": 0.0,
            "recorded_in": f"{frames_file.name} {atoms.info['fingerprint'][:12]}",
        }
        # which GPAW computed the step (a finished calculation of this machine's version is taken
        # as recorded, see gpaw_worker) and what it cost where it ran, so that a data set written
        # again from this run still says it
        for key in ("code", "scf_iterations", "step_s"):
            value = atoms.info.get(key)
            if value is not None:  # extxyz reads numbers back as numpy's
                line[key] = value.item() if isinstance(value, np.generic) else value
        if "stress" in atoms.calc.results:
            line["stress"] = atoms.get_stress(voigt=True).tolist()
        lines.append(line)
    return lines


def read_frames_file(path: Path, what: str) -> list[Atoms]:
    """The frames of a data set this module wrote, read before anything computes; ``what``
    (the option or argument that named it) leads every error, a one-line DatasetError."""
    if not path.is_file():
        raise DatasetError(f"{what}: no such file '{path}'")
    try:
        frames = read(path, index=":", format="extxyz")
    except Exception as exc:
        raise DatasetError(f"{what}: '{path}' is no extended XYZ ({exc})") from exc
    if not frames or not all(
        {"run", "step", "dft_settings", "fingerprint"} <= set(a.info)
        and a.calc is not None
        and {"energy", "forces"} <= set(a.calc.results)
        for a in frames
    ):
        raise DatasetError(
            f"{what}: '{path}' is not a data set of DFT frames with energies and forces "
            "(carrierflow dataset's)"
        )
    return frames


def check_frames_file(path: Path) -> Path:
    """``path``, absolute, if it is a data set this module wrote (read before anything runs)."""
    read_frames_file(path, "--resume-from")
    return path.resolve()


def _same_start(atoms: Atoms, cell: np.ndarray, frac: np.ndarray) -> bool:
    if np.abs(atoms.cell.array - cell).max() > SAME_START_A:
        return False
    shift = np.linalg.solve(cell.T, (atoms.positions - frac @ cell).T).T
    shift -= np.round(shift)
    return bool(np.linalg.norm(shift @ cell, axis=1).max() <= SAME_START_A)


def check_overwrite(path: Path, frames: list[Atoms]) -> None:
    """Refuse to replace a data set at ``path`` by ``frames`` if it holds a frame they lack.

    Why: an export reads the frames from the store and the calculation folders, and skips a
    calculation whose folder is gone; a rerun after a clean-up, or against another store, would
    otherwise overwrite hours of DFT (committed in fixtures/dft) with fewer frames, silently."""
    if not path.exists():
        return
    try:
        old = read(path, index=":", format="extxyz")
        kept = {_frame_key(a) for a in old}
    except Exception as exc:
        raise DatasetError(
            f"dataset: '{path}' exists and is not a data set of DFT frames; nothing written"
        ) from exc
    missing = kept - {_frame_key(a) for a in frames}
    if missing:
        raise DatasetError(
            f"dataset: '{path}' holds {len(missing)} of its {len(kept)} frames that this store "
            "does not (another store, or calculation folders removed); nothing written: give "
            "another file, or move that one away first"
        )


def _frame_key(atoms: Atoms) -> tuple:
    info = atoms.info
    return info["fingerprint"], info["run"], info["step"]


def write_dataset(frames: list[Atoms], path: Path, made_by: str) -> dict:
    """Write the frames as extended XYZ and a JSON card beside it (``<name>.card.json``): frames,
    atoms, elements, codes, settings, labels and the file's SHA-256."""
    if not frames:
        raise DatasetError("no DFT frames to export (no DFT calculation, or its folders are gone)")
    path.parent.mkdir(parents=True, exist_ok=True)
    write(path, frames, format="extxyz")
    labels: dict[str, int] = {}
    for atoms in frames:
        labels[atoms.info["label"]] = labels.get(atoms.info["label"], 0) + 1
    card = {
        "card_version": CARD_VERSION,
        "file": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "frames": len(frames),
        "atoms": int(sum(len(a) for a in frames)),
        "with_stress": sum("stress" in a.calc.results for a in frames),
        "elements": sorted({s for a in frames for s in a.get_chemical_symbols()}),
        "codes": sorted({a.info["code"] for a in frames}),
        "dft_settings": sorted({a.info["dft_settings"] for a in frames}),
        "energy": "free energy of the smearing the forces belong to (eV); energy_zero_width "
        "in each frame's info",
        "frames_per_calculation": dict(sorted(labels.items())),
        "made_by": made_by,
    }
    card_path = path.with_suffix(".card.json")
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return card
