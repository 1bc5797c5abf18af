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
