"""The whole flow on the EMT analogue (Cu in ordered Cu3Au, fcc Cu as reference)."""

import json
import os
import platform
import re
import shutil
import subprocess
import sys

import jsonschema
import pytest
from helpers import cu_au

from carrierflow.analysis.documents import RESULTS_SCHEMA_VERSION, Results, shipped_schema
from carrierflow.structures.defects import find_vacancies
from carrierflow.structures.sources import load_fixture
from carrierflow.workflows.cli import main


def _phases(results):
    return [results["reference"], *results["hosts"]]


def test_one_vacancy_per_distinct_site_in_every_phase(emt_run):
    for phase in _phases(emt_run["results"]):
        host = load_fixture(phase["formula"])[0].get_primitive_structure()
        vacancies = [d for d in phase["defects"] if d["kind"] == "vacancy"]
        assert len(vacancies) == len(find_vacancies(host, "Cu"))


def test_a_second_run_from_a_fresh_store_gives_the_same_answer(emt_run, tmp_path):
    # another process, and on x86 numpy's oldest BLAS kernels (other rounding, as on another
    # CPU): the same supercells, candidates and representatives, and E_f to 1 meV
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if platform.machine() in ("x86_64", "AMD64"):
        env["OPENBLAS_CORETYPE"] = "Prescott"
    command = cu_au("run", tmp_path / "store", tmp_path / "out")
    again = subprocess.run(
        [sys.executable, "-m", "carrierflow.workflows.cli", *command],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert again.returncode == 0, again.stderr
    second = json.loads((tmp_path / "out" / "results.json").read_text())
    for got, want in zip(_phases(second), _phases(emt_run["results"]), strict=True):
        assert got["supercell"] == want["supercell"]
        assert [d["name"] for d in got["defects"]] == [d["name"] for d in want["defects"]]
        for a, b in zip(got["defects"], want["defects"], strict=True):
            assert a["frac_coords"] == pytest.approx(b["frac_coords"], abs=1e-6)
            assert a["formation_energy_eV"] == pytest.approx(b["formation_energy_eV"], abs=1e-3)
        assert got["dominant_carrier"] == want["dominant_carrier"]


def test_perfect_supercell_is_n_times_the_bulk_energy(emt_run):
    # EMT is a lattice calculator: the perfect supercell of the relaxed bulk has exactly
    # the bulk energy per atom
    for phase in _phases(emt_run["results"]):
        natoms = phase["supercell"]["natoms"]
        expected = natoms * phase["bulk_energy_per_atom_eV"]
        assert phase["perfect_energy_eV"] == pytest.approx(expected, abs=1e-6 * natoms)


def test_copper_defects_are_physical(emt_run):
    reference = emt_run["results"]["reference"]
    # EMT (Jacobsen, Stoltze and Norskov 1996) is fitted to Cu and gives its vacancy
    # formation energy close to experiment (1.28 eV); self-interstitials cost far more
    assert 1.0 < reference["lowest_eV"]["vacancy"] < 1.4
    assert reference["lowest_eV"]["interstitial"] > 2.5
    assert reference["dominant_carrier"] == "vacancy"
    assert reference["mu_eV"] == pytest.approx(reference["bulk_energy_per_atom_eV"])


def test_every_defect_that_moved_to_another_site_is_flagged(emt_run):
    for phase in _phases(emt_run["results"]):
        for d in phase["defects"]:
            assert d["converged"]
            if d["ended_at"] != d["name"]:
                assert any(d["ended_at"] is None or d["ended_at"] in f["text"] for f in d["flags"])


def test_results_schema(emt_run):
    results = emt_run["results"]
    assert results["species"] == "Cu"
    assert results["calculator"]["name"] == "emt"
    assert results["temperature_K"] == 300
    host = results["hosts"][0]
    assert host["source"]["kind"] == "fixture"
    assert set(host["supercell"]) == {"matrix", "natoms", "min_image_distance_A"}
    assert host["supercell"]["min_image_distance_A"] >= 10
    assert set(host["lowest_eV"]) == {"vacancy", "interstitial"}
    assert host["dominant_carrier"] in {"vacancy", "interstitial", "undecided"}
    assert host["margin_eV"] == pytest.approx(
        host["lowest_eV"]["interstitial"] - host["lowest_eV"]["vacancy"]
    )
    for name in ("results.md", "results.csv", "formation_energies.png"):
        assert (emt_run["output"] / name).stat().st_size > 0
    # the file is the typed document, and its JSON Schema says so
    assert results["schema_version"] == RESULTS_SCHEMA_VERSION
    Results.model_validate(results)
    jsonschema.validate(results, shipped_schema())


def test_formation_energy_does_not_depend_on_the_supercell(emt_run, tmp_path):
    assert (
        main(
            cu_au(
                "run",
                tmp_path / "store",
                tmp_path / "out",
                "--defects",
                "vacancy",
                "--min-image-distance",
                "13",
            )
        )
        == 0
    )
    larger = json.loads((tmp_path / "out" / "results.json").read_text())
    for small, large in zip(_phases(emt_run["results"]), _phases(larger), strict=True):
        assert large["supercell"]["natoms"] > small["supercell"]["natoms"]
        assert large["lowest_eV"]["vacancy"] == pytest.approx(
            small["lowest_eV"]["vacancy"], abs=0.03
        )


def test_a_rerun_of_a_finished_run_computes_and_writes_nothing(emt_run, capsys):
    from carrierflow.workflows.store import open_store

    def documents() -> int:
        store = open_store(emt_run["store"], create=False)
        count = store.count({})
        store.close()
        return count

    before = documents()
    capsys.readouterr()
    assert main(cu_au("run", emt_run["store"], emt_run["root"] / "rerun")) == 0
    err = capsys.readouterr().err
    assert "is finished in the store" in err
    assert "relaxation of" not in err and "single point of" not in err
    assert documents() == before
    rerun = json.loads((emt_run["root"] / "rerun" / "results.json").read_text())
    for a, b in zip(_phases(rerun), _phases(emt_run["results"]), strict=True):
        assert [d["formation_energy_eV"] for d in a["defects"]] == [
            d["formation_energy_eV"] for d in b["defects"]
        ]


def test_report_renders_stored_results_without_computing(emt_run, capsys, tmp_path):
    capsys.readouterr()
    assert main(cu_au("report", str(emt_run["store"]), str(tmp_path))) == 0
    captured = capsys.readouterr()
    assert "relaxation of" not in captured.err
    assert "Cu3Au" in captured.out and "dominant carrier" in captured.out
    reported = json.loads((tmp_path / "results.json").read_text())
    assert reported["hosts"][0]["lowest_eV"] == emt_run["results"]["hosts"][0]["lowest_eV"]


# Ctrl-C arrives once the second calculation has finished, so the first is surely stored: an
# event, not a delay (a fast CPU finished the whole EMT run before a timed interrupt arrived)
_INTERRUPT_AFTER_TWO = """
import logging, sys
from carrierflow.workflows import cli

class CtrlC(logging.Handler):
    finished = 0

    def emit(self, record):
        if ": E = " in record.getMessage():
            CtrlC.finished += 1
            if CtrlC.finished == 2:
                # what Ctrl-C raises, raised where the run is: a signal (os.kill, and even
                # signal.raise_signal) let the run finish now and then on a fresh clone
                raise KeyboardInterrupt

def configure(verbose, configure=cli._configure_logging):
    configure(verbose)
    logging.getLogger("carrierflow").addHandler(CtrlC())

cli._configure_logging = configure
sys.exit(cli.main(sys.argv[1:]))
"""


def test_an_interrupted_run_resumes_from_the_store(tmp_path, capsys):
    command = [
        sys.executable,
        "-m",
        "carrierflow.workflows.cli",
        "run",
        "--system",
        "Cu-Au",
        "--calculator",
        "emt",
        "--store",
        str(tmp_path / "store"),
        "--output",
        str(tmp_path / "out"),
    ]
    process = subprocess.Popen(
        [sys.executable, "-c", _INTERRUPT_AFTER_TWO, *command[3:]],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines = list(process.stderr)
    assert process.wait(timeout=120) == 130
    finished = [line.split(": E = ")[0].split("] ")[1] for line in lines if ": E = " in line]
    assert len(finished) == 2
    assert "interrupted: finished calculations are kept" in "".join(lines)
    assert not (tmp_path / "out" / "results.json").exists()

    # the unfinished run can be reported: what it computed so far
    report = [*command[3:-2], "--output", str(tmp_path / "partial")]
    report[0] = "report"
    capsys.readouterr()
    assert main(report) == 0
    partial = json.loads((tmp_path / "partial" / "results.partial.json").read_text())
    assert "run not finished" in capsys.readouterr().out
    assert set(finished[:-1]) <= set(partial["calculation_labels"]) <= set(finished)

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0
    reused = {
        line.split("] ")[1].split(": reused")[0]
        for line in resumed.stderr.splitlines()
        if "reused from the store" in line
    }
    # the interrupt may land between the last log line and its store write
    assert reused >= set(finished[:-1]) and reused <= set(finished)
    for label in reused:
        computed = (
            rf"{re.escape(label)}: (cell \+ ions relaxation|ionic relaxation|single point) of"
        )
        assert not re.search(computed, resumed.stderr)
    assert (tmp_path / "out" / "results.json").exists()
    # reported again once finished: the results replace the partial ones, none left beside
    assert main(report) == 0
    assert sorted(p.name for p in (tmp_path / "partial").iterdir()) == [
        "formation_energies.png",
        "results.csv",
        "results.json",
        "results.md",
    ]


def test_report_finds_exactly_the_run_its_options_describe(emt_run, tmp_path, capsys):
    store = tmp_path / "store"
    shutil.copytree(emt_run["store"], store)
    small = ["--min-image-distance", "7", "--defects", "vacancy"]
    assert main(cu_au("run", store, tmp_path / "small", *small)) == 0
    # the default options find the default run, not the newer 7 A vacancy-only one
    assert main(cu_au("report", store, tmp_path / "default")) == 0
    default = json.loads((tmp_path / "default" / "results.json").read_text())
    assert default["run_id"] == emt_run["results"]["run_id"]
    assert default["hosts"][0]["lowest_eV"] == emt_run["results"]["hosts"][0]["lowest_eV"]
    assert main(cu_au("report", store, tmp_path / "again", *small)) == 0
    again = json.loads((tmp_path / "again" / "results.json").read_text())
    assert again["run_id"] != default["run_id"]
    assert {d["kind"] for p in _phases(again) for d in p["defects"]} == {"vacancy"}
    # options nobody ran find nothing rather than another run's table
    capsys.readouterr()
    for option, value in [("--fmax", "0.02"), ("--uncertainty", "0.2"), ("--optimizer", "FIRE")]:
        assert main(cu_au("report", store, tmp_path / "none", option, value)) == 2, option
        assert "no stored results for Cu-Au with emt and these options" in capsys.readouterr().err
    assert main(["runs", "--store", str(store)]) == 0
    listed = capsys.readouterr().out
    assert default["run_id"][:8] in listed and again["run_id"][:8] in listed


def test_an_unfinished_newer_run_is_reported_as_unfinished_not_with_an_older_runs_table(
    emt_run, tmp_path, capsys
):
    store = tmp_path / "store"
    shutil.copytree(emt_run["store"], store)
    newer = ["--fmax", "0.02"]
    process = subprocess.run(
        [
            sys.executable,
            "-c",
            _INTERRUPT_AFTER_TWO,
            *cu_au("run", store, tmp_path / "out", *newer),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 130
    capsys.readouterr()
    assert main(cu_au("report", store, tmp_path / "newer", *newer)) == 0
    assert "run not finished" in capsys.readouterr().out
    assert not (tmp_path / "newer" / "results.json").exists()
    partial = json.loads((tmp_path / "newer" / "results.partial.json").read_text())
    assert partial["run_id"] != emt_run["results"]["run_id"]
    # the finished run is still what its own options report
    assert main(cu_au("report", store, tmp_path / "older")) == 0
    older = json.loads((tmp_path / "older" / "results.json").read_text())
    assert older["run_id"] == emt_run["results"]["run_id"]


def test_runs_with_other_options_write_to_folders_of_their_own(emt_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "store"
    shutil.copytree(emt_run["store"], store)
    base = ["run", "--system", "Cu-Au", "--calculator", "emt", "--store", str(store)]
    assert main(base) == 0
    assert main([*base, "--defects", "vacancy"]) == 0
    folders = sorted(p.name for p in (tmp_path / "carrierflow-results").iterdir())
    run_folders = [f for f in folders if not (tmp_path / "carrierflow-results" / f).is_symlink()]
    assert len(run_folders) == 2 and all(f.startswith("Cu-Au-emt-") for f in run_folders)
    # the readable alias points to the newest run: the vacancy-only one
    alias = tmp_path / "carrierflow-results" / "Cu-Au-emt"
    assert alias.is_symlink() and alias.resolve().name in run_folders
    newest = json.loads((alias / "results.json").read_text())
    assert {d["kind"] for p in _phases(newest) for d in p["defects"]} == {"vacancy"}
    assert alias.resolve().name.endswith(newest["run_id"][:8])


@pytest.fixture(scope="module")
def searched(emt_run, tmp_path_factory) -> dict:
    """The EMT analogue with four starts per defect, on a copy of the single-start run's store
    (its first starts are the same calculations), then the same command again."""
    root = tmp_path_factory.mktemp("starts")
    store = root / "store"
    shutil.copytree(emt_run["store"], store)
    assert main(cu_au("run", store, root / "out", "--starts", "4")) == 0
    first = json.loads((root / "out" / "results.json").read_text())
    computed = _computed(store)
    assert main(cu_au("run", store, root / "again", "--starts", "4")) == 0
    again = json.loads((root / "again" / "results.json").read_text())
    return {"results": first, "again": again, "store": store, "computed": computed}


def _computed(store) -> int:
    """Calculations the store holds that were computed, not reused."""
    from carrierflow.workflows.store import open_store

    jobs = open_store(store, create=False)
    found = jobs.count({"output.fingerprint": {"$exists": True}, "output.reused": False})
    jobs.close()
    return found


def test_several_starts_report_the_lowest_state_and_never_a_higher_one(searched, emt_run):
    single = {
        (p["formula"], d["name"]): d["ranking_energy_eV"]
        for p in _phases(emt_run["results"])
        for d in p["defects"]
    }
    for phase in _phases(searched["results"]):
        for d in phase["defects"]:
            search = d["search"]
            assert len(search["starts"]) == len(search["formation_energies_eV"]) == 4
            assert d["ranking_energy_eV"] == pytest.approx(min(search["formation_energies_eV"]))
            assert (
                search["winner"]
                == search["starts"][
                    search["formation_energies_eV"].index(min(search["formation_energies_eV"]))
                ]
            )
            assert search["spread_eV"] == pytest.approx(
                max(search["formation_energies_eV"]) - min(search["formation_energies_eV"])
            )
            # the first start is the single-start run's relaxation
            assert search["formation_energies_eV"][0] == pytest.approx(
                single[(phase["formula"], d["name"])], abs=1e-9
            )
            assert d["ranking_energy_eV"] <= single[(phase["formula"], d["name"])] + 1e-9
    # EMT's Cu self-interstitial is the <100> dumbbell, below the octahedral site the single
    # start stays in: the search finds it
    reference = searched["results"]["reference"]
    assert (
        reference["lowest_eV"]["interstitial"]
        < emt_run["results"]["reference"]["lowest_eV"]["interstitial"] - 0.02
    )


def test_a_rerun_of_a_search_reuses_every_start_and_gives_the_same_answer(searched):
    assert _computed(searched["store"]) == searched["computed"]
    for got, want in zip(_phases(searched["again"]), _phases(searched["results"]), strict=True):
        for a, b in zip(got["defects"], want["defects"], strict=True):
            assert a["search"] == b["search"]
            assert a["formation_energy_eV"] == b["formation_energy_eV"]


def test_the_search_shows_in_the_table(searched, tmp_path):
    assert main(cu_au("report", searched["store"], tmp_path, "--starts", "4")) == 0
    table = (tmp_path / "results.md").read_text()
    assert "| search |" in table and "4 starts," in table


@pytest.fixture(scope="module")
def small_first(emt_run, tmp_path_factory) -> dict:
    """Four starts per defect in a small cell (images 7 A apart), then each candidate's first
    start and the two lowest distinct states of each kind again in the final cell, on a copy of
    the single-start run's store; then the same command again."""
    root = tmp_path_factory.mktemp("small-first")
    store = root / "store"
    shutil.copytree(emt_run["store"], store)
    options = ("--starts", "4", "--screen-image-distance", "7", "--keep", "2")
    assert main(cu_au("run", store, root / "out", *options)) == 0
    first = json.loads((root / "out" / "results.json").read_text())
    computed = _computed(store)
    assert main(cu_au("run", store, root / "again", *options)) == 0
    again = json.loads((root / "again" / "results.json").read_text())
    return {"results": first, "again": again, "store": store, "computed": computed}


def test_a_small_cell_screen_relaxes_every_start_small_and_the_lowest_in_the_final_cell(
    small_first, emt_run
):
    phases = zip(_phases(small_first["results"]), _phases(emt_run["results"]), strict=True)
    for phase, single in phases:
        small, final = phase["screen_supercell"], phase["supercell"]
        assert small["natoms"] < final["natoms"] and small["min_image_distance_A"] >= 7
        screened = {d["name"]: d for d in phase["screened"]}
        assert all(len(d["search"]["starts"]) == 4 for d in screened.values())
        # every candidate is relaxed in the final cell from its first start (a single-start
        # run's), so none ends above the single start; the screen's states can only lower it
        single_energy = {d["name"]: d["ranking_energy_eV"] for d in single["defects"]}
        assert {d["name"] for d in phase["defects"]} == set(screened) == set(single_energy)
        for defect in phase["defects"]:
            assert defect["ranking_energy_eV"] <= single_energy[defect["name"]] + 1e-6
            assert defect["search"]["starts"] == screened[defect["name"]]["search"]["starts"]
            won = defect["search"]["final_cell_winner"]
            assert won == "first start" or won.removeprefix("screen: ") in {
                start for d in screened.values() for start in d["search"]["starts"]
            }
        # every start's final state counts: --keep 2 distinct ones per kind (or more within
        # the 0.1 eV uncertainty) went to the final cell from the screen
        for kind in ("vacancy", "interstitial"):
            states = sorted(
                e
                for d in screened.values()
                if d["kind"] == kind
                for e in d["search"]["formation_energies_eV"]
            )
            distinct = [e for i, e in enumerate(states) if i == 0 or e - states[i - 1] > 0.001]
            carried = _final_cell_labels(small_first["store"], phase["label"], kind, screened)
            assert 1 <= len(carried) <= max(2, sum(e - distinct[0] <= 0.1 for e in distinct))


def _final_cell_labels(store, label: str, kind: str, screened: dict) -> list[str]:
    """The final-cell relaxations of one host's small-cell states of one kind (``[from ...]``)."""
    from carrierflow.workflows.store import open_store

    names = [name for name, d in screened.items() if d["kind"] == kind]
    jobs = open_store(store, create=False)
    found = {
        doc["output"]["label"]
        for doc in jobs.query({"output.task": "ion_relax"}, properties=["output.label"])
        if any(doc["output"]["label"].startswith(f"{label} {n} [from ") for n in names)
    }
    jobs.close()
    return sorted(found)


def test_a_small_cell_screen_reuses_the_single_start_relaxations(small_first, emt_run):
    # each candidate's first start in the final cell is the single-start run's calculation
    from carrierflow.workflows.store import open_store

    jobs = open_store(small_first["store"], create=False)
    for phase in _phases(small_first["results"]):
        for defect in phase["defects"]:
            docs = list(
                jobs.query({"output.label": f"{phase['label']} {defect['name']}"}, ["output"])
            )
            assert docs and any(doc["output"]["reused"] for doc in docs)
    jobs.close()


def test_the_small_cell_screen_finds_the_states_of_the_search_in_the_final_cell(
    small_first, searched, emt_run
):
    # every start in the final cell against every start in a 27/32-atom cell and the two lowest
    # distinct states again in the final cell: the same lowest states and verdicts. EMT Cu's
    # <100> dumbbell is only metastable in the small cell (above the octahedral site) and is
    # found because every start's state counts, not only each candidate's lowest
    for fast, full, single in zip(
        _phases(small_first["results"]),
        _phases(searched["results"]),
        _phases(emt_run["results"]),
        strict=True,
    ):
        for kind in ("vacancy", "interstitial"):
            assert fast["lowest_eV"][kind] == pytest.approx(full["lowest_eV"][kind], abs=0.01)
            assert fast["lowest_eV"][kind] <= single["lowest_eV"][kind] + 0.01
        assert fast["dominant_carrier"] == full["dominant_carrier"]


def test_the_small_cell_screen_shows_in_the_report(small_first, tmp_path):
    options = ("--starts", "4", "--screen-image-distance", "7", "--keep", "2")
    assert main(cu_au("report", small_first["store"], tmp_path, *options)) == 0
    assert "Small-cell screen:" in (tmp_path / "results.md").read_text()


def test_a_rerun_of_the_small_cell_screen_computes_nothing(small_first):
    assert _computed(small_first["store"]) == small_first["computed"]
    assert small_first["again"]["hosts"] == small_first["results"]["hosts"]
