"""The store: embedded on disk by default, any jobflow JobStore (MongoDB) from a file."""

import json
import os
import shutil
import uuid
from pathlib import Path

import mongomock_ng
import pymongo
import pytest
from maggma.stores import MontyStore

from carrierflow.analysis.documents import RESULTS_SCHEMA_VERSION
from carrierflow.workflows.cli import main
from carrierflow.workflows.store import open_store


def test_default_store_is_embedded_on_disk(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CARRIERFLOW_STORE", raising=False)
    store = open_store()
    assert isinstance(store.docs_store, MontyStore)
    assert (tmp_path / "carrierflow-store").is_dir()


@pytest.fixture(params=["mongomock", "server"])
def mongodb(request, tmp_path, monkeypatch):
    """A JobStore file on MongoDB, and the database behind it. No MongoDB server can run here:
    by default one in-process mongomock client (mongomock-ng, as maggma uses) stands in for it;
    with CARRIERFLOW_TEST_MONGODB_URI set the same test runs against that real server."""
    config = tmp_path / "jobstore.yaml"
    if request.param == "mongomock":
        server = mongomock_ng.MongoClient()
        monkeypatch.setattr("maggma.stores.mongolike.MongoClient", lambda *a, **k: server)
        store = "type: MongoStore\n  host: localhost\n  port: 27017"
        database = "carrierflow"
    else:
        uri = os.environ.get("CARRIERFLOW_TEST_MONGODB_URI")
        if not uri:
            pytest.skip("CARRIERFLOW_TEST_MONGODB_URI is not set: no real MongoDB to test against")
        server = pymongo.MongoClient(uri, serverSelectionTimeoutMS=10000)
        store = f"type: MongoURIStore\n  uri: '{uri}'"
        database = f"carrierflow_test_{uuid.uuid4().hex[:8]}"
    config.write_text(
        f"docs_store:\n  {store}\n  database: {database}\n  collection_name: outputs\n"
    )
    yield config, server[database]
    if request.param == "server":
        server.drop_database(database)
        server.close()


def test_mongodb_store_from_a_jobstore_file(mongodb, tmp_path, capsys):
    config, database = mongodb
    args = ["--system", "Cu-Au", "--calculator", "emt", "--store", str(config)]
    args += ["--defects", "vacancy"]
    assert main(["run", *args, "--output", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert main(["report", *args, "--output", str(tmp_path / "report")]) == 0
    run = json.loads((tmp_path / "run" / "results.json").read_text())
    report = json.loads((tmp_path / "report" / "results.json").read_text())
    assert report == run
    assert database["outputs"].count_documents({"metadata.carrierflow": "results"}) == 1


def test_a_stored_number_changed_after_it_was_written_is_recomputed_not_reused(
    emt_run, tmp_path, capsys
):
    import shutil

    from helpers import cu_au

    store_dir = tmp_path / "store"
    shutil.copytree(emt_run["store"], store_dir)
    store = open_store(store_dir, create=False)
    label = "Cu3Au v_Cu_3c"
    [original] = [
        d["output"]
        for d in store.query({"output.label": label, "output.reused": False}, ["output"])
    ]
    # one digit of the stored energy changes (a bad disk, a careless edit)
    store.docs_store._collection.update_many(
        {"output.label": label}, {"$set": {"output.energy_eV": original["energy_eV"] + 0.1}}
    )
    store.close()
    capsys.readouterr()
    # another run that reuses the calculation (the same run would be served finished)
    assert main(cu_au("run", store_dir, tmp_path / "out", "--defects", "vacancy")) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "checksum" in line]
    assert len(warnings) == 1 and warnings[0].endswith(
        f"] {label}: the stored result fails its checksum (changed after it was written); "
        "computing it again"
    )
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    vacancy = next(d for d in results["hosts"][0]["defects"] if d["name"] == "v_Cu_3c")
    want = next(d for d in emt_run["results"]["hosts"][0]["defects"] if d["name"] == "v_Cu_3c")
    assert vacancy["formation_energy_eV"] == pytest.approx(want["formation_energy_eV"], abs=1e-9)


def test_a_mongodb_store_that_cannot_be_reached_is_one_short_line(tmp_path, capsys, monkeypatch):
    # pymongo waits 30 s for a server by default: the client must be given the short limit
    import maggma.stores.mongolike as mongolike

    given = []

    def client(*args, **kwargs):
        given.append(kwargs.get("serverSelectionTimeoutMS"))
        return real(*args, **kwargs)

    real = mongolike.MongoClient
    monkeypatch.setattr(mongolike, "MongoClient", client)
    # a host name that never resolves (RFC 2606): no server can answer
    config = tmp_path / "jobstore.yaml"
    config.write_text(
        "docs_store:\n  type: MongoStore\n  host: carrierflow-test.invalid\n  port: 27017\n"
        "  database: carrierflow\n  collection_name: outputs\n"
    )
    capsys.readouterr()
    code = main(["runs", "--store", str(config)])
    err = capsys.readouterr().err
    assert code == 2, err
    [line] = [line for line in err.splitlines() if line.startswith("carrierflow: error:")]
    assert "cannot reach the store configured in" in line and "within 5 s" in line
    assert len(line) < 400 and "Traceback" not in err
    assert given and set(given) == {5000}


def test_a_store_written_by_an_earlier_version_is_found_reused_and_rendered(tmp_path, capsys):
    """tests/workflows/stores/README.md: a store of commit ee92940 (results schema 3)."""
    store = tmp_path / "store"
    shutil.copytree(Path(__file__).parent / "stores" / "ee92940", store)
    args = [
        "--system",
        "Cu-Au",
        "--calculator",
        "emt",
        "--defects",
        "vacancy",
        "--store",
        str(store),
    ]
    capsys.readouterr()
    assert main(["run", *args, "--output", str(tmp_path / "same")]) == 0
    assert "is finished in the store" in capsys.readouterr().err
    old = json.loads((tmp_path / "same" / "results.json").read_text())
    assert old["schema_version"] == 3
    # another temperature: another run, of the same calculations. A store stays on its machine
    # (README): its fingerprints hash the supercells to the last bit, and this machine's pymatgen
    # and numpy may build them with boundary sites at fractional 0.0 where the writer's were 1.0
    # (the machine of 2026-12-05), so the supercells' calculations may run again, to the same
    # energies (below); the bulk relaxations, whose inputs are the fixtures' own numbers, never do.
    assert main(["run", *args, "--temperature", "500", "--output", str(tmp_path / "hot")]) == 0
    err = capsys.readouterr().err
    supercells_ran = "relaxation of" in err or "single point of" in err
    assert err.count("reused from the store") == (2 if supercells_ran else 6)
    assert "Cu bulk: reused from the store" in err
    new = json.loads((tmp_path / "hot" / "results.json").read_text())
    assert new["schema_version"] == RESULTS_SCHEMA_VERSION
    assert [d["formation_energy_eV"] for d in new["hosts"][0]["defects"]] == pytest.approx(
        [d["formation_energy_eV"] for d in old["hosts"][0]["defects"]], abs=1e-6
    )
    assert main(["report", *args, "--output", str(tmp_path / "report")]) == 0


def test_commands_that_only_read_a_store_leave_every_byte_of_it_unchanged(tmp_path, capsys):
    """report, runs and dataset may be pointed at a colleague's store or a read-only mount:
    they write no probe documents, lock files or write tests into it (a store of commit
    ee92940, older than the probe documents, is the case where one would be written)."""
    store = tmp_path / "store"
    shutil.copytree(Path(__file__).parent / "stores" / "ee92940", store)

    def snapshot():
        return {p.relative_to(store): p.read_bytes() for p in store.rglob("*") if p.is_file()}

    before = snapshot()
    args = ["--system", "Cu-Au", "--calculator", "emt", "--defects", "vacancy"]
    assert main(["report", *args, "--store", str(store), "--output", str(tmp_path / "r")]) == 0
    assert main(["runs", "--store", str(store)]) == 0
    capsys.readouterr()
    # EMT is no DFT: the data set is refused, after the store was read
    assert main(["dataset", "--store", str(store), str(tmp_path / "d.extxyz")]) == 2
    assert "DFT" in capsys.readouterr().err
    assert snapshot() == before


def test_a_stand_ins_result_stored_by_another_version_of_its_package_is_computed_again(
    emt_run, tmp_path, capsys
):
    """A shipped model is named, not hashed: 7net-0 is whatever weights the installed sevenn
    ships under that name. A result stored by another version is not reused."""
    from helpers import cu_au

    store_dir = tmp_path / "store"
    shutil.copytree(emt_run["store"], store_dir)
    store = open_store(store_dir, create=False)
    label = "Cu3Au v_Cu_3c"
    store.docs_store._collection.update_many(
        {"output.label": label}, {"$set": {"output.calculator.version": "0.0.1"}}
    )
    store.close()
    capsys.readouterr()
    assert main(cu_au("run", store_dir, tmp_path / "out", "--defects", "vacancy")) == 0
    err = capsys.readouterr().err
    assert f"] {label}: stored by ase 0.0.1, installed " in err
    assert f"{label}: reused from the store" not in err
    assert "Cu3Au perfect supercell: reused from the store" in err
