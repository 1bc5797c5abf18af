"""Claims: two runs on one store compute each calculation once."""

import json
import os
import re
import subprocess
import sys
import threading
import time

import pytest
from maggma.stores import MemoryStore

from carrierflow.workflows import claims
from carrierflow.workflows.claims import CLAIM_KEY, claimed


def _claim(store, fingerprint, pid, started=None, host=None, ended=None):
    claim = {
        "fingerprint": fingerprint,
        "label": "Cu v_Cu",
        "started": time.time() if started is None else started,
        "host": host or claims.socket.gethostname(),
        "pid": pid,
    }
    if ended is not None:
        claim["ended"] = ended
    store._collection.insert_one({"_id": f"claim:{fingerprint}", CLAIM_KEY: claim})


def _store():
    store = MemoryStore()
    store.connect()
    return store


def _live_process():
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])


def _claims(store):
    return list(store._collection.find({"_id": {"$regex": "^claim:"}}))


def test_a_calculation_another_live_run_claimed_is_waited_for_and_reused(monkeypatch):
    monkeypatch.setattr(claims, "POLL_S", 0.05)
    store = _store()
    other = _live_process()
    try:
        _claim(store, "abc", other.pid)
        results = {}

        def finish():  # the other run stores its result and drops its claim
            time.sleep(0.3)
            results["abc"] = "computed by the other run"
            store._collection.delete_one({"_id": "claim:abc"})

        threading.Thread(target=finish).start()
        with claimed(store, "abc", "Cu v_Cu", lambda: results.get("abc")) as found:
            assert found == "computed by the other run"
    finally:
        other.kill()
    assert _claims(store) == []


def test_a_claim_whose_process_is_gone_or_too_old_blocks_nothing():
    store = _store()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _claim(store, "abc", gone.pid)
    with claimed(store, "abc", "Cu v_Cu", lambda: None) as found:
        assert found is None  # computed here, under this process's own claim
        [mine] = _claims(store)
        assert mine[CLAIM_KEY]["pid"] == os.getpid()
    # kept, marked ended, until the run ends (jobflow has not stored the result yet)
    [mine] = _claims(store)
    assert mine[CLAIM_KEY]["ended"] >= mine[CLAIM_KEY]["started"]
    claims.release(store)
    assert _claims(store) == []
    # another machine's claim holds until it is stale
    _claim(store, "old", 1, started=time.time() - claims.STALE_AFTER_S - 1, host="elsewhere")
    with claimed(store, "old", "Cu v_Cu", lambda: None) as found:
        assert found is None
    claims.release(store)
    assert _claims(store) == []


def test_a_run_that_ended_its_calculation_before_jobflow_stored_the_result_is_waited_for(
    monkeypatch,
):
    # the race seen in CI: the first run's claim was gone, its result not stored yet
    monkeypatch.setattr(claims, "POLL_S", 0.05)
    store = _store()
    other = _live_process()
    try:
        _claim(store, "abc", other.pid, ended=time.time())
        results = {}
        threading.Timer(0.3, lambda: results.update(abc="stored by jobflow")).start()
        with claimed(store, "abc", "Cu v_Cu", lambda: results.get("abc")) as found:
            assert found == "stored by jobflow"
        # one that ended longer ago than the grace without a result failed: computed here
        _claim(store, "failed", other.pid, ended=time.time() - claims.SAVE_GRACE_S - 1)
        with claimed(store, "failed", "Cu v_Cu", lambda: None) as found:
            assert found is None
            [mine] = [c for c in _claims(store) if c["_id"] == "claim:failed"]
            assert mine[CLAIM_KEY]["pid"] == os.getpid()
    finally:
        other.kill()


def test_a_result_stored_after_the_runs_first_look_is_reused_not_computed_again():
    store = _store()
    with claimed(store, "abc", "Cu v_Cu", lambda: "finished by the other run") as found:
        assert found == "finished by the other run"
    assert _claims(store) == []


def test_a_calculation_that_raises_drops_its_claim_at_once():
    store = _store()
    with pytest.raises(RuntimeError), claimed(store, "abc", "Cu v_Cu", lambda: None):
        raise RuntimeError("GPAW died")
    assert _claims(store) == []


def test_two_runs_started_together_on_one_store_compute_each_calculation_once(tmp_path):
    command = [
        sys.executable, "-m", "carrierflow.workflows.cli", "run", "--system", "Cu-Au",
        "--calculator", "emt", "--defects", "vacancy", "--store", str(tmp_path / "store"),
    ]  # fmt: skip
    runs = [
        subprocess.Popen(
            [*command, "--output", str(tmp_path / f"run{i}")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    logs = [run.communicate(timeout=600)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], logs
    pattern = r"\] (.+): (?:cell \+ ions relaxation|ionic relaxation|single point) of"
    computed = [re.findall(pattern, log) for log in logs]
    reused = [re.findall(r"\] (.+): reused from the store", log) for log in logs]
    both = computed[0] + computed[1]
    # every calculation computed by exactly one of the two runs, and reused by the other
    assert both and len(both) == len(set(both)), logs
    assert sorted(both) == sorted(reused[0] + reused[1]), logs
    energies = [
        [
            (d["name"], d["formation_energy_eV"])
            for phase in json.loads((tmp_path / f"run{i}" / "results.json").read_text())["hosts"]
            for d in phase["defects"]
        ]
        for i in range(2)
    ]
    assert energies[0] == energies[1]
