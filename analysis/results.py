"""Queries for finished results in a jobflow store (on disk or MongoDB)."""

from __future__ import annotations

from jobflow import JobStore


def find_results(store: JobStore, system: str, calculator_label: str | None = None) -> dict | None:
    """The newest results document of a system (and calculator), or None."""
    criteria = {"metadata.carrierflow": "results", "metadata.system": system}
    if calculator_label:
        criteria["metadata.calculator"] = calculator_label
    docs = list(
        store.query(
            criteria, properties=["output", "completed_at"], sort={"completed_at": -1}, limit=1
        )
    )
    return docs[0]["output"] if docs else None
