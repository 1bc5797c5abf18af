"""The results document of a run, typed: what ``results.json`` is, and what ``report`` reads.

One model per block (a defect row, a phase, the refinement's and the learning loop's additions);
:class:`Results` is the whole file. It is checked before anything is written: a key no model
names, a missing one, or a number that is not finite is an error, never a silent ``NaN`` in a
file that strict JSON parsers reject. ``results.schema.json`` beside this module is its JSON
Schema (regenerate with ``python -m carrierflow.analysis.documents``).
"""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from carrierflow.analysis.flags import Flag
from carrierflow.analysis.schemas import (
    LocalRelaxation,
    PhaseTransport,
    ScreenComparison,
    StartsSearch,
)
from carrierflow.structures.sources import StructureSource
from carrierflow.structures.supercells import SupercellChoice

# 3: typed, checked documents (refined_from and learned blocks declared)
# 4: flags are {code, text} (analysis/flags.py), no longer sentences alone
RESULTS_SCHEMA_VERSION = 4
SCHEMA_FILE = "results.schema.json"

Kind = Literal["vacancy", "interstitial"]
Carrier = Literal["vacancy", "interstitial", "undecided"]


class _Document(BaseModel):
    # every key declared, every number finite
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class DefectRow(_Document):
    """One defect of a phase, as it ranks in the verdict."""

    name: str
    kind: Kind
    frac_coords: list[float]
    multiplicity: int
    formation_energy_eV: float
    local_formation_energy_eV: float | None = Field(
        description="E_f with the far field fixed, when the host reconstructed"
    )
    ranking_energy_eV: float = Field(description="the E_f the verdict ranks by")
    site_fraction: float | None = Field(
        description="equilibrium site fraction at temperature_K (None: its atoms ran together, "
        "or E_f < 0, the host unstable against it)"
    )
    converged: bool
    steps: int
    max_displacement_A: float
    far_field_displacement_A: float
    defect_shift_A: float
    ended_at: str | None
    flags: list[Flag]
    local: LocalRelaxation | None
    provenance: dict
    screen: ScreenComparison | None = Field(description="the stand-in beside DFT (--refine)")
    search: StartsSearch | None = Field(description="the starts tried (--starts)")


class PhaseResult(_Document):
    """A phase (a host, or the species' pure phase as the yardstick): its defects and verdict."""

    label: str
    formula: str
    source: StructureSource
    bulk_energy_per_atom_eV: float
    bulk_lattice_abc_A: list[float]
    supercell: SupercellChoice
    perfect_energy_eV: float
    defects: list[DefectRow]
    screen_supercell: SupercellChoice | None
    screened: list[DefectRow] = Field(description="every start's small-cell screen")
    lowest_eV: dict[Kind, float | None]
    lowest_defect: dict[Kind, str | None]
    dominant_carrier: Carrier
    margin_eV: float | None = Field(description="lowest interstitial minus lowest vacancy E_f")
    verdict_reason: str
    flagged_defects: list[str]
    vacancy_vs_reference_eV: float | None
    provenance: dict
    mu_eV: float | None = Field(None, description="the species' energy per atom (reference)")
    transport: PhaseTransport | None = Field(None, description="--migration")


class Verdict(_Document):
    """A phase's verdict by another calculator."""

    dominant_carrier: Carrier
    margin_eV: float | None
    lowest_eV: dict[Kind, float | None]


class RefinedFrom(_Document):
    """What the stand-in screen said before DFT refined it (--refine)."""

    calculator: dict
    refine: dict
    verdicts: dict[str, Verdict]


class LearnedDefect(_Document):
    """A DFT defect beside the last fine-tuned screen's E_f."""

    phase: str
    name: str
    kind: Kind
    dft_eV: float
    dft_supercell_atoms: int
    fine_tuned_eV: float | None
    fine_tuned_supercell_atoms: int
    difference_eV: float | None


class Learned(_Document):
    """The learning loop (--learn): each round's model, its screen and what went to DFT."""

    settings: dict
    rounds: list[dict]
    model: dict
    calculator: dict
    verdicts: dict[str, Verdict]
    defects: list[LearnedDefect]
    note: str


class Results(_Document):
    """``results.json``."""

    schema_version: int
    system: str
    species: str
    calculator: dict = Field(description="what computed the verdict, with its version")
    code_versions: list[str]
    temperature_K: float
    settings: dict
    created: str
    reference: PhaseResult
    hosts: list[PhaseResult]
    refined_from: RefinedFrom | None = None
    learned: Learned | None = None
    migration: dict | None = Field(None, description="the NEB settings (--migration)")
    run_id: str | None = Field(None, description="the run's identity in the store")


def verdicts(results: Results) -> dict[str, Verdict]:
    """Each phase's verdict in a results document, by formula."""
    return {
        phase.formula: Verdict(
            dominant_carrier=phase.dominant_carrier,
            margin_eV=phase.margin_eV,
            lowest_eV=phase.lowest_eV,
        )
        for phase in [results.reference, *results.hosts]
    }


def as_document(results: Results | dict) -> dict:
    """results.json's content from what a flow returns: the :class:`Results` jobs pass between
    them, or a stored document (a plain dict; the store adds monty's ``@module``/``@class``
    keys to every model, taken off here). Every declared key is written, unset ones as null, so
    a run's document and the same document read back from the store are equal."""
    if isinstance(results, Results):
        return results.model_dump(mode="json")

    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items() if not k.startswith("@")}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    document = plain(results)
    if document.get("schema_version") == RESULTS_SCHEMA_VERSION:
        return Results.model_validate(document).model_dump(mode="json")
    return document


def checked(results: dict) -> dict:
    """The document as :class:`Results` reads it back: an error names the first key that does
    not fit. Documents of an older schema pass as they are (a store keeps them)."""
    if results.get("schema_version", 0) < RESULTS_SCHEMA_VERSION:
        return results
    return Results.model_validate(results).model_dump(mode="json", exclude_unset=True)


def schema() -> dict:
    """The JSON Schema of results.json."""
    return Results.model_json_schema()


def shipped_schema() -> dict:
    """The JSON Schema file that ships beside this module."""
    return json.loads(files("carrierflow.analysis").joinpath(SCHEMA_FILE).read_text())


if __name__ == "__main__":
    from pathlib import Path

    target = Path(__file__).with_name(SCHEMA_FILE)
    target.write_text(json.dumps(schema(), indent=2) + "\n")
    print(f"written: {target}")
