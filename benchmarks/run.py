"""carrierflow's speed targets, measured as ratios in one run on this machine.

    .venv/bin/python benchmarks/run.py                       # the Li-In answer, default calculator
    .venv/bin/python benchmarks/run.py --system Cu-Au --calculator emt   # the harness in a minute

Measures, in one run: the time from command start to results.json of ``carrierflow run`` (model
loading included), the naive baseline (benchmarks/naive.py: the same structures relaxed one by one
with ASE BFGS, the model loaded per structure; with ``--starts N`` in ``--run-options`` the naive
search, every start in the final cell, compared on each phase's lowest E_f per kind) and the
agreement of their formation energies, the
workflow overhead (wall time not spent in calculations, start-up and model loading), the VASP job
count after an interstitial pre-screen against every candidate, and the cost of one force call
against supercell size. Prints a table, writes JSON, and ends with the line

    time_to_answer_s=<x> speedup_vs_naive=<y> overhead_fraction=<z>
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from carrierflow.workflows.codes import DEFAULT_CODE

HERE = Path(__file__).resolve().parent
TARGETS = {"time_to_answer_s": 180.0, "speedup_vs_naive": 4.0, "overhead_fraction": 0.10}
SAME_ENERGY_EV = 0.01
VASP_BULK_JOBS = 3  # VaspMakers.bulk_relax: two cell relaxations and a static


def machine() -> dict:
    """What the numbers were measured on."""
    model = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            ln.split(":", 1)[1].strip()
            for ln in cpuinfo.read_text().splitlines()
            if ln.startswith("model name")
        ]
        model = names[0] if names else model
    import torch

    return {
        "cpu": model,
        "cores": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def calculator_args(args: argparse.Namespace) -> list[str]:
    return ["--calculator", args.calculator, *(["--model", args.model] if args.model else [])]


def timed(command: list[str]) -> float:
    """Run a command, its progress shown, and return its wall time."""
    started = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - started


def lowest_states(results: dict) -> dict:
    """Per phase (the reference first): its supercell, each kind's lowest defect and E_f, and
    the margin: the verdict table, kept with the timing that made it."""
    return {
        phase["formula"]: {
            "supercell_atoms": phase["supercell"]["natoms"],
            "image_distance_A": phase["supercell"]["min_image_distance_A"],
            "lowest": {
                kind: [phase["lowest_defect"][kind], energy]
                for kind, energy in phase["lowest_eV"].items()
            },
            "dominant_carrier": phase["dominant_carrier"],
            "margin_eV": phase["margin_eV"],
        }
        for phase in [results["reference"], *results["hosts"]]
    }


def time_to_answer(args: argparse.Namespace, work: Path) -> dict:
    """``carrierflow run`` from command start to results.json, in a fresh store."""
    command = [
        sys.executable,
        "-m",
        "carrierflow.workflows.cli",
        "run",
        "--system",
        args.system,
        *calculator_args(args),
        "--store",
        str(work / "store"),
        "--output",
        str(work / "out"),
        *shlex.split(args.run_options),
    ]
    wall = timed(command)
    results = json.loads((work / "out" / "results.json").read_text())
    seconds = calculation_seconds(work / "store")
    repeated = repeated_states(results)
    return {
        "wall_s": wall,
        "compute_s": sum(s for s, _ in seconds.values()),
        # a small-cell screen's relaxations are labelled "(screen)", its states relaxed again in
        # the final cell "[from <start>]"; the rest is what a single-start run computes too
        "screen_compute_s": sum(s for label, (s, _) in seconds.items() if "(screen)" in label),
        "carried_compute_s": sum(s for label, (s, _) in seconds.items() if "[from " in label),
        "force_calls": sum(n for _, n in seconds.values()),
        "repeated_state_s": sum(seconds.get(label, (0.0, 0))[0] for label in repeated),
        "repeated_states": repeated,
        "results": results,
    }


def calculation_seconds(store_dir: Path) -> dict[str, tuple[float, int]]:
    """Seconds spent inside each calculation, and its ionic steps, from the run's store."""
    from carrierflow.workflows.store import open_store

    store = open_store(store_dir)
    docs = list(store.query({"output.fingerprint": {"$exists": True}}, properties=["output"]))
    outputs = [d["output"] for d in docs if not d["output"].get("reused")]
    return {o["label"]: (o["elapsed_s"], o["steps"]) for o in outputs}


