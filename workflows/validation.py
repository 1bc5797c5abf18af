"""A model against DFT frames: its forces, its energies along each DFT calculation and its
formation energies at the DFT geometries, with the frames it trained on counted apart.

Fine-tuning reports errors on the frames it held out (``carrierflow finetune --hold-out``); a
data set made later (a loop's, another machine's) is the other honest test, and the only one of a
shipped model. Energies are compared as differences within a data set (along a calculation, from
its last frame; formation energies), so no per-element offset between the model's energy scale and
DFT's enters. A frame a model trained on is *seen*: the tables give, per model, how many frames of
each calculation it saw, and a formation energy whose defect frame it saw is marked in-sample.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import read

from carrierflow.workflows.codes.sevennet import FINE_TUNED_MODELS, sevennet_checkpoint
from carrierflow.workflows.finetune import (
    TRAINED_ON,
    FineTuneError,
    comparable_frames,
    formation_energy_errors,
    predictions,
)

VALIDATION_VERSION = 1


def training_frames(model: str) -> list[Atoms] | None:
    """The frames a model was fine-tuned on: of a shipped carrierflow model's data set (its
    card), those the training rules keep (:func:`comparable_frames`: its data set also holds
    cell relaxations of another DFT setting and bulk cells, which never trained); the
    ``train.extxyz`` beside a checkpoint that ``carrierflow finetune`` or a ``--learn`` loop
    wrote; ``[]`` for sevenn's own models (trained on public data sets, none of carrierflow's
    frames); None when unknown (a checkpoint file from elsewhere). A fine-tuning writes the
    perfect supercells it trained on (weighted) to ``references.extxyz`` beside it, and with
    ``--defect-weight`` each defect relaxation's last frame to ``ends.extxyz``: seen too."""
    if model in FINE_TUNED_MODELS:
        checkpoint = Path(sevennet_checkpoint(model))
        card = json.loads(checkpoint.with_name(f"{model}.card.json").read_text())
        data = read(checkpoint.with_name(card["data"]), index=":", format="extxyz")
        return comparable_frames(data)[1][0]
    if not Path(model).is_file():
        return []
    files = [Path(model).with_name(name) for name in TRAINED_ON.values()]
    if not files[0].is_file():  # no train.extxyz: not a checkpoint carrierflow trained
        return None
    return [
        atoms
        for path in files
        if path.is_file() and path.stat().st_size
        for atoms in read(path, index=":", format="extxyz")
    ]


def frame_key(atoms: Atoms) -> str:
    """A frame's identity across files: its atoms, cell and positions (to 1e-5 A) and DFT
    settings and k-mesh; extended XYZ keeps 8 decimals, so a frame written twice has one key.
    Not its energy: a fine-tuning's ``train.extxyz`` holds energies shifted by the per-element
    constants."""
    payload = [
        atoms.numbers.tolist(),
        np.round(atoms.cell.array, 5).tolist(),
        np.round(atoms.positions, 5).tolist(),
        str(atoms.info.get("dft_settings", "")),
        str(atoms.info.get("kpts", "")),
    ]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()


def _calculations(frames: list[Atoms]) -> dict[tuple[str, str, str], list[int]]:
    """Frame indices of each calculation's run (label, task, run), in file order."""
    runs: dict[tuple[str, str, str], list[int]] = {}
    for index, atoms in enumerate(frames):
        info = atoms.info
        key = (str(info.get("label", "")), str(info.get("task", "")), str(info.get("run", "")))
        runs.setdefault(key, []).append(index)
    return runs


def _rmse(values) -> float:
    return float(np.sqrt(np.mean(np.square(values)))) if len(values) else 0.0


