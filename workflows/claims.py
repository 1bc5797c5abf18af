"""Claims: a calculation is claimed in the store before it starts, so that two runs on one store
never compute the same calculation twice.

Two ``carrierflow run`` on one store (a second system sharing the reference phase, a rerun with
one more option) walk their flows in the same order: without claims the second computed 6 of the
EMT analogue's 9 calculations again, while the first was still on them. With a claim, the second
waits for the first's result and reuses it. A claim is a small document in the store's output
collection. A claim whose process is gone (same machine, no such process) or older than
:data:`STALE_AFTER_S` (another machine) is ignored, so a run killed mid-calculation blocks nothing.
Under jobflow-remote the queue already runs each job once, and no claim is written.

A claim outlives its calculation by a moment: jobflow stores a job's output after the job
returns, so a claim dropped when the calculation ended let a waiting run look for the result
before it was stored and compute it again (seen once in CI, with both runs slowed by a GPAW
relaxation beside them). An ended claim therefore says when it ended and stays until its run
ends (:func:`release`); a waiting run reuses the result once it is stored, and takes the
calculation over only if none appears within :data:`SAVE_GRACE_S` (the first run failed). And a
run that takes a claim looks for the result once more: the other run may have finished it
between this run's first look and its claim.
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
# how long an ended claim waits for its result to be stored before another run takes over (jobflow
# stores it right after the job returns: well under a second here, seconds under heavy load)
SAVE_GRACE_S = 60.0

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


def _blocks(claim: dict, now: float) -> bool:
    """Whether a claim keeps other runs from computing its calculation: its run is alive, and
    the calculation is running or ended so recently that its result may not be stored yet."""
    ended = claim.get("ended")
    if ended is not None and (claim["host"], claim["pid"]) == (socket.gethostname(), os.getpid()):
        return False  # this run's own: jobflow stored its result before the next job began
    return _alive(claim, now) and (ended is None or now - ended < SAVE_GRACE_S)


def _mine() -> dict:
    return {f"{CLAIM_KEY}.host": socket.gethostname(), f"{CLAIM_KEY}.pid": os.getpid()}


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
        if _blocks(held[CLAIM_KEY], time.time()):
            return held[CLAIM_KEY]
        # its run died, or it ended without a result: drop that claim (only that one), try again
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
    key = _claim_id(fingerprint)
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
        while (held := collection.find_one({"_id": key})) is not None:
            if "ended" in held[CLAIM_KEY] and (result := find()) is not None:
                yield result
                return
            if not _blocks(held[CLAIM_KEY], time.time()):
                break
            time.sleep(POLL_S)
        if (result := find()) is not None:
            yield result
            return
        # the other run ended without a result (it failed or was stopped): compute it here
    if (result := find()) is not None:  # finished by another run since this one looked
        collection.delete_one({"_id": key, **_mine()})
        yield result
        return
    try:
        yield None
    except BaseException:
        collection.delete_one({"_id": key, **_mine()})
        raise
    collection.update_one({"_id": key, **_mine()}, {"$set": {f"{CLAIM_KEY}.ended": time.time()}})


def release(store) -> None:
    """Drop this process's claims, at the end of its run (its results are stored by then)."""
    if store is not None:
        store._collection.delete_many({"_id": {"$regex": "^claim:"}, **_mine()})
