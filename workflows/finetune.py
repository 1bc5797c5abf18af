"""Fine-tuning the stand-in on DFT frames with SevenNet's own trainer.

Universal potentials soften away from equilibrium (Deng et al., npj Comput. Mater. 11, 9 (2025)):
7net-l3i5 put Li interstitials in Li-In 0.17-0.60 eV too low against GPAW in the same cells,
its vacancies within 0.03-0.14 eV. A few DFT points in fine-tuning largely remove that. Nothing
here trains by itself: the input is SevenNet's fine-tuning preset (``sevenn/presets/
fine_tune.yaml``: Huber loss, Adam, exponential decay, optimizer, scheduler and epoch reset)
on the architecture of the base checkpoint (``SevenNetCheckpoint.yaml_dict('continue')``), run
with ``sevenn train`` in its own process.

The DFT energies are first put on the base model's energy scale by one constant per element,
fitted by least squares over the training frames (what MACE calls E0s): GPAW's PAW references
differ from the VASP ones the model learnt by a fixed amount per atom of each element, which
would otherwise be the first thing the network spends its few epochs on. A constant per element
cancels exactly in every formation energy (E_def - E_perf - n mu), so nothing physical changes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import yaml
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from pydantic import BaseModel, Field
from pymatgen.core import Structure

from carrierflow.workflows.calculators import file_sha256
from carrierflow.workflows.codes.sevennet import fine_tune_preset, sevennet_checkpoint
from carrierflow.workflows.processes import children_ended
from carrierflow.workflows.schemas import BASE_MODELS, FineTuneSettings

logger = logging.getLogger("carrierflow")

# the frames chosen and weighted for the same data and settings (fine_tuned_model's identity)
TRAINING_RULES = 2
# What a fine-tuning trains on, written beside its checkpoint: the frames, then the data sets
# whose energy is weighted (perfect supercells; defect relaxations' ends with --defect-weight).
# validation.training_frames reads them back as the frames the model saw.
TRAINED_ON = {"train": "train.extxyz", "references": "references.extxyz", "ends": "ends.extxyz"}


class FineTuneError(ValueError):
    """Fine-tuning that cannot start or did not finish."""


class FineTuneResult(BaseModel):
    """A fine-tuned checkpoint and everything needed to trust it."""

    checkpoint: str
    checkpoint_sha256: str
    base_model: str
    base_sha256: str
    settings: FineTuneSettings
    train_frames: int
    valid_frames: int
    dft_settings: str | None = Field(
        None, description="the DFT settings of every frame trained and validated on"
    )
    left_out_frames: int = Field(
        0,
        description="frames left out: of other DFT settings, and the bulk cells of hosts whose "
        "perfect supercell is there (their energies do not compare)",
    )
    train_sha256: str = Field(
        description="SHA-256 of the training set as written for SevenNet: its frames, then the "
        "weighted perfect supercells, then the weighted defect ends (with --defect-weight)"
    )
    valid_sha256: str
    element_offsets_eV: dict[str, float] = Field(
        description="per-atom constants subtracted from the DFT energies (cancel in every E_f)"
    )
    errors: dict[str, dict[str, float]] = Field(
        description="SevenNet's energy (eV/atom), force (eV/A), stress (kbar) RMSE and loss of "
        "the checkpoint's epoch: 'train' is in-sample, averaged over the epoch's batches while "
        "the model changes (not the checkpoint's own error), 'valid' the frames held out of "
        "training, after the epoch (absent when none was: a model trained on every frame)"
    )
    held_out: dict[str, dict[str, float]] = Field(
        description="energy and force RMSE on the held-out frames of the base model ('base') "
        "and of the fine-tuned one ('fine_tuned'), computed here with the ASE calculator "
        "(empty when no frame was held out)"
    )
    held_out_defects: list[dict] = Field(
        default_factory=list,
        description="every DFT defect of the held-out frames: its DFT E_f and the base and "
        "fine-tuned models' E_f at the same geometries (single points), eV",
    )
    dataset_sha256: str | None = Field(None, description="SHA-256 of the data set file given")
    identity: str | None = Field(
        None,
        description="hash of the frames, settings and base checkpoint (names the model's "
        "folder; a rerun of the same reads the model back)",
    )
    epoch: int = Field(description="the checkpoint's epoch: the last (validation never chooses)")
    first_epoch_errors: dict[str, dict[str, float]]
    sevenn_version: str
    elapsed_s: float


class CrossValidatedModel(BaseModel):
    """A model trained on every frame, and how well its settings carry to a host it never saw:
    for each phase, the same settings trained without that phase's frames and validated on
    them (errors before and after, and the held-out defects' E_f), and to defects it never saw
    in a host it did."""

    model: FineTuneResult
    cross_validation: dict[str, FineTuneResult] = Field(
        description="per held-out phase: the fine-tuning without it, validated on it"
    )
    defects_held_out: dict[str, FineTuneResult] = Field(
        default_factory=dict,
        description="per held-out phase with defects among the frames: the fine-tuning on every "
        "frame but that phase's defects (its perfect crystal trains), validated on them: what "
        "the loop's re-screen meets, a host whose crystal DFT has computed and whose other "
        "defects it has not",
    )
    orderings: list[dict] = Field(
        default_factory=list,
        description="energy of one ordering of a composition above another (meV/atom), cell "
        "and ions relaxed with the base model and each fine-tuned one ('model': every frame; "
        "'without <phase>': that phase held out); null where a model relaxed the two into one "
        "structure (no barrier between them: no ordering energy)",
    )


def base_checkpoint(name: str) -> str:
    """The file of a shipped SevenNet model."""
    if name not in BASE_MODELS:
        raise FineTuneError(f"unknown base model '{name}' (fine-tunable: {', '.join(BASE_MODELS)})")
    return sevennet_checkpoint(name)


def predictions(frames: list[Atoms], checkpoint: str) -> list[tuple[float, np.ndarray]]:
    """A SevenNet checkpoint's energy and forces of every frame."""
    from sevenn.calculator import SevenNetCalculator

    calculator = SevenNetCalculator(checkpoint, device="cpu")
    out = []
    for atoms in frames:
        copy = atoms.copy()
        copy.calc = calculator
        out.append((copy.get_potential_energy(), copy.get_forces()))
    return out


def evaluate(frames: list[Atoms], checkpoint: str, offsets: dict[str, float]) -> dict:
    """Energy (eV/atom) and force (eV/A) RMSE of a checkpoint against DFT frames on the model's
    energy scale (the element offsets taken off)."""
    predicted = predictions(frames, checkpoint)
    reference = shifted(frames, offsets)
    energy = [
        (e - ref.get_potential_energy()) / len(ref)
        for (e, _), ref in zip(predicted, reference, strict=True)
    ]
    forces = np.concatenate(
        [(f - ref.get_forces()).ravel() for (_, f), ref in zip(predicted, reference, strict=True)]
    )
    return {
        "energy_rmse_eV_atom": float(np.sqrt(np.mean(np.square(energy)))),
        "force_rmse_eV_A": float(np.sqrt(np.mean(np.square(forces)))),
    }


def element_offsets(frames: list[Atoms], reference: np.ndarray) -> dict[str, float]:
    """Per-element constants c_el minimising sum (E_DFT - E_ref - sum_el n_el c_el)^2."""
    elements = sorted({s for atoms in frames for s in atoms.get_chemical_symbols()})
    counts = np.array([[a.get_chemical_symbols().count(e) for e in elements] for a in frames])
    dft = np.array([a.get_potential_energy() for a in frames])
    constants, *_ = np.linalg.lstsq(counts.astype(float), dft - reference, rcond=None)
    return {e: float(c) for e, c in zip(elements, constants, strict=True)}


def shifted(
    frames: list[Atoms], offsets: dict[str, float], info: set[str] | None = None
) -> list[Atoms]:
    """Copies of the frames with the element offsets taken off their energies (and only the
    ``info`` keys given, when given)."""
    out = []
    for atoms in frames:
        copy = atoms.copy()
        if info is not None:
            copy.info = {key: value for key, value in copy.info.items() if key in info}
        results = dict(atoms.calc.results)
        shift = sum(offsets[s] for s in atoms.get_chemical_symbols())
        results["energy"] = results["energy"] - shift
        copy.calc = SinglePointCalculator(copy, **results)
        out.append(copy)
    return out


def sevenn_input(
    settings: FineTuneSettings,
    checkpoint: str,
    train: str,
    valid: str,
    references: str | None = None,
    ends: str | None = None,
) -> dict:
    """SevenNet's fine-tuning preset on the base checkpoint's architecture; the frames of
    ``references`` (the perfect supercells) carry ``settings.reference_weight`` on their energy,
    those of ``ends`` (each defect relaxation's last frame) ``settings.defect_weight``
    (SevenNet's ``use_weight`` and per-data-set ``data_weight``)."""
    from sevenn.checkpoint import SevenNetCheckpoint

    preset = fine_tune_preset()
    model = SevenNetCheckpoint(checkpoint).yaml_dict("continue")["model"]
    for key in ("train_shift_scale", "train_denominator"):
        model[key] = preset["model"][key]
    train_config = {
        **preset["train"],
        "random_seed": settings.seed,
        "epoch": settings.epochs,
        "force_loss_weight": settings.force_weight,
        "optim_param": {**preset["train"]["optim_param"], "lr": settings.learning_rate},
        "scheduler_param": {**preset["train"]["scheduler_param"], "gamma": settings.lr_decay},
        "per_epoch": settings.epochs,
        "device": settings.device,
        "continue": {**preset["train"]["continue"], "checkpoint": checkpoint},
        "use_weight": True,
    }
    # data sets as SevenNet's dicts (the only form that takes a weight), each file read with
    # the preset's arguments
    read_as = preset["data"]["data_format_args"]
    trainset = [{"file_list": [{"file": train, **read_as}]}]
    for weighted, weight in (
        (references, settings.reference_weight),
        (ends, settings.defect_weight),
    ):
        if weighted is not None:
            trainset.append(
                {"file_list": [{"file": weighted, **read_as}], "data_weight": {"energy": weight}}
            )
    data = {
        "batch_size": settings.batch_size,
        "load_trainset_path": trainset,
        "load_validset_path": [{"file_list": [{"file": valid, **read_as}]}],
    }
    return {"model": model, "train": train_config, "data": data}


def _learning_curve(path: Path) -> list[dict[str, float]]:
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    return [dict(zip(header, map(float, line.split(",")), strict=True)) for line in lines[1:]]


def _errors(row: dict[str, float], valid: bool = True) -> dict[str, dict[str, float]]:
    names = {
        "Energy_RMSE": "energy_rmse_eV_atom",
        "Force_RMSE": "force_rmse_eV_A",
        "Stress_RMSE": "stress_rmse_kbar",
        "TotalLoss": "loss",
    }
    return {
        # NaN: not measured (no frame of the split has a stress); never a number in JSON
        split: {
            names[k]: row[f"{prefix}_{k}"]
            for k in names
            if np.isfinite(row.get(f"{prefix}_{k}", np.nan))
        }
        for split, prefix in (("train", "trainset"), ("valid", "validset"))
        if valid or split == "train"
    }


def _show_progress(
    process: subprocess.Popen, curve: Path, epochs: int, held_out: bool = True, every_s=30.0
) -> None:
    """Wait for the trainer, logging its latest epoch and validation errors now and then (an
    epoch over a few dozen Li-In frames takes about a minute on 2 cores)."""
    shown = 0
    while process.poll() is None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=every_s)
        try:
            rows = _learning_curve(curve) if curve.is_file() else []
        except ValueError:  # a line being written
            continue
        if len(rows) > shown:
            shown = len(rows)
            valid = _errors(rows[-1])["valid"]
            logger.info(
                "  fine-tuning: epoch %d/%d, %s energy RMSE %.4f eV/atom, force RMSE %.3f eV/A",
                int(rows[-1]["epoch"]),
                epochs,
                "validation" if held_out else "training (in-sample)",
                valid.get("energy_rmse_eV_atom", float("nan")),
                valid.get("force_rmse_eV_A", float("nan")),
            )


