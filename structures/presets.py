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
    model_note: str = Field("", description="what the preset's model is, said when a run uses it")


SYSTEMS: dict[str, SystemPreset] = {
    "Li-In": SystemPreset(
        species="Li",
        reference="Li",
        hosts=["Li5In4", "Li3In2"],
        note="Li-In anodes: x = 1.25 (Li5In4) and x = 1.5 (Li3In2) against bcc Li",
        # SevenNet as shipped puts the Li interstitials of Li-In 0.4-0.5 eV too low against
        # GPAW and calls the carrier an interstitial; fine-tuned on carrierflow's GPAW frames of
        # Li-In (fixtures/models/7net-li-in.card.json) it screens with DFT's energies
        model="7net-li-in",
        model_note="7net-0 fine-tuned on carrierflow's GPAW frames of Li-In, "
        "fixtures/models/7net-li-in.card.json",
    ),
    "Cu-Au": SystemPreset(
        species="Cu",
        reference="Cu",
        hosts=["Cu3Au"],
        note="EMT-computable analogue: Cu in ordered Cu3Au against fcc Cu (fast tests)",
    ),
}


def preset_model(system: str | None, calculator: str, model: str | None) -> str | None:
    """The model a calculator screens ``system`` with: the one given, else the preset's (a
    SevenNet model a preset names is for the sevennet calculator only), else None (the
    calculator's default)."""
    if model is not None or calculator != "sevennet" or system not in SYSTEMS:
        return model
    return SYSTEMS[system].model
