"""Claims: a calculation is claimed in the store before it starts, so that two runs on one store
never compute the same calculation twice.

Two ``carrierflow run`` on one store (a second system sharing the reference phase, a rerun with
one more option) walk their flows in the same order: without claims the second computed 6 of the
EMT analogue's 9 calculations again, while the first was still on them. With a claim, the second
waits for the first's result and reuses it. A claim is a small document in the store's output
collection, removed when its calculation ends (result or failure). A claim whose process is gone
(same machine, no such process) or older than :data:`STALE_AFTER_S` (another machine) is ignored,
so a run killed mid-calculation blocks nothing. Under jobflow-remote the queue already runs each
job once, and no claim is written.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

logger = logging.getLogger("carrierflow")

CLAIM_KEY = "carrierflow_claim"
# a claim from another machine older than this is a run that died there (a DFT relaxation of
# the Li-In refinement took at most 75 min on 2 cores)
STALE_AFTER_S = 12 * 3600.0
POLL_S = 2.0

T = TypeVar("T")


def _alive(claim: dict, now: float) -> bool:
    if claim["host"] == socket.gethostname():
        try:
            os.kill(claim["pid"], 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's live process
            return True
        return True
    return now - claim["started"] < STALE_AFTER_S


def _claim_id(fingerprint: str) -> str:
    """A calculation's one claim document (its ``_id``)."""
    return f"claim:{fingerprint}"


def _take(collection, fingerprint: str, label: str) -> dict | None:
    """Insert this process's claim; None when it holds it now, else the live claim that holds
    it. One document per calculation (its ``_id``): the database's unique key decides between
    two runs that claim at the same moment (SQLite's primary key in the embedded store,
    MongoDB's _id index), never a read followed by a write."""
    claim = {
        "fingerprint": fingerprint,
        "label": label,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": time.time(),
    }
    key = _claim_id(fingerprint)
    while True:
        try:
            collection.insert_one({"_id": key, CLAIM_KEY: claim})
            return None
        except Exception as exc:
            if type(exc).__name__ != "DuplicateKeyError":  # pymongo's, montydb's, mongomock's
                raise
        held = collection.find_one({"_id": key})
        if held is None:
            continue  # released meanwhile
        if _alive(held[CLAIM_KEY], time.time()):
            return held[CLAIM_KEY]
        # its run died: drop that claim (only that one) and try again
        collection.delete_one({"_id": key, f"{CLAIM_KEY}.started": held[CLAIM_KEY]["started"]})


@contextmanager
def claimed(
    store, fingerprint: str, label: str, find: Callable[[], T | None]
) -> Iterator[T | None]:
    """Claim a calculation before computing it. Yields None when this process holds the claim
    (compute it), or the result another run computed meanwhile (``find`` looks it up).
    ``store`` is a maggma Store (the JobStore's output collection), or None: no claims."""
    if store is None:
        yield None
        return
    collection = store._collection  # maggma's handle on the pymongo-like collection
    waited = False
    while (holder := _take(collection, fingerprint, label)) is not None:
        if not waited:
            logger.info(
                "%s: being computed by another run (%s, process %d); waiting for its result",
                label,
                holder["host"],
                holder["pid"],
            )
            waited = True
        while (held := collection.find_one({"_id": _claim_id(fingerprint)})) is not None:
            if not _alive(held[CLAIM_KEY], time.time()):
                break
            time.sleep(POLL_S)
        result = find()
        if result is not None:
            yield result
            return
        # the other run ended without a result (it failed or was stopped): compute it here
    try:
        yield None
    finally:
        collection.delete_one(
            {
                "_id": _claim_id(fingerprint),
                f"{CLAIM_KEY}.host": socket.gethostname(),
                f"{CLAIM_KEY}.pid": os.getpid(),
            }
        )
