"""Documents that analysis reads: assessed defects and hosts."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field
from pymatgen.core import Structure

from carrierflow.analysis.flags import Flag, FlagCode, has
from carrierflow.structures.sources import StructureSource
from carrierflow.structures.supercells import SupercellChoice


class LocalRelaxation(BaseModel):
    """The same defect relaxed again with the atoms far from it held fixed."""

    radius_A: float
    energy_eV: float
    formation_energy_eV: float
    converged: bool
    steps: int
    max_displacement_A: float
    provenance: dict = Field(default_factory=dict)


class StartsSearch(BaseModel):
    """The search over several starts of one candidate: what each start reached."""

    starts: list[str] = Field(description="the starts tried, in order")
    formation_energies_eV: list[float] = Field(description="ranking E_f each start reached")
    distinct_states: int = Field(description="final states more than 1 meV apart")
    spread_eV: float = Field(description="highest minus lowest E_f: the path dependence")
    winner: str = Field(description="the start that reached the lowest E_f")
    collapsed: list[str] = Field(
        default_factory=list,
        description="starts whose atoms ran together (a hole in the model): left out above",
    )
    final_cell_winner: str | None = Field(
        None,
        description="with --screen-image-distance: the final-cell relaxation that gave the "
        "lowest state: 'first start' (a single-start run's) or 'screen: <start>' (a small-cell "
        "state carried over)",
    )


class ScreenComparison(BaseModel):
    """A refined defect's stand-in formation energies beside its DFT one."""

    calculator: str
    formation_energy_eV: float = Field(description="stand-in, in the DFT supercell")
    screen_formation_energy_eV: float = Field(description="stand-in, in the screening supercell")
    error_eV: float = Field(description="stand-in minus DFT, same supercell and start")
    search: StartsSearch | None = Field(
        None,
        description="with --starts: the stand-in's search in the DFT supercell, whose lowest "
        "state DFT started from",
    )
    chosen_by: list[Literal["screen", "dft_cell"]] = Field(
        default_factory=list,
        description="the rankings that sent it to DFT: among the lowest of the screen, of the "
        "stand-in in the DFT supercell, or both (empty: refined by name, or before 2026-12-05)",
    )


class DefectOutcome(BaseModel):
    """A relaxed defect, assessed: energy, geometry, where it ended up, and flags."""

    host: str
    name: str
    kind: Literal["vacancy", "interstitial"]
    species: str
    frac_coords: list[float]
    multiplicity: int
    energy_eV: float
    formation_energy_eV: float
    converged: bool
    steps: int
    max_displacement_A: float
    far_field_displacement_A: float
    defect_shift_A: float = Field(description="distance the defect centre moved")
    ended_at: str | None = Field(None, description="candidate whose site the defect ended on")
    flags: list[Flag] = Field(default_factory=list)
    local: LocalRelaxation | None = None
    provenance: dict = Field(
        default_factory=dict, description="task id and code runs behind the energy"
    )
    screen: ScreenComparison | None = Field(
        None, description="the stand-in's numbers for a defect refined with DFT"
    )
    structure: Structure | None = Field(None, description="the relaxed defect supercell")
    search: StartsSearch | None = Field(
        None, description="with several starts: what each reached (the lowest is this one)"
    )

    @property
    def collapsed(self) -> bool:
        """Its atoms ran together in the relaxation: no state, never ranked."""
        return has(self.flags, FlagCode.COLLAPSED)

    @property
    def ranking_energy_eV(self) -> float:
        """The energy used for ranking: the local one when the host reconstructed."""
        return self.local.formation_energy_eV if self.local else self.formation_energy_eV


class HostOutcome(BaseModel):
    """Everything computed for one host (or the reference phase)."""

    label: str
    formula: str
    is_reference: bool
    source: StructureSource
    bulk_energy_per_atom_eV: float
    bulk_lattice_abc_A: list[float]
    supercell: SupercellChoice
    perfect_energy_eV: float
    defects: list[DefectOutcome]
    screened: list[DefectOutcome] = Field(
        default_factory=list,
        description="with a small-cell screen: every candidate's lowest state in that cell",
    )
    screen_supercell: SupercellChoice | None = Field(
        None, description="the small-cell screen's supercell"
    )
    provenance: dict = Field(
        default_factory=dict, description="task ids and code runs of the bulk and perfect cell"
    )


class HopOutcome(BaseModel):
    """One hop of a carrier, from its relaxed endpoints and climbing-image NEB."""

    name: str
    kind: Literal["vacancy", "interstitial"]
    start: str
    end: str
    length_A: float
    multiplicity: int
    symmetric: bool
    mechanism: Literal["direct", "interstitialcy"] = "direct"
    moving_atoms: int = 1
    energies_eV: list[float] = Field(default_factory=list, description="relative to the start")
    path_A: list[float] = Field(default_factory=list)
    barrier_eV: float | None = Field(None, description="highest image above the start (E_m)")
    reverse_barrier_eV: float | None = None
    converged: bool = False
    counts: bool = Field(
        False, description="converged, with a saddle between endpoints that stayed put"
    )
    activation_energy_eV: float | None = Field(None, description="E_f + E_m")
    flags: list[Flag] = Field(default_factory=list)
    provenance: dict = Field(default_factory=dict)


class CarrierTransport(BaseModel):
    """A carrier's hops, its activation energy and diffusion coefficient."""

    kind: Literal["vacancy", "interstitial"]
    defect: str | None = Field(None, description="the defect whose hops were computed")
    formation_energy_eV: float | None = None
    hops: list[HopOutcome] = Field(default_factory=list)
    activation_energy_eV: float | None = Field(None, description="lowest E_f + E_m")
    migration_barrier_eV: float | None = Field(None, description="E_m of the limiting hop")
    limiting_hop: str | None = None
    diffusion_cm2_s: float | None = None
    flags: list[Flag] = Field(default_factory=list)


class PhaseTransport(BaseModel):
    """Transport by each carrier in one phase, and which carrier dominates it."""

    label: str
    temperature_K: float
    attempt_frequency_Hz: float
    carriers: list[CarrierTransport]
    dominant_transport_carrier: str
    reason: str