def repeated_states(results: dict) -> list[str]:
    """Labels of the defect relaxations that ended in a state an earlier candidate had reached:
    the time a lever that drops duplicate candidates early could save at most."""
    from carrierflow.analysis.flags import FlagCode, codes

    return [
        f"{phase['label']} {defect['name']}"
        for phase in [results["reference"], *results["hosts"]]
        for defect in phase["defects"]
        if FlagCode.SHARED_STATE in codes(defect["flags"])
    ]


def start_up(args: argparse.Namespace) -> float:
    """Python start, imports, model loading and a first force call: what a run pays once."""
    code = (
        "import sys; from carrierflow.workflows.cli import main; "
        "from carrierflow.workflows.calculators import Calculator; "
        "from carrierflow.structures.presets import SYSTEMS; "
        "from carrierflow.structures.sources import load_structure; "
        "from pymatgen.io.ase import AseAtomsAdaptor; "
        f"c = Calculator({args.calculator!r}, model={args.model!r}); "
        f"s = load_structure(SYSTEMS[{args.system!r}].reference)[0]; "
        "a = AseAtomsAdaptor.get_atoms(s); a.calc = c.makers('static')[0]._get_calculator(); "
        "a.get_forces()"
    )
    return timed([sys.executable, "-c", code])


def starts_option(run_options: str) -> int:
    """The ``--starts`` of the run's options (1 without it)."""
    words = shlex.split(run_options)
    return int(words[words.index("--starts") + 1]) if "--starts" in words else 1


def naive_baseline(args: argparse.Namespace, work: Path) -> dict:
    """The naive script, with as many starts per candidate as the run (the naive search)."""
    work.mkdir(parents=True, exist_ok=True)
    output = work / "naive.json"
    command = [
        sys.executable,
        str(HERE / "naive.py"),
        "--system",
        args.system,
        *calculator_args(args),
        "--starts",
        str(starts_option(args.run_options)),
        "--output",
        str(output),
    ]
    wall = timed(command)
    return {"wall_s": wall, **json.loads(output.read_text())}


def formation_energy_gap(results: dict, naive: dict) -> float:
    """The largest |E_f(run) - E_f(naive)| over every defect both computed."""
    run = {
        (phase["formula"], d["name"]): d["formation_energy_eV"]
        for phase in [results["reference"], *results["hosts"]]
        for d in phase["defects"]
    }
    gaps = [
        abs(run[(phase["label"], name)] - d["formation_energy_eV"])
        for phase in naive["phases"]
        for name, d in phase["defects"].items()
        if (phase["label"], name) in run
    ]
    return max(gaps) if gaps else float("nan")


def naive_lowest_gap(results: dict, naive: dict) -> float:
    """The largest |lowest E_f(run) - lowest E_f(naive)| over every phase and kind: what a
    search and the naive search must agree on (their other states need not)."""
    run = {phase["formula"]: phase for phase in [results["reference"], *results["hosts"]]}
    gaps = []
    for phase in naive["phases"]:
        for kind in ("vacancy", "interstitial"):
            energies = [
                d["formation_energy_eV"] for d in phase["defects"].values() if d["kind"] == kind
            ]
            mine = run[phase["label"]]["lowest_eV"][kind]
            if energies and mine is not None:
                gaps.append(abs(mine - min(energies)))
    return max(gaps) if gaps else float("nan")


def plan_differences(results: dict, naive: dict, tol_frac: float = 1e-4) -> list[str]:
    """Where the run and the naive loop (the same code, its own bulk relaxations) chose
    differently: supercell matrix, candidate names, multiplicities or representatives."""
    run = {phase["formula"]: phase for phase in [results["reference"], *results["hosts"]]}
    differences = []
    for phase in naive["phases"]:
        mine, plan = run[phase["label"]], phase["plan"]
        if mine["supercell"]["matrix"] != plan["supercell"]:
            differences.append(f"{phase['label']} supercell")
        chosen = {d["name"]: d for d in mine["defects"]}
        if set(chosen) != set(plan["candidates"]):
            differences.append(f"{phase['label']} candidate names")
            continue
        for name, candidate in plan["candidates"].items():
            delta = np.subtract(chosen[name]["frac_coords"], candidate["frac_coords"])
            moved = np.abs(delta - np.round(delta)).max() > tol_frac
            if moved or chosen[name]["multiplicity"] != candidate["multiplicity"]:
                differences.append(f"{phase['label']} {name}")
    return differences