def one_dft_setting(
    train: list[Atoms], *others: list[Atoms]
) -> tuple[str | None, tuple[list[Atoms], ...], int]:
    """The frames of one DFT setting: the one most training frames have, and how many frames
    were left out. Energies of two settings differ by more than a constant per element: the
    GPAW cell relaxations (at 1.3x the cut-off, against Pulay stress) sit 56-64 meV/atom below
    the 400 eV frames of the same Li-In phases after the per-element offsets, against a 7 meV/atom
    spread within one setting; trained together, the fine-tuned model missed every frame by
    25 meV/atom, 0.7 eV per defect cell."""
    counts: dict[str | None, int] = {}
    for atoms in train:
        key = atoms.info.get("dft_settings")
        counts[key] = counts.get(key, 0) + 1
    setting = max(sorted(counts, key=str), key=lambda key: counts[key])
    kept = tuple(
        [a for a in frames if a.info.get("dft_settings") == setting] for frames in (train, *others)
    )
    left_out = len(train) + sum(map(len, others)) - sum(map(len, kept))
    return setting, kept, left_out


def is_perfect_supercell(atoms: Atoms) -> bool:
    """A host's perfect supercell (``refine``'s ``<phase> perfect supercell [DFT]``)."""
    return atoms.info.get("task") == "static" and atoms.info.get("label", "").endswith(
        " perfect supercell [DFT]"
    )


