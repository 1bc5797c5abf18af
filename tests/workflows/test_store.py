"""The store: embedded on disk by default, any jobflow JobStore (MongoDB) from a file."""

import json

import mongomock_ng
from maggma.stores import MontyStore

from carrierflow.workflows.cli import main
from carrierflow.workflows.store import open_store


def test_default_store_is_embedded_on_disk(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CARRIERFLOW_STORE", raising=False)
    store = open_store()
    assert isinstance(store.docs_store, MontyStore)
    assert (tmp_path / "carrierflow-store").is_dir()


def test_mongodb_store_from_a_jobstore_file(tmp_path, capsys, monkeypatch):
    # No MongoDB server can run here: one in-process mongomock client (mongomock-ng, as
    # maggma uses) stands in for the server behind the JobStore file a user writes.
    server = mongomock_ng.MongoClient()
    monkeypatch.setattr("maggma.stores.mongolike.MongoClient", lambda *a, **k: server)
    config = tmp_path / "jobstore.yaml"
    config.write_text(
        "docs_store:\n  type: MongoStore\n  database: carrierflow\n"
        "  collection_name: outputs\n  host: localhost\n  port: 27017\n"
        "additional_stores:\n  data:\n    type: MongoStore\n    database: carrierflow\n"
        "    collection_name: data\n    host: localhost\n    port: 27017\n"
    )
    args = ["--system", "Cu-Au", "--calculator", "emt", "--store", str(config)]
    assert main(["run", *args, "--defects", "vacancy", "--output", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert main(["report", *args, "--output", str(tmp_path / "report")]) == 0
    run = json.loads((tmp_path / "run" / "results.json").read_text())
    report = json.loads((tmp_path / "report" / "results.json").read_text())
    assert report == run
    assert server["carrierflow"]["outputs"].count_documents({"metadata.carrierflow": "results"})
