"""Where results live: an embedded on-disk store by default, MongoDB when configured."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from jobflow import JobStore
from maggma.stores import MontyStore

DEFAULT_STORE = "carrierflow-store"


class StoreError(ValueError):
    """A store that cannot be opened or written."""


def store_location(location: str | Path | None = None) -> str:
    """The store given, else ``CARRIERFLOW_STORE``, else ``./carrierflow-store``."""
    return str(location or os.environ.get("CARRIERFLOW_STORE") or DEFAULT_STORE)


def check_writable_directory(path: Path, what: str) -> None:
    """Create ``path`` if needed and prove it writable, or raise a one-line StoreError."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise StoreError(f"cannot write {what} '{path}': {exc.strerror}") from exc


# how long a MongoDB store may take to answer before the command gives up
MONGODB_TIMEOUT_MS = 5000


def open_store(location: str | Path | None = None, create: bool = True) -> JobStore:
    """Open (and connect) a jobflow JobStore.

    Parameters
    ----------
    location
        A directory for the embedded store (montydb on SQLite: no server to start), or a
        jobflow JobStore file (``.yaml``/``.json``, e.g. a MongoDB store whose credentials
        stay in that file or the environment, never on the command line).
    create
        Make the store directory if it does not exist (``run``); commands that only read a
        store (``report``, ``runs``) refuse a path where there is none, so that a typo is an
        error and not a new empty store.
    """
    location = store_location(location)
    path = Path(location)
    if path.suffix in {".yaml", ".yml", ".json"}:
        if not path.is_file():
            raise StoreError(f"store configuration '{location}' does not exist")
        try:
            store = JobStore.from_file(path)
        except Exception as exc:
            reason = " ".join(str(exc).split())[:160]
            raise StoreError(f"cannot read the store configuration '{location}': {reason}") from exc
        # pymongo waits 30 s for a server that is not there, then says so in 600 characters
        for part in [store.docs_store, *store.additional_stores.values()]:
            if hasattr(part, "mongoclient_kwargs"):
                part.mongoclient_kwargs = {
                    "serverSelectionTimeoutMS": MONGODB_TIMEOUT_MS,
                    **(part.mongoclient_kwargs or {}),
                }
        try:
            store.connect()
            store.docs_store.query_one(properties=["uuid"])  # the first contact with a server
        except Exception as exc:
            reason = " ".join(str(exc).split(",")[0].split())[:160]
            raise StoreError(
                f"cannot reach the store configured in '{location}' "
                f"(within {MONGODB_TIMEOUT_MS / 1000:g} s for a MongoDB server): {reason}"
            ) from exc
        return store
    if not create and not path.is_dir():
        raise StoreError(f"no store at '{location}' (give --store or set CARRIERFLOW_STORE)")
    if create:
        check_writable_directory(path, "the store at")
    docs = MontyStore(
        "outputs", database_path=str(path), database_name="carrierflow", storage="sqlite"
    )
    data = MontyStore(
        "data", database_path=str(path), database_name="carrierflow", storage="sqlite"
    )
    store = JobStore(docs, additional_stores={"data": data})
    if not create:
        # a command that only reads (report, runs, dataset) writes nothing into the store:
        # it may be a colleague's, or on a read-only mount
        store.connect()
        return store
    # two runs opening a new store at once: montydb creates a collection's SQLite table on its
    # first write, and a run that read between the other's database file and its tables failed
    # with "no such table" (1 in 6 two-run starts); make the tables once, under a lock
    with open(path / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        store.connect()
        for part in (docs, data):
            if part._collection.find_one({"_id": _TABLE_PROBE}) is None:
                part._collection.insert_one({"_id": _TABLE_PROBE})
    return store


# a document that makes sure a collection's table exists (never read as a result)
_TABLE_PROBE = "carrierflow:table"


def flow_result(responses: dict, flow, store: JobStore):
    """The final output of a flow that ``run_locally`` ran: a job replaced by a flow (a
    refinement, a learning round) answers with a reference to that flow's output, which may
    itself have been replaced; follow the references to the document."""
    from jobflow import OutputReference

    by_index = responses[flow.output.uuid]
    output = by_index[max(by_index)].output
    while isinstance(output, OutputReference):
        output = output.resolve(store)
    return output
