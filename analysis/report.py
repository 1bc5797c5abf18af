"""Results as JSON, a readable table (Markdown and CSV) and a bar chart."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from carrierflow.analysis.documents import checked
from carrierflow.analysis.flags import FlagCode, codes, texts

CSV_COLUMNS = [
    "phase",
    "defect",
    "kind",
    "multiplicity",
    "formation_energy_eV",
    "local_formation_energy_eV",
    "screen_formation_energy_eV",
    "screen_error_eV",
    "refined_for",
    "converged",
    "steps",
    "max_displacement_A",
    "ended_at",
    "flags",
    "search",
]


def _phases(results: dict) -> list[dict]:
    return [results["reference"], *results["hosts"]]


def _ranked_in_dft_cell(results: dict) -> bool:
    """Whether DFT also took the stand-in's lowest in the DFT cell (``screen.chosen_by``; a
    document before 2026-12-05 has none: DFT took the screen's lowest only)."""
    return any(
        (d.get("screen") or {}).get("chosen_by") for p in _phases(results) for d in p["defects"]
    )


def _fmt(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def rows(results: dict) -> list[dict]:
    """One row per defect, in CSV_COLUMNS."""
    out = []
    for phase in _phases(results):
        name = phase["formula"] + (" (reference)" if phase is results["reference"] else "")
        for d in phase["defects"]:
            out.append(
                {
                    "phase": name,
                    "defect": d["name"],
                    "kind": d["kind"],
                    "multiplicity": d["multiplicity"],
                    "formation_energy_eV": d["formation_energy_eV"],
                    "local_formation_energy_eV": d["local_formation_energy_eV"],
                    "screen_formation_energy_eV": (d.get("screen") or {}).get(
                        "formation_energy_eV"
                    ),
                    "screen_error_eV": (d.get("screen") or {}).get("error_eV"),
                    "refined_for": _refined_for(d.get("screen")),
                    "converged": d["converged"],
                    "steps": d["steps"],
                    "max_displacement_A": d["max_displacement_A"],
                    "ended_at": d["ended_at"],
                    "flags": "; ".join(texts(d["flags"])),
                    "search": _search(d.get("search")),
                }
            )
    return out


# what chose a refined defect: the screen's ranking (large cell) or the stand-in's own in the
# DFT supercell; the two disagree where the cells differ (Li5In4's Li_i1 and Li_i5, 2026-12-04)
_RANKINGS = {"screen": "screen", "dft_cell": "DFT cell"}


def _refined_for(screen: dict | None) -> str:
    """``screen``, ``DFT cell`` or ``screen, DFT cell``: whose lowest DFT refined this defect
    as (empty for a document without ``chosen_by``)."""
    return ", ".join(_RANKINGS[c] for c in (screen or {}).get("chosen_by") or [])


def _search(search: dict | None) -> str:
    """``3 starts, 2 states, spread 0.18 eV, won by neighbours -30%`` (with a small-cell screen:
    ``...; final cell: first start``)."""
    if not search:
        return ""
    final = search.get("final_cell_winner")
    return (
        f"{len(search['starts'])} starts, {search['distinct_states']} "
        f"state{'s' if search['distinct_states'] > 1 else ''}, spread "
        f"{search['spread_eV']:.3f} eV, won by {search['winner']}"
        + (f"; final cell: {final}" if final else "")
    )


def _dft_lines(results: dict) -> list[str]:
    settings = results["calculator"].get("settings")
    if not settings:
        return []
    overrides = results["calculator"].get("overrides") or {}
    changed = ", ".join(f"{k} = {v}" for k, v in overrides.items()) or "none"
    versions = "; ".join(results.get("code_versions") or []) or "not recorded"
    return [
        f"DFT settings: cut-off {settings['encut_eV']:g} eV, Gamma-centred k-mesh of spacing "
        f"{settings['kspacing']:g} x 2π/Å, SCF {settings['ediff_eV']:g} eV, "
        f"Methfessel-Paxton order {settings['smearing'][-1]} with σ = {settings['sigma_eV']:g} eV; "
        f"changed from the study's: {changed}. Code: {versions}.",
    ]


def markdown_table(results: dict) -> str:
    """The readable report: a verdict table, then every defect."""
    calc = results["calculator"]
    model = f" ({calc['model']})" if calc.get("model") else ""
    lines = [
        f"# Dominant {results['species']} carrier — {results['system']}, "
        f"{calc['name']}{model}, T = {results['temperature_K']:g} K",
        "",
        f"Calculator uncertainty: {calc['uncertainty_eV']:g} eV; "
        f"forces relaxed to {calc['fmax_eV_A']:g} eV/Å.",
        *_dft_lines(results),
        "",
        "| phase | source | supercell atoms (image distance) | lowest vacancy E_f (eV) "
        "| lowest interstitial E_f (eV) | dominant carrier | margin (eV) "
        "| vacancy vs reference (eV) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for phase in _phases(results):
        src = phase["source"]
        source = f"{src['kind']}: {src['id']}"
        sc = phase["supercell"]
        ref = " (reference)" if phase is results["reference"] else ""
        lines.append(
            f"| {phase['formula']}{ref} | {source} | {sc['natoms']} "
            f"({sc['min_image_distance_A']:.1f} Å) "
            f"| {_fmt(phase['lowest_eV']['vacancy'])} ({phase['lowest_defect']['vacancy']}) "
            f"| {_fmt(phase['lowest_eV']['interstitial'])} "
            f"({phase['lowest_defect']['interstitial']}) "
            f"| **{phase['dominant_carrier']}** | {_fmt(phase['margin_eV'])} "
            f"| {_fmt(phase.get('vacancy_vs_reference_eV'))} |"
        )
    refined = results.get("refined_from")
    screen_head = " stand-in E_f (eV) | stand-in error (eV) |" if refined else ""
    chosen = _ranked_in_dft_cell(results)
    screen_head += " lowest in |" if chosen else ""
    searched = any(r["search"] for r in rows(results))
    screen_head += " search |" if searched else ""
    lines += [
        "",
        "| phase | defect | kind | mult. | E_f (eV) | local E_f (eV) |"
        + screen_head
        + " converged | steps | max move (Å) | ended at | flags |",
        "|---|---|---|---|---|---|"
        + ("---|---|" if refined else "")
        + ("---|" if chosen else "")
        + ("---|" if searched else "")
        + "---|---|---|---|---|",
    ]
    for r in rows(results):
        screen = (
            f" {_fmt(r['screen_formation_energy_eV'])} | {_fmt(r['screen_error_eV'])} |"
            if refined
            else ""
        )
        screen += f" {r['refined_for'] or '-'} |" if chosen else ""
        screen += f" {r['search'] or '-'} |" if searched else ""
        lines.append(
            f"| {r['phase']} | {r['defect']} | {r['kind']} | {r['multiplicity']} "
            f"| {_fmt(r['formation_energy_eV'])} | {_fmt(r['local_formation_energy_eV'])} |"
            + screen
            + f" {'yes' if r['converged'] else 'NO'} | {r['steps']} "
            f"| {_fmt(r['max_displacement_A'], 2)} | {r['ended_at'] or '-'} | {r['flags'] or ''} |"
        )
    notes = [p for p in _phases(results) if p["source"]["kind"] == "fixture"]
    if notes:
        lines += ["", "Structures from carrierflow's fixtures (not Materials Project data):"]
        lines += [f"- {p['formula']}: {p['source']['provenance']}" for p in notes]
    lines += ["", "Verdicts:"]
    lines += [f"- {p['formula']}: {p['verdict_reason']}" for p in _phases(results)]
    if refined:
        calc = refined["calculator"]
        name = calc["name"] + (f" {calc['model']}" if calc.get("model") else "")
        in_cell = (
            " and from its relaxations of every candidate in the DFT supercell"
            if _ranked_in_dft_cell(results)
            else ""
        )
        lines += [
            "",
            f"Refined with DFT: the lowest {refined['refine']['k']} vacancies and interstitials "
            f"of each phase from the {name} screen{in_cell}, in DFT supercells (images ≥ "
            f"{refined['refine']['min_image_distance_A']:g} Å, ≤ "
            f"{refined['refine']['max_atoms']} atoms), each started from the stand-in's relaxation "
            "in the same cell. Stand-in error = stand-in E_f − DFT E_f, same cell"
            + ("; 'lowest in' says whose ranking chose each defect" if chosen else "")
            + ". The stand-in's own verdicts:",
        ]
        lines += [
            f"- {formula}: {v['dominant_carrier']} (margin {_fmt(v['margin_eV'])} eV)"
            for formula, v in refined["verdicts"].items()
        ]
    lines += _small_cell_lines(results)
    lines += _learning_lines(results)
    lines += _transport_lines(results)
    return "\n".join(lines) + "\n"


def _small_cell_lines(results: dict) -> list[str]:
    """The small-cell screen (--screen-image-distance): what every candidate reached there,
    and which states were relaxed again in the final cell."""
    phases = [p for p in _phases(results) if p.get("screen_supercell")]
    if not phases:
        return []
    lines = [
        "",
        "Small-cell screen: every start of every candidate relaxed in a small supercell, the "
        "lowest states of each kind again in the final one, starting from their small-cell "
        "geometry (E_f in eV, in the small cell):",
    ]
    for phase in phases:
        small = phase["screen_supercell"]
        reached = ", ".join(
            f"{d['name']} {_fmt(d['ranking_energy_eV'])}"
            + (" (a state above)" if FlagCode.SHARED_STATE in codes(d["flags"]) else "")
            for d in phase["screened"]
        )
        kept = ", ".join(d["name"] for d in phase["defects"])
        lines.append(
            f"- {phase['formula']}: {small['natoms']} atoms ({small['min_image_distance_A']:.1f} "
            f"Å): {reached}; again in {phase['supercell']['natoms']} atoms: {kept}"
        )
    return lines


def _learning_lines(results: dict) -> list[str]:
    """What the screen learnt from DFT (--learn): each round's model and verdicts, and every
    DFT defect beside the fine-tuned screen."""
    learned = results.get("learned")
    if not learned:
        return []
    lines = [
        "",
        "## Learned from DFT",
        "",
        f"The stand-in was fine-tuned {len(learned['rounds'])} time(s) on the DFT frames of this "
        "system (SevenNet's trainer, its fine-tuning preset); each round screened every phase "
        "again and sent to DFT what it then put lowest"
        + (" there or in the DFT supercell." if _ranked_in_dft_cell(results) else "."),
        "",
        "| round | model (SHA-256) | train / validation frames | validation E RMSE (eV/atom) "
        "| validation F RMSE (eV/Å) | verdicts | sent to DFT |",
        "|---|---|---|---|---|---|---|",
    ]
    for done in learned["rounds"]:
        model, errors = done["model"], done["model"]["valid_errors"]
        verdicts = "; ".join(
            f"{f} {v['dominant_carrier']} ({_fmt(v['margin_eV'])})"
            for f, v in done["verdicts"].items()
        )
        sent = "; ".join(f"{p} {', '.join(n)}" for p, n in done["to_refine"].items()) or "-"
        lines.append(
            f"| {done['round']} | {model['checkpoint_sha256'][:12]} "
            f"| {model['train_frames']} / {model['valid_frames']} "
            f"| {_fmt(errors.get('energy_rmse_eV_atom'), 4)} "
            f"| {_fmt(errors.get('force_rmse_eV_A'))} | {verdicts} | {sent} |"
        )
    lines += [
        "",
        "| phase | defect | kind | DFT E_f (eV) | fine-tuned screen E_f (eV) | difference (eV) |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {d['phase']} | {d['name']} | {d['kind']} | {_fmt(d['dft_eV'])} "
        f"({d['dft_supercell_atoms']} atoms) | {_fmt(d['fine_tuned_eV'])} "
        f"({d['fine_tuned_supercell_atoms']} atoms) | {_fmt(d['difference_eV'])} |"
        for d in learned["defects"]
    ]
    notes = [r["note"] for r in learned["rounds"] if r.get("note")]
    lines += ["", f"Difference: {learned['note']}.", *notes]
    return lines


def _sci(value) -> str:
    return "-" if value is None else f"{value:.2e}"


def _transport_lines(results: dict) -> list[str]:
    """Migration barriers, activation energies and diffusion coefficients (--migration)."""
    migration = results.get("migration")
    if not migration:
        return []
    lines = [
        "",
        f"## Transport at T = {results['temperature_K']:g} K",
        "",
        f"Climbing-image NEB ({migration['images']} images, forces to "
        f"{migration['fmax_eV_A']:g} eV/Å) of the nearest-neighbour hops of each phase's lowest "
        "vacancy and interstitial, endpoints relaxed in the defect supercell (a defect that left "
        "its site hops to symmetry images of its relaxed state). E_a = E_f + E_m; "
        "D = (1/6) Σ z a² ν exp(−E_a/k_BT) over the hops that count (converged, a saddle "
        "between endpoints that stayed put), "
        f"ν = {migration['attempt_frequency_Hz']:.2g} Hz.",
        "",
        "| phase | carrier | from | E_f (eV) | E_m (eV) | E_a (eV) | limiting hop "
        "| D (cm²/s) | dominant in transport |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    hop_lines = [
        "",
        "| phase | hop | z | length (Å) | E_m (eV) | reverse (eV) | converged | counts | flags |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for phase in _phases(results):
        transport = phase.get("transport")
        if not transport:
            continue
        for carrier in transport["carriers"]:
            lines.append(
                f"| {phase['formula']} | {carrier['kind']} | {carrier['defect'] or '-'} "
                f"| {_fmt(carrier['formation_energy_eV'])} "
                f"| {_fmt(carrier['migration_barrier_eV'])} "
                f"| {_fmt(carrier['activation_energy_eV'])} | {carrier['limiting_hop'] or '-'} "
                f"| {_sci(carrier['diffusion_cm2_s'])} "
                f"| **{transport['dominant_transport_carrier']}** |"
            )
            notes += [
                f"- {phase['formula']} {carrier['kind']}: {f}" for f in texts(carrier["flags"])
            ]
            for hop in carrier["hops"]:
                hop_lines.append(
                    f"| {phase['formula']} | {hop['name']} | {hop['multiplicity']} "
                    f"| {hop['length_A']:.2f} | {_fmt(hop['barrier_eV'])} "
                    f"| {_fmt(hop['reverse_barrier_eV'])} | {'yes' if hop['converged'] else 'NO'} "
                    f"| {'yes' if hop['counts'] else 'no'} "
                    f"| {'; '.join(texts(hop['flags']))} |"
                )
    return lines + hop_lines + (["", "Transport notes:", *notes] if notes else [])


def partial_table(partial: dict) -> str:
    """A run that has not finished: what it has computed so far."""
    queued = partial.get("jobs")
    finish = (
        "The queue's runner finishes it; after fixing the cause of a failure, "
        "`jf job rerun <db_id>` reruns that job alone."
        if queued is not None
        else "Rerun the same `carrierflow run` to finish: stored calculations are reused."
    )
    lines = [
        f"# Partial results — {partial['system']}, {partial['label']} (run not finished)",
        "",
        f"{partial['calculations']} calculations stored; phases complete: "
        f"{', '.join(partial['finished_phases']) or 'none'}. {finish}",
        "",
        "| phase | defect | kind | code | E_f (eV) | ranking E_f (eV) | converged | flags |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for d in sorted(partial["defects"], key=lambda d: (d["host"], d["kind"], d["name"])):
        runs = d.get("provenance", {}).get("runs") or []
        code = runs[0]["code_version"] if runs else "stand-in"
        ranking = d["local"]["formation_energy_eV"] if d.get("local") else d["formation_energy_eV"]
        lines.append(
            f"| {d['host']} | {d['name']} | {d['kind']} | {code} "
            f"| {_fmt(d['formation_energy_eV'])} | {_fmt(ranking)} "
            f"| {'yes' if d['converged'] else 'NO'} | {'; '.join(texts(d['flags']))} |"
        )
    if partial["failures"]:
        lines += ["", "Failed calculations (rerun after fixing the cause):"]
        lines += [f"- {f['label']} ({f['task']}): {f['error']}" for f in partial["failures"]]
    if queued:
        lines += ["", "| queue id | job | state | SLURM id | error |", "|---|---|---|---|---|"]
        for j in queued:
            if j["state"] == "COMPLETED":
                continue
            lines.append(
                f"| {j['db_id']} | {j['name']} | {j['state']} | {j['scheduler_id'] or '-'} "
                f"| {j.get('error') or ''} |"
            )
        for j in queued:
            if j.get("stderr_tail"):
                lines += ["", f"stderr of {j['name']} (SLURM job {j['scheduler_id']}):", ""]
                lines += [f"    {line}" for line in j["stderr_tail"]]
        done = sum(j["state"] == "COMPLETED" for j in queued)
        lines += ["", f"{done} of {len(queued)} queued jobs completed."]
    return "\n".join(lines) + "\n"


def csv_table(results: dict) -> str:
    """Every defect as CSV."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(rows(results))
    return buffer.getvalue()


def plot_formation_energies(results: dict, path: Path) -> None:
    """A bar chart of E_f per phase and defect, vacancies and interstitials side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = _phases(results)
    fig, axes = plt.subplots(
        1, len(phases), figsize=(3.2 * len(phases) + 1, 4.2), sharey=True, squeeze=False
    )
    colours = {"vacancy": "#3b6fb6", "interstitial": "#d9822b"}
    yardstick = results["reference"]["lowest_eV"]["vacancy"]
    for ax, phase in zip(axes[0], phases, strict=True):
        # a relaxation whose atoms ran together has no energy worth a bar (it is in the table)
        defects = [d for d in phase["defects"] if FlagCode.COLLAPSED not in codes(d["flags"])]
        x = range(len(defects))
        heights = [d["ranking_energy_eV"] for d in defects]
        bars = ax.bar(x, heights, color=[colours[d["kind"]] for d in defects])
        for bar, d in zip(bars, defects, strict=True):
            if d["flags"]:
                bar.set_hatch("//")
            if d["local_formation_energy_eV"] is not None:
                ax.plot(bar.get_x() + bar.get_width() / 2, d["formation_energy_eV"], "kx")
            if d.get("search"):
                # the whisker reaches the highest state another start ended in
                centre = bar.get_x() + bar.get_width() / 2
                ax.vlines(
                    centre,
                    d["ranking_energy_eV"],
                    max(d["search"]["formation_energies_eV"]),
                    color="black",
                    linewidth=1,
                )
            if d.get("screen"):
                ax.plot(
                    bar.get_x() + bar.get_width() / 2,
                    d["screen"]["formation_energy_eV"],
                    "o",
                    color="white",
                    markeredgecolor="black",
                )
        ax.set_xticks(list(x), [d["name"] for d in defects], rotation=60, ha="right", fontsize=8)
        ax.axhline(0, color="black", linewidth=0.8)
        if yardstick is not None and phase is not results["reference"]:
            ax.axhline(yardstick, color=colours["vacancy"], linestyle="--", linewidth=1)
        title = phase["formula"] + (" (ref.)" if phase is results["reference"] else "")
        ax.set_title(f"{title}\n{phase['dominant_carrier']}", fontsize=10)
    axes[0][0].set_ylabel("formation energy (eV)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()]
    labels = list(colours)
    handles.append(plt.Rectangle((0, 0), 1, 1, fill=False, hatch="//"))
    labels.append("flagged (see table)")
    handles.append(plt.Line2D([0], [0], color=colours["vacancy"], linestyle="--"))
    labels.append(f"{results['reference']['formula']} vacancy (yardstick)")
    if any(d.get("search") for phase in phases for d in phase["defects"]):
        handles.append(plt.Line2D([0], [0], color="black", linewidth=1))
        labels.append("highest state of the other starts")
    if results.get("refined_from"):
        handles.append(
            plt.Line2D([0], [0], marker="o", color="white", markeredgecolor="black", linestyle="")
        )
        labels.append("stand-in, same cell")
    fig.legend(handles, labels, loc="upper right", fontsize=8)
    calc = results["calculator"]
    fig.suptitle(
        f"{results['species']} defects, {calc['name']} {calc.get('model') or ''}", fontsize=11
    )
    fig.tight_layout(rect=(0, 0, 0.88, 0.95))
    fig.savefig(path, dpi=130)
    plt.close(fig)


def plot_barriers(results: dict, path: Path) -> bool:
    """The energy profile of every hop, one panel per phase; False when there are none."""
    phases = [p for p in _phases(results) if p.get("transport")]
    if not phases:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(phases), figsize=(3.6 * len(phases) + 1, 3.8), sharey=True, squeeze=False
    )
    styles = {"vacancy": "-", "interstitial": "--"}
    for ax, phase in zip(axes[0], phases, strict=True):
        for carrier in phase["transport"]["carriers"]:
            for hop in carrier["hops"]:
                if not hop["energies_eV"]:
                    continue
                ax.plot(
                    hop["path_A"],
                    hop["energies_eV"],
                    styles[carrier["kind"]],
                    marker="o" if hop["converged"] else "x",
                    markersize=4,
                    label=hop["name"] + ("" if hop["converged"] else " (not converged)"),
                )
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_xlabel("path (Å)")
        ax.set_title(phase["formula"], fontsize=10)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("energy above the start (eV)")
    fig.suptitle("migration barriers (— vacancy hops, -- interstitial hops)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return True


def strict_json(document) -> str:
    """JSON that strict parsers accept: a non-finite number (which no calculation should give)
    is written as null, never as NaN or Infinity."""

    def finite(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: finite(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [finite(v) for v in value]
        return value

    return json.dumps(finite(document), indent=2, allow_nan=False) + "\n"


def write_report(results: dict, output: Path) -> dict[str, Path]:
    """Write results.json, results.md, results.csv, formation_energies.png and, with
    migration barriers, barriers.png."""
    output.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": output / "results.json",
        "markdown": output / "results.md",
        "csv": output / "results.csv",
        "plot": output / "formation_energies.png",
    }
    # checked against the typed document before anything is written (analysis/documents.py)
    results = checked(json.loads(strict_json(results)))
    paths["json"].write_text(strict_json(results))
    paths["markdown"].write_text(markdown_table(results))
    paths["csv"].write_text(csv_table(results))
    plot_formation_energies(results, paths["plot"])
    # what an earlier command left that these results do not replace: the partial results of
    # this run while it ran, an earlier run's barriers in a reused --output
    for stale in ("results.partial.json", "results.partial.md", "barriers.png"):
        (output / stale).unlink(missing_ok=True)
    if plot_barriers(results, output / "barriers.png"):
        paths["barriers"] = output / "barriers.png"
    return paths