def lowest_gap(run: dict, other: dict) -> float:
    """The largest amount by which a phase's lowest vacancy or interstitial E_f of ``run`` lies
    above ``other``'s (negative: always below)."""
    return max(
        a["lowest_eV"][kind] - b["lowest_eV"][kind]
        for a, b in zip(
            [run["reference"], *run["hosts"]], [other["reference"], *other["hosts"]], strict=True
        )
        for kind in ("vacancy", "interstitial")
        if a["lowest_eV"][kind] is not None and b["lowest_eV"][kind] is not None
    )


def run_to_run_gap(first: dict, second: dict) -> float | None:
    """The largest |E_f| difference between two runs of one command from fresh stores (None:
    they computed different defects)."""
    energies = [
        {
            (phase["formula"], d["name"]): d["formation_energy_eV"]
            for phase in [results["reference"], *results["hosts"]]
            for d in phase["defects"]
        }
        for results in (first, second)
    ]
    if set(energies[0]) != set(energies[1]):
        return None
    return max(abs(energies[0][key] - energies[1][key]) for key in energies[0])


def vasp_job_counts(results: dict, k: int) -> dict:
    """VASP jobs of every candidate against all vacancies and the k lowest interstitials per
    phase (ranked by the cheap calculator), bulk and perfect supercell jobs included."""
    every, screened = 0, 0
    for phase in [results["reference"], *results["hosts"]]:
        kinds = [d["kind"] for d in phase["defects"]]
        vacancies, interstitials = kinds.count("vacancy"), kinds.count("interstitial")
        every += VASP_BULK_JOBS + 1 + vacancies + interstitials
        screened += VASP_BULK_JOBS + 1 + vacancies + min(k, interstitials)
    return {"every_candidate": every, "prescreened": screened, "k": k}


def prescreen_risk(results: dict, other: dict, k: int) -> dict:
    """How often one cheap calculator's lowest interstitial is outside the other's k lowest."""

    def ranked(phase: dict) -> list[str]:
        inter = [d for d in phase["defects"] if d["kind"] == "interstitial"]
        return [d["name"] for d in sorted(inter, key=lambda d: d["ranking_energy_eV"])]

    misses, phases = 0, 0
    for a, b in zip(
        [results["reference"], *results["hosts"]],
        [other["reference"], *other["hosts"]],
        strict=True,
    ):
        first, second = ranked(a), ranked(b)
        if not first or not second:
            continue
        phases += 1
        misses += first[0] not in second[:k]
        misses += second[0] not in first[:k]
    return {"misses": misses, "comparisons": 2 * phases}


