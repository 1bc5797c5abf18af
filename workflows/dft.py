"""DFT settings shared by every DFT code (VASP now, GPAW next), and the k-point rule."""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pymatgen.core import Structure

# ceil() must not jump a whole division on floating-point noise of an exact multiple
_MESH_TOLERANCE = 1e-6


def kpoint_mesh(structure: Structure, spacing: float) -> tuple[int, int, int]:
    """The Gamma-centred Monkhorst-Pack divisions of the study's k-point rule.

    ``n_i = max(1, ceil(|b_i| / (2 pi * spacing)))``, where ``|b_i|`` is the length of the
    i-th reciprocal lattice vector *including* the factor 2 pi and ``spacing`` is in units of
    2 pi / A (the study's 0.03). This is VASP's KSPACING rule with ``KSPACING = 2 pi * spacing``,
    written out so that every cell, bulk, perfect supercell and defect cell, gets a mesh of the
    same density.

    Parameters
    ----------
    structure
        Any periodic structure.
    spacing
        Largest allowed distance between k-points, in units of 2 pi / A.
    """
    if spacing <= 0:
        raise ValueError(f"k-point spacing must be positive, got {spacing}")
    lengths = np.array(structure.lattice.reciprocal_lattice.abc) / (2 * math.pi * spacing)
    return tuple(max(1, math.ceil(n - _MESH_TOLERANCE)) for n in lengths)


# a laptop's DFT: about 0.1 eV per formation energy for hours instead of days
PRESETS: dict[str, dict] = {
    "study": {},
    "fast": {"encut_eV": 400.0, "kspacing": 0.05, "ediff_eV": 1e-5},
}


# INCAR tags that --incar may not set: their own option's, or each job's
INCAR_TAGS_SET_BY_CARRIERFLOW = {
    "ENCUT": "by --encut",
    "EDIFF": "by --ediff",
    "EDIFFG": "by --fmax",
    "SIGMA": "by --sigma",
    "KSPACING": "by --kspacing",
    "IMAGES": "by --images",
    **{tag: "by each job (relaxation, single point, NEB)" for tag in ("NSW", "ISIF", "IBRION")},
}


class DftSettings(BaseModel):
    """The study's DFT settings (PBE, VASP conventions); every field can be overridden.

    ``forces`` of a relaxation come from the calculator's ``fmax``, not from here, so the same
    flag sets them for every calculator.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    encut_eV: float = Field(
        500.0, gt=0, description="plane-wave cut-off, eV", json_schema_extra={"option": "--encut"}
    )
    kspacing: float = Field(
        0.03,
        gt=0,
        description="k-point spacing in units of 2pi/A: n_i = max(1, ceil(|b_i| / (2pi x "
        "spacing)))",
        json_schema_extra={"option": "--kspacing"},
    )
    ediff_eV: float = Field(
        1e-6,
        gt=0,
        description="SCF energy convergence per cell, eV",
        json_schema_extra={"option": "--ediff"},
    )
    # Methfessel-Paxton of first order: the energy extrapolated to zero smearing stays accurate
    # for sp metals with a broad smearing, so the k-mesh above converges; 0.1 eV keeps the
    # entropy term (T*S) far below custodian's 1 meV/atom limit in Li-In.
    smearing: str = Field("mp1", pattern=r"^mp[12]$", description="Methfessel-Paxton order")
    sigma_eV: float = Field(
        0.1,
        gt=0,
        description="Methfessel-Paxton smearing width, eV",
        json_schema_extra={"option": "--sigma"},
    )
    potcars: dict[str, str] = Field(
        default_factory=dict,
        description="VASP POTCAR per element, over the Materials Project choices (Li_sv, In_d)",
        json_schema_extra={"option": "--potcar", "metavar": "EL=SYMBOL"},
    )
    incar: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="further VASP INCAR tags, applied last",
        json_schema_extra={"option": "--incar", "metavar": "TAG=VALUE"},
    )

    @field_validator("incar")
    @classmethod
    def _no_tag_carrierflow_sets(cls, incar: dict) -> dict:
        """A tag that has its own option would be applied but recorded under the option's
        value (ENCUT=600 beside encut_eV 500); one each job sets (NSW, ISIF, IBRION) was
        overwritten silently."""
        for tag in incar:
            if tag.upper() in INCAR_TAGS_SET_BY_CARRIERFLOW:
                owner = INCAR_TAGS_SET_BY_CARRIERFLOW[tag.upper()]
                raise ValueError(f"{tag} is set {owner}, not by --incar")
        return incar

    @classmethod
    def option(cls, setting: str) -> str:
        """A setting's command-line option (``encut_eV`` -> ``--encut``), for messages."""
        return (cls.model_fields[setting].json_schema_extra or {}).get("option", setting)

    def overrides(self) -> dict:
        """The settings that differ from the study's."""
        default = DftSettings().model_dump()
        return {k: v for k, v in self.model_dump().items() if v != default[k]}
