"""What a ``carrierflow run ... --learn`` loop cost, read back from its store, work folder and logs.

    .venv/bin/python benchmarks/loop.py --store STORE --workdir WORKDIR --logs run.*.log \\
        --output benchmarks/loop.json

The loop's target (issue 17): the whole ``--learn gpaw`` loop on Li-In within 4 hours on this
2-core machine, resumable across interruptions. A loop that outlives a session runs as several
invocations of the same command, so its cost is a sum:

- wall time: per invocation log, its first to its last timestamp (what a user waited, model
  loading, store and the time an interruption threw away included);
- compute time: every calculation the run used once (the latest run in the store, or
  ``--run-id``; a reused calculation counts where it ran: its document keeps the original's
  time), stand-in and DFT apart, by task; and each fine-tuning (``finetune.json`` under
  ``WORKDIR/fine-tuned``) whose model one of those calculations used. A DFT relaxation that
  an interruption cut short and a later invocation continued counts only its last part here;
- GPAW's steps of those calculations under ``WORKDIR``: SCF iterations and seconds per
  iteration, the machine's speed apart from the loop's work;
- a loop that moved machines (``--resume-from`` a data set of its frames): the steps the
  earlier machines computed, from the seconds each frame recorded where it ran. The new
  machine's documents of those calculations hold only its own part (none at all for a
  calculation that had finished, see ``gpaw_worker.finished_elsewhere``), so these seconds are
  a part of their own in the compute time. Steps an interruption threw away there, and the
  earlier machines' wall time, are not in the frames.

Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import machine  # noqa: E402

from carrierflow.workflows.dataset import GPAW_STEPS  # noqa: E402

TARGET_S = 4 * 3600.0
STAMP = re.compile(r"^\[carrierflow (\d\d):(\d\d):(\d\d)\]")


def log_wall_s(path: Path) -> float:
    """First to last timestamp of one invocation's log (a day boundary crossed adds a day)."""
    seconds = []
    for line in path.read_text().splitlines():
        match = STAMP.match(line)
        if match:
            h, m, s = (int(g) for g in match.groups())
            t = 3600 * h + 60 * m + s
            while seconds and t < seconds[-1]:
                t += 86400
            seconds.append(t)
    return float(seconds[-1] - seconds[0]) if seconds else 0.0


def latest_run(store) -> str | None:
    """The run id of the store's most recently completed calculation."""
    key = "metadata.carrierflow_run.run_id"
    docs = store.query({key: {"$exists": True}}, properties=["completed_at", key])
    latest = max(docs, key=lambda d: d["completed_at"], default=None)
    return latest["metadata"]["carrierflow_run"]["run_id"] if latest else None


def used_calculations(store, run_id: str) -> dict[str, str | None]:
    """The fingerprints of the calculations a run used (ran or reused), each with the SHA-256
    of its calculator's model file (None for a named model or DFT)."""
    of_run = store.query(
        {"metadata.carrierflow_run.run_id": run_id, "output.fingerprint": {"$exists": True}},
        properties=["output.fingerprint", "output.calculator.model_sha256"],
    )
    return {
        doc["output"]["fingerprint"]: doc["output"]["calculator"].get("model_sha256")
        for doc in of_run
    }


def calculation_times(store, used: set[str] | None = None) -> dict:
    """Seconds per calculator and task, each calculation once, where it ran; with ``used``,
    only those calculations (the fingerprints a run used, ran or reused): a store that an
    earlier version of the loop filled also holds calculations the current one no longer makes
    (a changed Maker setting changes their fingerprints), which its cost must not count."""
    from carrierflow.workflows.calculators import label_of

    seen: set[str] = set()
    seconds: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    fields = ["output.fingerprint", "output.calculator", "output.task", "output.elapsed_s"]
    docs = store.query(
        {"output.elapsed_s": {"$exists": True}, "output.reused": False}, properties=fields
    )
    for doc in docs:
        out = doc["output"]
        if out["fingerprint"] in seen or (used is not None and out["fingerprint"] not in used):
            continue
        seen.add(out["fingerprint"])
        who = label_of(out["calculator"])
        seconds[who][out["task"]] += out["elapsed_s"]
        counts[who][out["task"]] += 1
    return {
        who: {
            task: {"calculations": counts[who][task], "seconds": round(s, 1)}
            for task, s in sorted(tasks.items())
        }
        for who, tasks in sorted(seconds.items())
    }


