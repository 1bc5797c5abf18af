"""The benchmark scripts' own bookkeeping (their measurements run by hand, never as tests)."""

import importlib.util
import json
from pathlib import Path

import pytest

from carrierflow.workflows.store import open_store

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def loop():
    spec = importlib.util.spec_from_file_location("loop_benchmark", BENCHMARKS / "loop.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _doc(uuid, fingerprint, calculator, task, seconds, reused=False, run="r2"):
    output = {
        "fingerprint": fingerprint,
        "calculator": calculator,
        "task": task,
        "elapsed_s": seconds,
        "reused": reused,
    }
    metadata = {"carrierflow_run": {"run_id": run}}
    # a later run's calculations completed later
    completed = f"2026-12-0{run[1]}T10:00:{uuid.zfill(2)}"
    return {
        "uuid": uuid,
        "index": 1,
        "output": output,
        "metadata": metadata,
        "completed_at": completed,
    }


def test_a_loops_wall_time_is_each_invocations_first_to_last_line_across_midnight(loop, tmp_path):
    log = tmp_path / "run.1.log"
    log.write_text(
        "[carrierflow 23:50:00] start\n  GPAW: a line without a time\n"
        "[carrierflow 23:59:30] step\n[carrierflow 00:10:00] done\n"
    )
    assert loop.log_wall_s(log) == 20 * 60


def test_a_loops_compute_counts_each_calculation_once_each_model_and_earlier_machine_apart(
    loop, tmp_path
):
    store = open_store(tmp_path / "store")
    gpaw = {"name": "gpaw", "model": None, "preset": "fast"}
    base = {"name": "sevennet", "model": "7net-0"}
    tuned = [
        {"name": "sevennet", "model": f"/w/fine-tuned/{h}/checkpoint_30.pth", "model_sha256": h * 8}
        for h in ("aaaaaaaa", "bbbbbbbb")
    ]
    store.docs_store.update(
        [
            _doc("1", "f1", gpaw, "ion_relax", 600.0),
            _doc("2", "f1", gpaw, "ion_relax", 600.0),  # the same calculation in a second flow
            _doc("3", "f2", gpaw, "ion_relax", 5.0, reused=True),  # read back, not run
            # an earlier version of the loop: one calculation it ran that the latest one reused,
            # one that the latest one no longer makes (another Maker setting)
            _doc("8", "f2", gpaw, "ion_relax", 400.0, run="r1"),
            _doc("9", "f7", gpaw, "ion_relax", 900.0, run="r1"),
            _doc("4", "f3", gpaw, "static", 100.0),
            _doc("5", "f4", base, "ion_relax", 30.0),
            _doc("6", "f5", tuned[0], "ion_relax", 20.0),
            _doc("7", "f6", tuned[1], "ion_relax", 10.0),
        ],
        key="uuid",
    )
    # the GPAW folders' step logs (``<label>-<task>-<fingerprint[:8]>``): the run's, one step
    # before steps said what they cost and two after; one of the calculation it no longer makes
    lines = [{"energy": -1.0}, {"scf_iterations": 19, "step_s": 263.0}]
    lines.append({"scf_iterations": 11, "step_s": 157.0})
    # and one step of the data set a new machine resumed from (--resume-from): an earlier
    # machine's, which the new machine's documents do not time
    lines.insert(1, {"scf_iterations": 20, "step_s": 300.0, "recorded_in": "loop.extxyz f1"})
    for folder, steps in (("f1", lines), ("f7", [{"scf_iterations": 40, "step_s": 999.0}])):
        log = tmp_path / "work" / f"Li5In4_v_Li_2d_1-ion_relax-{folder}" / "1-ion_relax"
        log.mkdir(parents=True)
        (log / "gpaw-steps.jsonl").write_text("".join(json.dumps(x) + "\n" for x in steps))
    # the fine-tunings: one whose model the run screened with, one whose it never used
    for folder, seconds in (("aaaaaaaa", 330.0), ("cccccccc", 500.0)):
        record = tmp_path / "work" / "fine-tuned" / folder / "finetune.json"
        record.parent.mkdir(parents=True)
        done = {"train_frames": 32, "valid_frames": 14, "epoch": 30, "elapsed_s": seconds}
        record.write_text(json.dumps(done | {"checkpoint_sha256": folder * 8}))
    report = tmp_path / "loop.json"
    store_dir, work = str(tmp_path / "store"), str(tmp_path / "work")
    loop.main(["--store", store_dir, "--workdir", work, "--output", str(report)])
    result = json.loads(report.read_text())
    assert result["run_id"] == "r2"
    assert result["calculations"]["gpaw-fast"] == {
        "ion_relax": {"calculations": 2, "seconds": 1000.0},
        "static": {"calculations": 1, "seconds": 100.0},
    }
    assert result["compute_s"]["sevennet-checkpoint_30-aaaaaaaa"] == 20.0
    assert result["compute_s"]["sevennet-checkpoint_30-bbbbbbbb"] == 10.0
    assert result["compute_s"]["sevennet-7net-0"] == 30.0
    assert result["compute_s"]["fine-tuning"] == 330.0
    assert result["gpaw_steps"] == {
        "steps": 3,
        "scf_iterations": 50,
        "seconds": 720.0,
        "s_per_scf_iteration": 14.4,
        "steps_of_earlier_machines": 1,
        "seconds_of_earlier_machines": 300.0,
    }
    assert result["compute_s"]["DFT steps of earlier machines"] == 300.0
    assert result["compute_s"]["total"] == 1490.0 + 300.0


def test_the_hessian_benchmark_starts_where_each_recorded_free_dft_relaxation_started():
    spec = importlib.util.spec_from_file_location("hessian_benchmark", BENCHMARKS / "hessian.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    relaxations = module.recorded(module.FRAMES)
    # the timed loop's free relaxations, not their local ones (which start from DFT's own end)
    assert len(relaxations["Li5In4 v_Li_2d_1 [DFT]"]) == 38
    assert not any("(local)" in label for label in relaxations)
    for frames in relaxations.values():
        assert [atoms.info["step"] for atoms in frames] == list(range(1, len(frames) + 1))


def test_the_run_benchmark_keeps_each_phases_lowest_states_and_margin_beside_its_timing():
    spec = importlib.util.spec_from_file_location("run_benchmark", BENCHMARKS / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def phase(formula, vacancy, interstitial):
        return {
            "formula": formula,
            "supercell": {"natoms": 27, "min_image_distance_A": 8.19},
            "lowest_eV": {"vacancy": vacancy[1], "interstitial": interstitial[1]},
            "lowest_defect": {"vacancy": vacancy[0], "interstitial": interstitial[0]},
            "dominant_carrier": "vacancy",
            "margin_eV": interstitial[1] - vacancy[1],
        }

    results = {
        "reference": phase("Li", ("v_Li_1a", 0.40), ("Li_i1", 0.80)),
        "hosts": [phase("Li5In4", ("v_Li_2d_1", 0.515), ("Li_i3", 1.032))],
    }
    table = module.lowest_states(results)
    assert list(table) == ["Li", "Li5In4"]
    assert table["Li5In4"]["lowest"] == {
        "vacancy": ["v_Li_2d_1", 0.515],
        "interstitial": ["Li_i3", 1.032],
    }
    assert table["Li5In4"]["margin_eV"] == pytest.approx(0.517)
    assert table["Li5In4"]["supercell_atoms"] == 27
    json.dumps(table, allow_nan=False)