def one_cell_per_crystal(train: list[Atoms], *others: list[Atoms]) -> tuple[list[Atoms], ...]:
    """The frames without the bulk cells of a host whose perfect supercell is there. A local
    model gives a crystal one energy per atom in any cell; DFT does not: one k-spacing gives the
    bulk cell and the supercell different meshes, and at 400 eV the Li5In4 bulk cell (5x5x3) sat
    11 meV/atom above its supercell (3x3x3; Li3In2 2.8, bcc Li 2.7). Trained on both, the model
    split the difference and put the Li5In4 supercell 0.15 eV high, which took 0.15 eV off every
    Li5In4 E_f. The defect cells share the supercell's mesh, so the supercell stays."""
    groups = (train, *others)
    hosts = {phase_of(a) for frames in groups for a in frames if is_perfect_supercell(a)}
    return tuple(
        [a for a in frames if not (a.info.get("task") == "bulk_relax" and phase_of(a) in hosts)]
        for frames in groups
    )


def comparable_frames(
    train: list[Atoms], *others: list[Atoms]
) -> tuple[str | None, tuple[list[Atoms], ...], int]:
    """The frames one model can fit together: of one DFT setting (:func:`one_dft_setting`) and
    one cell per crystal (:func:`one_cell_per_crystal`); with the setting and how many frames
    were left out."""
    setting, kept, _ = one_dft_setting(train, *others)
    kept = one_cell_per_crystal(*kept)
    left_out = len(train) + sum(map(len, others)) - sum(map(len, kept))
    return setting, kept, left_out