def validate(frames: list[Atoms], models: list[str]) -> dict:
    """Every model against the frames: per calculation, the frames each model saw in training,
    the error of energies relative to the calculation's last frame (RMSE and largest) and of the
    forces (RMSE); per DFT defect, E_f at the DFT geometry (:func:`formation_energy_errors`)."""
    if not frames:
        raise FineTuneError("the data set has no frames")
    keys = [frame_key(atoms) for atoms in frames]
    checkpoints = {model: sevennet_checkpoint(model) for model in models}
    seen: dict[str, set[str] | None] = {}
    predicted = {}
    for model in models:
        trained = training_frames(model)
        seen[model] = None if trained is None else {frame_key(a) for a in trained}
        predicted[model] = predictions(frames, checkpoints[model])
    dft_energy = np.array([a.get_potential_energy() for a in frames])
    force_errors = {
        model: [(f - atoms.get_forces()).ravel() for (_, f), atoms in zip(out, frames, strict=True)]
        for model, out in predicted.items()
    }
    calculations = []
    for (label, task, run), indices in _calculations(frames).items():
        row: dict = {"label": label, "task": task, "run": run, "frames": len(indices)}
        last = indices[-1]
        for model in models:
            energies = np.array([predicted[model][i][0] for i in indices])
            relative = (energies - energies[-1]) - (dft_energy[indices] - dft_energy[last])
            forces = np.concatenate([force_errors[model][i] for i in indices])
            known = seen[model]
            row[model] = {
                "seen_frames": None if known is None else sum(keys[i] in known for i in indices),
                "relative_energy_rmse_eV": _rmse(relative[:-1]) if len(indices) > 1 else None,
                "relative_energy_max_eV": (
                    float(np.abs(relative).max()) if len(indices) > 1 else None
                ),
                "force_rmse_eV_A": _rmse(forces),
            }
        calculations.append(row)
    defects = formation_energy_errors(frames, frames, checkpoints)
    finals = {
        (a.info.get("label", ""), a.info.get("task", "")): keys[i] for i, a in enumerate(frames)
    }
    for row in defects:
        key = finals[(f"{row['phase']} {row['name']} [DFT]", "ion_relax")]
        row["seen_by"] = [m for m in models if seen[m] is not None and key in seen[m]]
        row["unknown_training"] = [m for m in models if seen[m] is None]
    summary = {}
    for model in models:
        forces = np.concatenate(force_errors[model])
        unseen = [r[f"{model}_error_eV"] for r in defects if model not in r["seen_by"]]
        summary[model] = {
            "checkpoint": checkpoints[model],
            "training_frames_known": seen[model] is not None,
            "seen_frames": None if seen[model] is None else sum(k in seen[model] for k in keys),
            "force_rmse_eV_A": _rmse(forces),
            "unseen_defect_mae_eV": float(np.mean(np.abs(unseen))) if unseen else None,
        }
    return {
        "validation_version": VALIDATION_VERSION,
        "frames": len(frames),
        "models": summary,
        "calculations": calculations,
        "defects": defects,
    }


def markdown(result: dict, data: str) -> str:
    """The tables of a validation: per model, per DFT defect, per calculation."""
    models = list(result["models"])

    def number(value, digits=3) -> str:
        return "–" if value is None else f"{value:.{digits}f}"

    def seen(value) -> str:
        return "unknown" if value is None else str(value)

    lines = [
        f"# Models against the DFT frames of {data}",
        "",
        f"{result['frames']} frames. *Seen*: frames the model trained on (unknown for a checkpoint "
        "without its training frames). Energies as differences: along each calculation from its "
        "last frame; E_f at the DFT geometry (single points).",
        "",
        "| model | frames seen | force RMSE (eV/Å) | E_f MAE, unseen defects (eV) |",
        "|---|---|---|---|",
    ]
    for model, row in result["models"].items():
        lines.append(
            f"| {model} | {seen(row['seen_frames'])} | {number(row['force_rmse_eV_A'])} "
            f"| {number(row['unseen_defect_mae_eV'])} |"
        )
    lines += [
        "",
        "| defect | kind | E_f DFT (eV) | " + " | ".join(f"{m} (error)" for m in models) + " |",
        "|---|---|---|" + "---|" * len(models),
    ]
    for row in result["defects"]:
        cells = []
        for model in models:
            mark = " in-sample" if model in row["seen_by"] else ""
            cells.append(f"{row[f'{model}_eV']:.3f} ({row[f'{model}_error_eV']:+.3f}){mark}")
        lines.append(
            f"| {row['phase']} {row['name']} | {row['kind']} | {row['dft_eV']:.3f} | "
            + " | ".join(cells)
            + " |"
        )
    lines += [
        "",
        "| calculation | frames | "
        + " | ".join(f"{m}: seen, ΔE RMSE / max (eV), F RMSE (eV/Å)" for m in models)
        + " |",
        "|---|---|" + "---|" * len(models),
    ]
    for row in result["calculations"]:
        cells = [
            f"{seen(row[m]['seen_frames'])}, {number(row[m]['relative_energy_rmse_eV'])} / "
            f"{number(row[m]['relative_energy_max_eV'])}, {number(row[m]['force_rmse_eV_A'])}"
            for m in models
        ]
        lines.append(
            f"| {row['label']} ({row['run']}) | {row['frames']} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> bool:
    """E_f of each model against DFT's at the DFT geometries (hollow: in-sample); False when the
    data set has no DFT defect."""
    if not result["defects"]:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    dft = [row["dft_eV"] for row in result["defects"]]
    for number, model in enumerate(result["models"]):
        color = f"C{number}"
        for row in result["defects"]:
            marker = "o" if row["kind"] == "vacancy" else "s"
            hollow = model in row["seen_by"]
            ax.plot(
                row["dft_eV"],
                row[f"{model}_eV"],
                marker,
                color=color,
                markerfacecolor="none" if hollow else color,
            )
        ax.plot([], [], "o", color=color, label=model)
    low, high = min(dft) - 0.3, max(dft) + 0.3
    ax.plot([low, high], [low, high], color="black", linewidth=0.6)
    ax.set_xlabel("E_f DFT (eV)")
    ax.set_ylabel("E_f model at the DFT geometry (eV)")
    ax.set_title("● vacancy ■ interstitial; hollow: in-sample", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return True
