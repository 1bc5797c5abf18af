"""Queries for finished results in a jobflow store (on disk or MongoDB)."""

from __future__ import annotations

from jobflow import JobStore


def find_results(
    store: JobStore,
    system: str,
    calculator_label: str | None = None,
    flow_id: str | None = None,
) -> dict | None:
    """The newest results document of a system (and calculator, and submitted flow), or None."""
    criteria = {"metadata.carrierflow": "results", "metadata.system": system}
    if calculator_label:
        criteria["metadata.calculator"] = calculator_label
    if flow_id:
        criteria["hosts"] = flow_id
    docs = list(
        store.query(
            criteria, properties=["output", "completed_at"], sort={"completed_at": -1}, limit=1
        )
    )
    return docs[0]["output"] if docs else None


def partial_results(
    store: JobStore,
    system: str,
    label: str,
    flow_id: str | None = None,
    jobs: list[dict] | None = None,
) -> dict | None:
    """What a run that has not finished has stored so far: its finished calculations, assessed
    defects (the latest assessment of each) and failures, and the state of its queued ``jobs``
    when it runs through a queue; None when there is nothing of it."""
    criteria = {"metadata.carrierflow_run.system": system, "metadata.carrierflow_run.label": label}
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
        "calculations": len(calculations),
        "calculation_labels": [c["label"] for c in calculations],
        "failures": failures,
        "defects": list(defects.values()),
        "finished_phases": phases,
        **({"jobs": jobs} if jobs is not None else {}),
    }