def check_device(device: str) -> None:
    """Refuse a torch device this machine does not have (a typo, or ``cuda`` on a CPU
    machine): found before any DFT runs, not when the loop's first fine-tuning starts hours
    later."""
    if not device.startswith("cuda"):
        return
    import torch

    index = int(device.partition(":")[2] or 0)
    if not torch.cuda.is_available():
        raise FineTuneError(f"--device {device}: no CUDA device on this machine")
    if index >= torch.cuda.device_count():
        raise FineTuneError(
            f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )


def fine_tune(
    train: list[Atoms],
    valid: list[Atoms],
    settings: FineTuneSettings,
    workdir: Path,
    dataset_sha256: str | None = None,
    identity: str | None = None,
) -> FineTuneResult:
    """Fine-tune the base model on ``train``, validate on ``valid`` (frames it never sees),
    and return the last epoch's checkpoint with its record. The validation frames measure and
    never choose: an epoch picked by the held-out host's loss would make its held-out errors
    optimistic, and the model shipped (trained on every frame) has no other frames to pick by.
    Without ``valid`` every error is in-sample."""
    if not train:
        raise FineTuneError("fine-tuning needs training frames (got none)")
    held_out = bool(valid)
    setting, (kept_train, kept_valid), left_out = comparable_frames(train, valid)
    # the E_f need mu, the bulk cell of the mobile species: of the same setting, trained or not
    same_setting = [a for a in (*train, *valid) if a.info.get("dft_settings") == setting]
    train, valid = kept_train, kept_valid
    if held_out and not valid:
        raise FineTuneError("no held-out frame has the DFT settings of the training frames")
    if left_out:
        logger.info(
            "fine-tuning: %d frames left out (other DFT settings, or bulk cells of a host whose "
            "supercell is there: their energies do not compare)",
            left_out,
        )
    started = time.perf_counter()
    checkpoint = base_checkpoint(settings.base_model)
    # SevenNet's trainer runs in the folder and reads the paths its input names from there: a
    # relative --output would name them twice (cv/<hash>/cv/<hash>/train.extxyz, not found)
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    # a folder trained in before (an interrupted or older run): SevenNet would write lc0.csv
    # beside the old lc.csv and leave old checkpoints, whose numbers would be read as this run's
    for old in [
        *workdir.glob("lc*.csv"),
        *workdir.glob("checkpoint_*.pth"),
        workdir / "finetune.json",
    ]:
        old.unlink(missing_ok=True)
    base = np.array([e for e, _ in predictions(train, checkpoint)])
    offsets = element_offsets(train, base)
    paths = {split: workdir / name for split, name in TRAINED_ON.items()}
    paths["valid"] = workdir / "valid.extxyz"
    # One perfect supercell per host against some 40 defect frames: at weight 1 the model
    # fitted the defect cells to 1 meV/atom and left Li3In2's supercell 7 meV/atom (0.21 eV)
    # high, and every Li3In2 E_f is a difference against it.
    references = [a for a in train if is_perfect_supercell(a)]
    # At weight 1 (the default) the ends train among the other frames, as before the option.
    ends = relaxation_ends(train) if settings.defect_weight != 1 else []
    weighted = {id(a) for a in ends}
    # SevenNet's trainer wants a validation set: without held-out frames it sees the training
    # set again (the errors it reports are then in-sample, and recorded as such)
    # SevenNet makes every info entry a graph attribute and collates them: a key that some
    # frames lack fails the trainer (KeyError: 'scf_iterations', the per-step cost GPAW's
    # newer steps record, in the timed loop's first fine-tuning). Only the keys every frame has.
    common = set.intersection(*(set(a.info) for a in (*train, *valid)))
    for split, frames in (
        ("train", [a for a in train if not is_perfect_supercell(a) and id(a) not in weighted]),
        ("references", references),
        ("ends", ends),
        ("valid", valid or train),
    ):
        if frames or split != "ends":
            write(paths[split], shifted(frames, offsets, common), format="extxyz")
        else:  # none to weigh: no file that a validation would count as trained on
            paths[split].unlink(missing_ok=True)
    config = sevenn_input(
        settings,
        checkpoint,
        str(paths["train"]),
        str(paths["valid"]),
        str(paths["references"]) if references else None,
        str(paths["ends"]) if ends else None,
    )
    (workdir / "input.yaml").write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "sevenn.main.sevenn", "train", "input.yaml", "-w", "."]
    logger.info(
        "fine-tuning %s on %d frames (%d held out), %d epochs in %s",
        settings.base_model,
        len(train),
        len(valid),
        settings.epochs,
        workdir,
    )
    with open(workdir / "sevenn-train.log", "w") as log, children_ended():
        process = subprocess.Popen(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
        _show_progress(process, workdir / "lc.csv", settings.epochs, held_out=bool(valid))
    best = workdir / f"checkpoint_{settings.epochs}.pth"
    if process.returncode != 0 or not best.is_file():
        tail = (workdir / "sevenn-train.log").read_text(errors="replace").strip().splitlines()
        raise FineTuneError(
            f"SevenNet's trainer failed (exit {process.returncode}): "
            f"{tail[-1] if tail else 'no output'}"
        )
    curve = _learning_curve(workdir / "lc.csv")
    chosen = curve[-1]
    result = FineTuneResult(
        checkpoint=str(best),
        checkpoint_sha256=file_sha256(best),
        base_model=settings.base_model,
        base_sha256=file_sha256(checkpoint),
        settings=settings,
        train_frames=len(train),
        valid_frames=len(valid),
        dft_settings=setting,
        left_out_frames=left_out,
        # the files written above, in TRAINED_ON's order (ends.extxyz only where weighted)
        train_sha256=hashlib.sha256(
            b"".join(paths[split].read_bytes() for split in TRAINED_ON if paths[split].is_file())
        ).hexdigest(),
        valid_sha256=file_sha256(paths["valid"]),
        element_offsets_eV=offsets,
        errors=_errors(chosen, valid=bool(valid)),
        epoch=int(chosen["epoch"]),
        first_epoch_errors=_errors(curve[0], valid=bool(valid)),
        held_out={
            "base": evaluate(valid, checkpoint, offsets),
            "fine_tuned": evaluate(valid, str(best), offsets),
        }
        if valid
        else {},
        held_out_defects=formation_energy_errors(
            valid, same_setting, {"base": checkpoint, "fine_tuned": str(best)}
        ),
        dataset_sha256=dataset_sha256,
        identity=identity,
        sevenn_version=version("sevenn"),
        elapsed_s=time.perf_counter() - started,
    )
    (workdir / "finetune.json").write_text(result.model_dump_json(indent=2) + "\n")
    return result


def _frame_ids(frames: list[Atoms]) -> list[str]:
    return [
        f"{a.info['fingerprint']}/{a.info['run']}/{a.info['step']}/{a.get_potential_energy():.6f}"
        for a in frames
    ]


def fine_tuned_model(
    train: list[Atoms],
    valid: list[Atoms],
    settings: FineTuneSettings,
    root: Path,
    dataset_sha256: str | None = None,
) -> FineTuneResult:
    """The base model fine-tuned on these frames: read back when a model of the same frames,
    settings and base checkpoint was made before (a rerun, or an interrupted loop), else
    trained in ``root/<its hash>``."""
    identity = {
        # settings at their defaults left out: a setting added later, whose default trains as
        # before, keeps the models made before it
        "settings": settings.model_dump(exclude_defaults=True),
        # what the same frames and settings train on: raised when that changes, so a model of
        # the old rule is trained again (2: one cell per crystal, weighted perfect supercells)
        "rules": TRAINING_RULES,
        "base_sha256": file_sha256(base_checkpoint(settings.base_model)),
        "train": _frame_ids(train),
        "valid": _frame_ids(valid),
    }
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    # The key leaves the settings at their defaults out, and those defaults can change under
    # it: the rate is SevenNet's preset's, the epochs, decay and force weight carrierflow's
    # recipe (30, 0.99 and 1 before 2026-12-04), and the rest of the preset (loss, optimizer)
    # is SevenNet's code. So a model is read back only if it was
    # trained with every setting at today's value and by this version of sevenn; else it is
    # trained beside it (a variant folder), never over it.
    installed = version("sevenn")
    variant = hashlib.sha256(
        json.dumps([settings.model_dump(), installed], sort_keys=True).encode()
    ).hexdigest()
    folders = [root / key[:16], root / f"{key[:16]}-{variant[:8]}"]
    for directory in folders:
        done = _reusable(directory / "finetune.json", settings, installed)
        if done is not None:
            logger.info("reusing the fine-tuned model %s", done.checkpoint)
            return done
    directory = folders[0] if not (folders[0] / "finetune.json").is_file() else folders[1]
    return fine_tune(train, valid, settings, directory, dataset_sha256, identity=key)


def _reusable(record: Path, settings: FineTuneSettings, installed: str) -> FineTuneResult | None:
    """The fine-tuning recorded here, if it is what ``settings`` would train today: the same
    settings, the same sevenn, its last epoch (an older rule shipped the lowest-validation-loss
    one) and its checkpoint unchanged."""
    if not record.is_file():
        return None
    done = FineTuneResult.model_validate_json(record.read_text())
    if (
        done.settings == settings
        and done.sevenn_version == installed
        and done.epoch == settings.epochs
        and Path(done.checkpoint).is_file()
        and file_sha256(done.checkpoint) == done.checkpoint_sha256
    ):
        return done
    return None


def _final_frames(frames: list[Atoms]) -> dict[tuple[str, str], Atoms]:
    """The last ionic step of each calculation's last run, by (label, task). Where a data set
    holds one calculation twice (two runs of the flow merged: the same defect relaxed from two
    starts), the lower final energy is that defect's DFT state, as a search over starts takes
    its lowest."""
    last: dict[tuple[str, str, str], Atoms] = {}
    for atoms in frames:
        key = (
            atoms.info.get("label", ""),
            atoms.info.get("task", ""),
            str(atoms.info.get("fingerprint", "")),
        )
        if key not in last or (atoms.info.get("run", ""), atoms.info.get("step", 0)) >= (
            last[key].info.get("run", ""),
            last[key].info.get("step", 0),
        ):
            last[key] = atoms
    lowest: dict[tuple[str, str], Atoms] = {}
    for (label, task, _), atoms in last.items():
        known = lowest.get((label, task))
        if known is None or atoms.get_potential_energy() < known.get_potential_energy():
            lowest[(label, task)] = atoms
    return lowest


def relaxation_ends(frames: list[Atoms]) -> list[Atoms]:
    """The last ionic step of each defect relaxation among ``frames`` (task ``ion_relax``, the
    lower one where a calculation is there twice): the states the E_f are read from."""
    ends = {id(a) for (_, task), a in _final_frames(frames).items() if task == "ion_relax"}
    return [a for a in frames if id(a) in ends]


def defect_energies(held_out: list[Atoms], every: list[Atoms], species: str = "Li") -> list[dict]:
    """The DFT defects among ``held_out`` frames with what their E_f needs: the defect's final
    geometry, its phase's perfect supercell and the bulk of ``species`` (mu; from ``every``
    frame, it need not be held out). E_f = E_defect - E_perfect - n mu, n = +1 interstitial,
    -1 vacancy; a constant per element cancels in it, so DFT and model energies compare as they
    are."""
    finals = _final_frames(every)
    held = {(a.info.get("label", ""), a.info.get("task", "")) for a in held_out}
    bulk = finals.get((f"{species} bulk [DFT]", "bulk_relax"))
    if bulk is None:
        return []
    found = []
    for (label, task), defect in sorted(finals.items(), key=lambda item: item[0]):
        phase, _, rest = label.partition(" ")
        if task != "ion_relax" or (label, task) not in held or not rest.endswith("[DFT]"):
            continue
        perfect = finals.get((f"{phase} perfect supercell [DFT]", "static"))
        if perfect is None:
            continue
        added = len(defect) - len(perfect)
        if added not in (1, -1):
            continue
        found.append(
            {
                "phase": phase,
                "name": rest.removesuffix("[DFT]").strip(),
                "kind": "interstitial" if added == 1 else "vacancy",
                "frames": (defect, perfect, bulk),
                "added": added,
            }
        )
    return found


def formation_energy_errors(
    held_out: list[Atoms], every: list[Atoms], checkpoints: dict[str, str]
) -> list[dict]:
    """Each held-out DFT defect's E_f from DFT and from each model (``checkpoints``: name ->
    file) at the DFT geometries: single points, so the comparison is the energy surface at the
    DFT minimum, not each model's own minimum."""
    defects = defect_energies(held_out, every)

    def e_f(energies: tuple[float, float, float], added: int, bulk: Atoms) -> float:
        defect, perfect, bulk_energy = energies
        return defect - perfect - added * bulk_energy / len(bulk)

    # every frame the E_f need (defects share their perfect cell and the bulk), each model
    # loaded once
    needed = list({id(a): a for entry in defects for a in entry["frames"]}.values())
    energies = {
        name: {
            id(a): float(e)
            for a, (e, _) in zip(needed, predictions(needed, checkpoint), strict=True)
        }
        for name, checkpoint in checkpoints.items()
        if needed
    }
    rows = []
    for entry in defects:
        frames = entry["frames"]
        row = {k: entry[k] for k in ("phase", "name", "kind")}
        dft = tuple(float(a.get_potential_energy()) for a in frames)
        row["dft_eV"] = e_f(dft, entry["added"], frames[2])
        for name in checkpoints:
            model = tuple(energies[name][id(a)] for a in frames)
            row[f"{name}_eV"] = e_f(model, entry["added"], frames[2])
            row[f"{name}_error_eV"] = row[f"{name}_eV"] - row["dft_eV"]
        rows.append(row)
    return rows


def phase_of(atoms: Atoms) -> str:
    """The phase a frame belongs to: the first word of its calculation's label."""
    return atoms.info.get("label", "").split(" ")[0]


def split_by_phase(
    frames: list[Atoms], held_out: list[str], host_trains: bool = False
) -> tuple[list[Atoms], list[Atoms]]:
    """Training and validation frames: a frame of a ``held_out`` phase (the first word of its
    calculation's label: ``Li3In2`` of ``Li3In2 v_Li_2c [DFT]``) is held out, so that
    validation sees a host the model did not train on. With ``host_trains``, only the held-out
    phases' defects validate and their perfect crystal trains (:func:`is_host_frame`)."""
    phase = [phase_of(atoms) for atoms in frames]
    valid_at = [
        p in held_out and not (host_trains and is_host_frame(a))
        for a, p in zip(frames, phase, strict=True)
    ]
    train = [a for a, v in zip(frames, valid_at, strict=True) if not v]
    valid = [a for a, v in zip(frames, valid_at, strict=True) if v]
    return train, valid


def is_host_frame(atoms: Atoms) -> bool:
    """A frame of a phase's perfect crystal, no defect in it: its bulk cell (``<phase> bulk
    [DFT]``) or its perfect supercell, at rest or rattled (``<phase> perfect supercell ...``)."""
    return atoms.info.get("label", "").split(" ")[1:2] in (["bulk"], ["perfect"])


def cross_validated(
    frames: list[Atoms], phases: list[str], settings: FineTuneSettings, root: Path
) -> CrossValidatedModel:
    """The model of every frame, and per phase two fine-tunings with the same settings (each
    reused on a rerun, :func:`fine_tuned_model`): one without the phase's frames, one without
    its defects only (where it has defects among the frames). Each phase's frames are checked
    before any training: a fold that could not be validated would otherwise fail hours in."""
    for phase in phases:
        if not comparable_frames(*split_by_phase(frames, [phase]))[1][1]:
            raise FineTuneError(
                f"--cross-validate {phase}: none of its frames has the DFT settings of the "
                "frames that would train without it"
            )
    validation, defects = {}, {}
    for phase in phases:
        logger.info("cross-validation: fine-tuning without %s", phase)
        validation[phase] = fine_tuned_model(*split_by_phase(frames, [phase]), settings, root)
        train, valid = split_by_phase(frames, [phase], host_trains=True)
        if valid:
            logger.info("cross-validation: fine-tuning without the defects of %s", phase)
            defects[phase] = fine_tuned_model(train, valid, settings, root)
    logger.info("fine-tuning on every frame")
    model = fine_tuned_model(frames, [], settings, root)
    return CrossValidatedModel(model=model, cross_validation=validation, defects_held_out=defects)


def ordering_energies(
    result: CrossValidatedModel, ground: tuple[str, Structure], other: tuple[str, Structure]
) -> list[dict]:
    """:func:`ordering_energy` of the base model and of every fine-tuned model of ``result``."""
    checkpoints = {"base": base_checkpoint(result.model.settings.base_model)}
    checkpoints["model"] = result.model.checkpoint
    for phase, held_out in result.cross_validation.items():
        checkpoints[f"without {phase}"] = held_out.checkpoint
    row = {"ground": ground[0], "other": other[0]}
    for name, checkpoint in checkpoints.items():
        logger.info("orderings: %s above %s with the %s model", other[0], ground[0], name)
        row[f"{name}_meV_atom"] = ordering_energy(checkpoint, ground[1], other[1])
    return [row]


def check_orderings(ground: Structure, other: Structure) -> None:
    """Two orderings must be of one composition: anything else compares no orderings."""
    if ground.composition.reduced_formula != other.composition.reduced_formula:
        raise FineTuneError(
            f"orderings of one composition, got {ground.composition.reduced_formula} and "
            f"{other.composition.reduced_formula}"
        )


def ordering_energy(
    checkpoint: str, ground: Structure, other: Structure, fmax=0.005
) -> float | None:
    """E(other) - E(ground) in meV/atom, each relaxed (cell and ions, its symmetry kept) with
    the checkpoint: two orderings of one composition, whose order a model must get right
    before its defect energies mean anything (7net-0 puts the PBE ground state of Li5In4
    9 meV/atom above another ordering, 7net-l3i5 6 meV/atom below it; PBE: 11 below).
    None where the two relax into one structure: then the model has no barrier between them
    and there is no ordering energy to give. Found the hard way: a model fine-tuned without
    Li3In2 slid two columns of the other Li5In4 ordering 0.8 A along its 3-fold axes into
    the ground state and reported +0.001 meV/atom (2026-12-06)."""
    from atomate2.ase.utils import AseRelaxer
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from sevenn.calculator import SevenNetCalculator

    check_orderings(ground, other)
    relaxer = AseRelaxer(
        SevenNetCalculator(checkpoint, device="cpu"), optimizer="BFGS", fix_symmetry=True
    )
    energies, relaxed = [], []
    for structure in (ground, other):
        result = relaxer.relax(structure, fmax=fmax, steps=500, final_atoms_object_file=None)
        if not result.is_force_converged:
            raise FineTuneError(f"{structure.composition.reduced_formula}: relaxation unconverged")
        energies.append(result.trajectory.frame_properties[-1]["energy"] / len(structure))
        relaxed.append(result.final_mol_or_struct)
    # tight: pymatgen's default tolerances match the two Li5In4 orderings as given
    same = StructureMatcher(ltol=0.02, stol=0.05, angle_tol=0.5, primitive_cell=False, scale=False)
    if same.fit(*relaxed):
        return None
    return 1000.0 * (energies[1] - energies[0])