def force_call_scaling(args: argparse.Namespace, sizes: list[int], calls: int = 3) -> dict:
    """Seconds per force call on supercells of the first host near each size, and the
    exponent of cost against atoms (a log-log fit)."""
    from naive import fresh_calculator  # benchmarks/ is on the path of these scripts
    from pymatgen.io.ase import AseAtomsAdaptor

    from carrierflow.structures.presets import SYSTEMS
    from carrierflow.structures.sources import load_structure
    from carrierflow.workflows.calculators import Calculator

    host = load_structure(SYSTEMS[args.system].hosts[0])[0].get_primitive_structure()
    calc = fresh_calculator(Calculator(args.calculator, model=args.model))
    rng = np.random.default_rng(0)
    natoms, seconds = [], []
    for size in sizes:
        repeat = max(1, round((size / len(host)) ** (1 / 3)))
        scaling = [repeat, repeat, max(1, round(size / (len(host) * repeat * repeat)))]
        atoms = AseAtomsAdaptor.get_atoms(host * scaling)
        atoms.calc = calc
        atoms.get_forces()  # warm-up: graph construction caches, first-call allocations
        started = time.perf_counter()
        for _ in range(calls):
            atoms.positions += rng.normal(0, 0.01, atoms.positions.shape)
            atoms.get_forces()
        natoms.append(len(atoms))
        seconds.append((time.perf_counter() - started) / calls)
    # a slope needs two sizes at least (one size gives a fit of noise, not an exponent)
    exponent = (
        float(np.polyfit(np.log(natoms), np.log(seconds), 1)[0]) if len(set(natoms)) > 1 else None
    )
    return {"natoms": natoms, "seconds_per_call": seconds, "exponent": exponent}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", default="Li-In")
    parser.add_argument("--calculator", default=DEFAULT_CODE)
    parser.add_argument("--model")
    parser.add_argument("--k", type=int, default=2, help="interstitials kept by the pre-screen")
    parser.add_argument(
        "--compare-with",
        metavar="CALCULATOR[:MODEL]",
        help="a second cheap calculator for the pre-screen risk (another run)",
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200, 400])
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument(
        "--repeat",
        action="store_true",
        help="run the command a second time from a fresh store and report the E_f difference",
    )
    parser.add_argument(
        "--run-options",
        default="",
        help="options added to `carrierflow run`, e.g. '--starts 4 --screen-image-distance 7'",
    )
    parser.add_argument(
        "--against-single",
        action="store_true",
        help="also run the single-start default (fresh store): time ratio and lowest-E_f gap",
    )
    parser.add_argument("--output", type=Path, default=HERE / "latest.json")
    args = parser.parse_args()
    # the model the run screens with (the Li-In preset names its fine-tuned one): the naive
    # script and the start-up measurement use the same
    from carrierflow.structures.presets import preset_model

    args.model = preset_model(args.system, args.calculator, args.model)

    report: dict = {
        "machine": machine(),
        "system": args.system,
        "calculator": calculator_args(args)[1::2],
    }
    with tempfile.TemporaryDirectory(prefix="carrierflow-bench-") as tmp:
        work = Path(tmp)
        print("== carrierflow run", flush=True)
        answer = time_to_answer(args, work / "run")
        startup_s = start_up(args)
        overhead_s = answer["wall_s"] - startup_s - answer["compute_s"]
        report |= {
            "time_to_answer_s": answer["wall_s"],
            "compute_s": answer["compute_s"],
            "force_calls": answer["force_calls"],
            "repeated_state_s": answer["repeated_state_s"],
            "repeated_states": answer["repeated_states"],
            "run_options": args.run_options,
            "screen_compute_s": answer["screen_compute_s"],
            "carried_compute_s": answer["carried_compute_s"],
            "startup_s": startup_s,
            "overhead_fraction": overhead_s / answer["compute_s"],
            "verdicts": {h["formula"]: h["dominant_carrier"] for h in answer["results"]["hosts"]},
            # the README's verdict table comes from the same run as its timing
            "lowest": lowest_states(answer["results"]),
            "vasp_jobs": vasp_job_counts(answer["results"], args.k),
        }
        if not args.skip_naive:
            print("== naive baseline", flush=True)
            naive = naive_baseline(args, work / "naive")
            starts = starts_option(args.run_options)
            gap = (naive_lowest_gap if starts > 1 else formation_energy_gap)(
                answer["results"], naive
            )
            report |= {
                "naive_starts": starts,
                "plan_differences_vs_naive": plan_differences(answer["results"], naive),
                "naive_s": naive["wall_s"],
                "max_formation_energy_gap_eV": gap,
                "speedup_vs_naive": naive["wall_s"] / answer["wall_s"]
                if gap <= SAME_ENERGY_EV
                else None,
            }
        if args.repeat:
            print("== the same command again, fresh store", flush=True)
            again = time_to_answer(args, work / "again")
            report["run_to_run_max_formation_energy_gap_eV"] = run_to_run_gap(
                answer["results"], again["results"]
            )
        if args.against_single:
            print("== the single-start default, fresh store", flush=True)
            single = time_to_answer(
                argparse.Namespace(**{**vars(args), "run_options": ""}), work / "single"
            )
            report |= {
                "single_start_s": single["wall_s"],
                "time_vs_single": answer["wall_s"] / single["wall_s"],
                "lowest_above_single_eV": lowest_gap(answer["results"], single["results"]),
            }
        if args.compare_with:
            name, _, model = args.compare_with.partition(":")
            print(f"== pre-screen risk against {args.compare_with}", flush=True)
            other = argparse.Namespace(
                system=args.system, calculator=name, model=model or None, run_options=""
            )
            second = time_to_answer(other, work / "other")
            report["prescreen_risk"] = prescreen_risk(answer["results"], second["results"], args.k)
        print("== force-call cost against supercell size", flush=True)
        report["scaling"] = force_call_scaling(args, args.sizes)

    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    speedup = report.get("speedup_vs_naive")
    print(
        f"time_to_answer_s={report['time_to_answer_s']:.1f} "
        f"speedup_vs_naive={'nan' if speedup is None else f'{speedup:.2f}'} "
        f"overhead_fraction={report['overhead_fraction']:.3f}"
    )


