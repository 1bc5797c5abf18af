"""Queries for finished results in a jobflow store (on disk or MongoDB)."""

from __future__ import annotations

from jobflow import JobStore

from carrierflow.analysis.documents import as_document

# results stored before runs had an identity carry no run_id
LEGACY = {"$exists": False}


def find_results(
    store: JobStore,
    system: str,
    calculator_label: str | None = None,
    flow_id: str | None = None,
    run_id: str | dict | None = None,
) -> dict | None:
    """The newest results document of a run (``run_id``; ``LEGACY`` for results stored before
    runs had one), or of a system, calculator and submitted flow, or None. The document gets
    its ``run_id``."""
    criteria = {"metadata.carrierflow": "results", "metadata.system": system}
    if calculator_label:
        criteria["metadata.calculator"] = calculator_label
    if flow_id:
        criteria["hosts"] = flow_id
    if run_id is not None:
        criteria["metadata.run_id"] = run_id
    docs = list(
        store.query(
            criteria,
            properties=["output", "completed_at", "metadata.run_id"],
            sort={"completed_at": -1},
            limit=1,
        )
    )
    if not docs:
        return None
    return {**as_document(docs[0]["output"]), "run_id": docs[0].get("metadata", {}).get("run_id")}


def list_runs(store: JobStore) -> list[dict]:
    """Every finished run in a store, newest first: system, calculator label, run id, when, and
    the settings a reader tells runs apart by."""
    docs = store.query(
        {"metadata.carrierflow": "results"},
        properties=["metadata", "completed_at", "output.settings", "output.calculator"],
        sort={"completed_at": -1},
    )
    runs = []
    for doc in docs:
        metadata, output = doc.get("metadata", {}), doc.get("output", {})
        runs.append(
            {
                "system": metadata.get("system"),
                "calculator": metadata.get("calculator"),
                "run_id": metadata.get("run_id"),
                "completed_at": doc.get("completed_at"),
                "settings": output.get("settings", {}),
                "fmax_eV_A": output.get("calculator", {}).get("fmax_eV_A"),
            }
        )
    return runs


def partial_results(
    store: JobStore,
    system: str,
    label: str,
    flow_id: str | None = None,
    jobs: list[dict] | None = None,
    run_id: str | None = None,
) -> dict | None:
    """What a run that has not finished has stored so far: its finished calculations, assessed
    defects (the latest assessment of each) and failures, and the state of its queued ``jobs``
    when it runs through a queue; None when there is nothing of it."""
    criteria = {"metadata.carrierflow_run.system": system, "metadata.carrierflow_run.label": label}
    if run_id is not None:
        criteria["metadata.carrierflow_run.run_id"] = run_id
    if flow_id:
        criteria["hosts"] = flow_id
    docs = list(store.query(criteria, properties=["output", "completed_at", "name"]))
    if not docs and not jobs:
        return None
    docs.sort(key=lambda d: d.get("completed_at") or "")
    calculations, failures, defects, phases = [], [], {}, []
    for doc in docs:
        output = doc.get("output")
        if not isinstance(output, dict):
            continue
        if output.get("failed"):
            failures.append(output)
        elif "fingerprint" in output and "task" in output:
            calculations.append(output)
        elif {"host", "kind", "formation_energy_eV"} <= output.keys():
            defects[
                (output["host"], output["name"], bool(output.get("provenance", {}).get("runs")))
            ] = output
        elif "defects" in output and "perfect_energy_eV" in output:
            runs = output.get("provenance", {}).get("bulk", {}).get("runs")
            code = runs[0]["code_version"] if runs else "stand-in"
            phases.append(f"{output['label']} ({code})")
    return {
        "system": system,
        "label": label,
        **({"run_id": run_id} if run_id is not None else {}),
        "calculations": len(calculations),
        "calculation_labels": [c["label"] for c in calculations],
        "failures": failures,
        "defects": list(defects.values()),
        "finished_phases": phases,
        **({"jobs": jobs} if jobs is not None else {}),
    }
