"""The store: embedded on disk by default, any jobflow JobStore (MongoDB) from a file."""

import json
import os
import uuid

import mongomock_ng
import pymongo
import pytest
from maggma.stores import MontyStore

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
    assert main(["run", *args, "--defects", "vacancy", "--output", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert main(["report", *args, "--output", str(tmp_path / "report")]) == 0
    run = json.loads((tmp_path / "run" / "results.json").read_text())
    report = json.loads((tmp_path / "report" / "results.json").read_text())
    assert report == run
    assert database["outputs"].count_documents({"metadata.carrierflow": "results"}) == 1