def table(report: dict) -> str:
    """The figures against the targets, readable."""
    m = report["machine"]
    jobs = report["vasp_jobs"]
    scaling = report["scaling"]
    rows = [
        ("machine", f"{m['cpu']}, {m['cores']} cores, torch threads {m['torch_threads']}", ""),
        ("system / calculator", f"{report['system']} / {' '.join(report['calculator'])}", ""),
        (
            "time to answer (s)",
            f"{report['time_to_answer_s']:.1f}",
            f"<= {TARGETS['time_to_answer_s']:.0f}",
        ),
        ("  in calculations (s)", f"{report['compute_s']:.1f} ({report['force_calls']} steps)", ""),
        ("  start-up, model load (s)", f"{report['startup_s']:.1f}", ""),
        (
            "  relaxations ending in a state found before (s)",
            f"{report['repeated_state_s']:.1f} ({len(report['repeated_states'])} relaxations)",
            "",
        ),
        (
            "workflow overhead / compute",
            f"{report['overhead_fraction']:.3f}",
            f"<= {TARGETS['overhead_fraction']}",
        ),
    ]
    if "naive_s" in report:
        speedup = report["speedup_vs_naive"]
        differences = report["plan_differences_vs_naive"]
        rows += [
            (
                "choices unlike the naive loop's (supercells, candidates)",
                ", ".join(differences) or "none",
                "none",
            ),
            ("naive baseline (s)", f"{report['naive_s']:.1f}", ""),
            (
                "max |lowest E_f run - naive search| (eV, per phase and kind)"
                if report.get("naive_starts", 1) > 1
                else "max |E_f run - naive| (eV)",
                f"{report['max_formation_energy_gap_eV']:.4f}",
                f"<= {SAME_ENERGY_EV}",
            ),
            (
                "speed-up vs naive",
                "does not count (E_f differ)" if speedup is None else f"{speedup:.2f}",
                f">= {TARGETS['speedup_vs_naive']}",
            ),
        ]
    if report.get("screen_compute_s"):
        rows += [
            ("  of it in the small-cell screen (s)", f"{report['screen_compute_s']:.1f}", ""),
            (
                "  of it the screen's states in the final cell (s)",
                f"{report['carried_compute_s']:.1f}",
                "",
            ),
        ]
    if "single_start_s" in report:
        rows += [
            (
                f"time / single-start default ({report['single_start_s']:.0f} s)",
                f"{report['time_vs_single']:.2f}",
                "<= 1",
            ),
            (
                "lowest E_f above the single start's (eV, max)",
                f"{report['lowest_above_single_eV']:.4f}",
                "<= 0.01",
            ),
        ]
    if "run_to_run_max_formation_energy_gap_eV" in report:
        gap = report["run_to_run_max_formation_energy_gap_eV"]
        rows.append(
            (
                "max |E_f| between two runs, fresh stores (eV)",
                "different defects" if gap is None else f"{gap:.4f}",
                "<= 0.001",
            )
        )
    rows.append(
        (
            "VASP jobs: prescreened / every candidate",
            f"{jobs['prescreened']} / {jobs['every_candidate']} (k = {jobs['k']})",
            "",
        )
    )
    if "prescreen_risk" in report:
        risk = report["prescreen_risk"]
        rows.append(
            (
                "pre-screen misses (lowest outside other's k)",
                f"{risk['misses']} of {risk['comparisons']}",
                "",
            )
        )
    rows += [
        (
            "force call (s) at atoms",
            ", ".join(
                f"{t:.3f}@{n}"
                for n, t in zip(scaling["natoms"], scaling["seconds_per_call"], strict=True)
            ),
            "",
        ),
        (
            "cost exponent vs atoms",
            "-" if scaling["exponent"] is None else f"{scaling['exponent']:.2f}",
            "~1",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'figure':<{width}} | value | target", f"{'-' * width}-|-------|-------"]
    lines += [f"{name:<{width}} | {value} | {target}" for name, value, target in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