def dft_steps(workdir: Path, fingerprints: set[str] | None = None) -> dict:
    """GPAW's ionic steps under ``WORKDIR`` that say what they cost (the worker's step log
    since 2026-12-03): how many, their SCF iterations and seconds, and the seconds per SCF
    iteration, which tell a slower machine (the Li5In4 vacancy's relaxation took 77 s per step on
    one machine, 160 s on another) from a loop that needed more steps. With ``fingerprints``,
    only the steps of those calculations (a folder ``<label>-<task>-<fingerprint[:8]>``; one
    still running has no document yet and is left out)."""
    prefixes = None if fingerprints is None else {fp[:8] for fp in fingerprints}
    steps = iterations = elsewhere = 0
    seconds = elsewhere_s = 0.0
    for log in sorted(workdir.rglob(GPAW_STEPS)):
        folder = log.relative_to(workdir).parts[0]
        if prefixes is not None and folder.rsplit("-", 1)[-1] not in prefixes:
            continue
        for line in log.read_text().splitlines():
            step = json.loads(line)
            if "scf_iterations" in step and "step_s" in step:
                steps += 1
                iterations += step["scf_iterations"]
                seconds += step["step_s"]
                if "recorded_in" in step:  # a data set's, computed on an earlier machine
                    elsewhere += 1
                    elsewhere_s += step["step_s"]
    per_iteration = round(seconds / iterations, 2) if iterations else None
    return {
        "steps": steps,
        "scf_iterations": iterations,
        "seconds": round(seconds, 1),
        "s_per_scf_iteration": per_iteration,
        "steps_of_earlier_machines": elsewhere,
        "seconds_of_earlier_machines": round(elsewhere_s, 1),
    }


def fine_tunings(workdir: Path, models: set[str] | None = None) -> list[dict]:
    """Every fine-tuning the loop ran: frames, epochs and seconds; with ``models``, only those
    whose checkpoint (SHA-256) one of the run's calculations used (a fine-tuning an
    interruption cut off before its screen counts in the invocation that screens with it)."""
    found = []
    for record in sorted((workdir / "fine-tuned").glob("*/finetune.json")):
        doc = json.loads(record.read_text())
        if models is not None and doc["checkpoint_sha256"] not in models:
            continue
        found.append(
            {
                "folder": record.parent.name,
                "train_frames": doc["train_frames"],
                "valid_frames": doc["valid_frames"],
                "epoch": doc["epoch"],
                "seconds": round(doc["elapsed_s"], 1),
            }
        )
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True, help="the loop's --store")
    parser.add_argument("--workdir", required=True, type=Path, help="the loop's --workdir")
    parser.add_argument("--logs", nargs="*", type=Path, default=[], help="each invocation's log")
    parser.add_argument("--output", type=Path, help="write the JSON here")
    parser.add_argument(
        "--run-id", help="count this run's calculations only (default: the latest run's)"
    )
    parser.add_argument(
        "--all", action="store_true", help="count every calculation in the store, of any run"
    )
    args = parser.parse_args(argv)

    from carrierflow.workflows.store import open_store

    store = open_store(args.store, create=False)
    run_id = None if args.all else (args.run_id or latest_run(store))
    used = None if run_id is None else used_calculations(store, run_id)
    fingerprints = None if used is None else set(used)
    models = None if used is None else {sha for sha in used.values() if sha}
    calculations = calculation_times(store, fingerprints)
    tunings = fine_tunings(args.workdir, models)
    walls = {str(p): log_wall_s(p) for p in args.logs}
    by_part = {
        who: sum(t["seconds"] for t in tasks.values()) for who, tasks in calculations.items()
    }
    by_part["fine-tuning"] = sum(t["seconds"] for t in tunings)
    steps = dft_steps(args.workdir, fingerprints)
    if steps["steps_of_earlier_machines"]:
        by_part["DFT steps of earlier machines"] = steps["seconds_of_earlier_machines"]
    compute = sum(by_part.values())
    wall = sum(walls.values())
    print("| part | hours |\n|---|---|")
    for who, s in by_part.items():
        print(f"| {who} | {s / 3600:.2f} |")
    print(f"| compute, all parts | {compute / 3600:.2f} |")
    print(f"| wall, {len(walls)} invocation(s) | {wall / 3600:.2f} | target {TARGET_S / 3600:g}")
    if steps["steps"]:
        print(
            f"GPAW: {steps['steps']} timed steps, {steps['scf_iterations']} SCF iterations, "
            f"{steps['s_per_scf_iteration']} s each"
        )
    report = {
        "machine": machine(),
        "store": args.store,
        "run_id": run_id,
        "calculations": calculations,
        "fine_tunings": tunings,
        "gpaw_steps": steps,
        "compute_s": {
            **{who: round(s, 1) for who, s in by_part.items()},
            "total": round(compute, 1),
        },
        "invocations_wall_s": walls,
        "wall_s": wall,
        "target_s": TARGET_S,
    }
    if args.output:
        args.output.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    print(f"loop_wall_h={wall / 3600:.2f} loop_compute_h={compute / 3600:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
