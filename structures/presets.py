"""Named systems: a mobile species, its reference phase and the hosts to compare."""

from __future__ import annotations

from pydantic import BaseModel, Field


class SystemPreset(BaseModel):
    """A system to study: hosts and reference are formulas, mp-ids or structure files."""

    species: str
    reference: str
    hosts: list[str]
    note: str = ""
    model: str | None = Field(
        None,
        description="the SevenNet model a sevennet screen of this system uses when --model is "
        "not given (None: the calculator's default)",
    )


SYSTEMS: dict[str, SystemPreset] = {
    "Li-In": SystemPreset(
        species="Li",
        reference="Li",
        hosts=["Li5In4", "Li3In2"],
        note="Li-In anodes: x = 1.25 (Li5In4) and x = 1.5 (Li3In2) against bcc Li",
    ),
    "Cu-Au": SystemPreset(
        species="Cu",
        reference="Cu",
        hosts=["Cu3Au"],
        note="EMT-computable analogue: Cu in ordered Cu3Au against fcc Cu (fast tests)",
    ),
}
