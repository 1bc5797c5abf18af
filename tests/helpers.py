"""Small helpers shared by the tests."""

from __future__ import annotations


def cu_au(command: str, store, output, *extra: str) -> list[str]:
    """``carrierflow COMMAND`` on the EMT analogue, with its store and output folder."""
    return [
        command,
        *("--system", "Cu-Au", "--calculator", "emt"),
        *("--store", str(store), "--output", str(output)),
        *extra,
    ]


def run_bcc_li(maker, store, root) -> dict:
    """A flow maker's flow on primitive bcc Li (the reference alone), run locally: its results
    document and every calculation document."""
    from jobflow import run_locally

    from carrierflow.analysis.documents import as_document
    from carrierflow.structures.sources import load_fixture
    from carrierflow.workflows.flows import Phase
    from carrierflow.workflows.schemas import CalculationDoc
    from carrierflow.workflows.store import flow_result

    lithium, source = load_fixture("Li")
    phase = Phase(label="Li", structure=lithium.get_primitive_structure(), source=source)
    flow = maker.make(phase, [])
    responses = run_locally(flow, store=store, root_dir=root, raise_immediately=True)
    docs = [
        r.output
        for job in responses.values()
        for r in job.values()
        if isinstance(r.output, CalculationDoc)
    ]
    return {"results": as_document(flow_result(responses, flow, store)), "docs": docs}
