"""Where host and reference structures come from: Materials Project, fixtures or files."""

from __future__ import annotations

import json
import logging
import os
import re
from datetime import UTC, datetime
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel
from pymatgen.core import Composition, Structure

logger = logging.getLogger("carrierflow")

MP_ID = re.compile(r"^(mp|mvc)-\d+$")


class StructureError(ValueError):
    """A host or reference structure that cannot be found or used."""


class StructureSource(BaseModel):
    """Provenance of one structure, carried into every result that uses it."""

    kind: Literal["materials_project", "fixture", "file"]
    id: str
    formula: str
    database_version: str | None = None
    retrieved: str | None = None
    energy_above_hull_eV: float | None = None
    provenance: str | None = None


def materials_project_key() -> str | None:
    """The Materials Project API key from ``MP_API_KEY`` or pymatgen's settings, if any."""
    key = os.environ.get("MP_API_KEY")
    if key:
        return key
    from pymatgen.core import SETTINGS

    return SETTINGS.get("PMG_MAPI_KEY")


def _mp_rester(api_key: str):
    from mp_api.client import MPRester

    return MPRester(api_key)


def fetch_from_materials_project(query: str, api_key: str) -> tuple[Structure, StructureSource]:
    """Fetch a structure by mp-id, or the lowest-energy-above-hull one for a formula.

    Parameters
    ----------
    query
        An mp-id (``mp-1234``) or a formula (``Li5In4``).
    api_key
        The Materials Project API key.
    """
    fields = ["material_id", "structure", "energy_above_hull", "formula_pretty"]
    with _mp_rester(api_key) as mpr:
        if MP_ID.match(query):
            docs = mpr.materials.summary.search(material_ids=[query], fields=fields)
        else:
            docs = mpr.materials.summary.search(formula=query, fields=fields)
        if not docs:
            raise StructureError(f"the Materials Project has no entry for '{query}'")
        best = min(
            docs,
            key=lambda d: d.energy_above_hull if d.energy_above_hull is not None else float("inf"),
        )
        version = mpr.get_database_version()
    source = StructureSource(
        kind="materials_project",
        id=str(best.material_id),
        formula=best.structure.composition.reduced_formula,
        database_version=version,
        retrieved=datetime.now(UTC).isoformat(timespec="seconds"),
        energy_above_hull_eV=best.energy_above_hull,
        provenance=f"Materials Project {best.material_id} (database {version})",
    )
    return best.structure, source


@cache
def fixture_index() -> dict[str, dict]:
    """The fixtures shipped with carrierflow, keyed by name (a reduced formula or a label)."""
    index = json.loads(files("carrierflow.fixtures").joinpath("index.json").read_text())
    return {name: entry for name, entry in index.items() if not name.startswith("_")}


def load_fixture(name: str) -> tuple[Structure, StructureSource]:
    """Load a fixture by name or formula (``Li5In4``, ``Li``, ``Li5In4-alternative``)."""
    index = fixture_index()
    key = name if name in index else _reduced_formula(name)
    if key not in index:
        raise StructureError(
            f"no fixture for '{name}' (fixtures: {', '.join(sorted(index))}); "
            "give a structure file or set MP_API_KEY to fetch it from the Materials Project"
        )
    entry = index[key]
    text = files("carrierflow.fixtures").joinpath(entry["file"]).read_text()
    structure = Structure.from_dict(json.loads(text))
    source = StructureSource(
        kind="fixture",
        id=entry["file"],
        formula=structure.composition.reduced_formula,
        provenance=entry["provenance"],
    )
    return structure, source


def _reduced_formula(text: str) -> str:
    try:
        composition = Composition(text)
    except (ValueError, KeyError) as exc:
        raise StructureError(
            f"'{text}' is neither a structure file, an mp-id nor a formula"
        ) from exc
    if composition.num_atoms == 0:
        raise StructureError(f"'{text}' is neither a structure file, an mp-id nor a formula")
    return composition.reduced_formula


# suffixes that make a host specification a file name (a formula never has one)
STRUCTURE_SUFFIXES = {".cif", ".vasp", ".poscar", ".json", ".xyz", ".extxyz", ".cssr", ".mcif"}
# closer than this, two atoms are one atom given twice (the shortest bond, H2, is 0.74 A)
MIN_INTERATOMIC_A = 0.5
# an empty slab this thick means vacuum: a molecule or slab in a box, not a bulk crystal
VACUUM_GAP_A = 5.0


def read_structure_file(path: Path) -> Structure:
    """A structure from a file, recognised by its content where the name says nothing
    (``POSCAR``, ``CONTCAR``, or a VASP file under any name)."""
    from pymatgen.io.vasp import Poscar

    try:
        return Structure.from_file(path)
    except Exception as first:
        try:
            return Poscar.from_file(path, check_for_potcar=False).structure
        except Exception:
            raise StructureError(f"cannot read a structure from '{path}': {first}") from first


def check_bulk(structure: Structure, name: str) -> None:
    """Refuse what is not an ordered, periodic bulk crystal: partial occupancies, atoms on top
    of each other, vacuum (a molecule or a slab in a box)."""
    if not structure.is_ordered:
        raise StructureError(
            f"{name} is disordered (partial occupancies): give an ordered structure"
        )
    if len(structure) > 1:
        distances = structure.distance_matrix + np.eye(len(structure)) * 1e9
        closest = float(distances.min())
        if closest < MIN_INTERATOMIC_A:
            raise StructureError(
                f"{name} has atoms {closest:.2f} A apart (closer than {MIN_INTERATOMIC_A} A: "
                "an atom given twice?)"
            )
    gap, axis = vacuum_gap(structure)
    if gap >= VACUUM_GAP_A:
        raise StructureError(
            f"{name} has {gap:.1f} A of vacuum along lattice vector {axis + 1}: a molecule or "
            "slab in a box, not a bulk crystal"
        )


def vacuum_gap(structure: Structure) -> tuple[float, int]:
    """The thickest empty slab between atomic planes (A) along any lattice direction, and which:
    the largest gap between the atoms' fractional coordinates along a reciprocal vector, times
    the interplanar spacing."""
    spacings = 1.0 / np.linalg.norm(
        structure.lattice.reciprocal_lattice_crystallographic.matrix, axis=1
    )
    best = (0.0, 0)
    for axis in range(3):
        coords = np.sort(np.mod(structure.frac_coords[:, axis], 1.0))
        gaps = np.diff(np.concatenate([coords, [coords[0] + 1.0]]))
        gap = float(gaps.max() * spacings[axis])
        best = max(best, (gap, axis))
    return best


def load_structure(spec: str) -> tuple[Structure, StructureSource]:
    """Resolve a host or reference given as a structure file, an mp-id or a formula.

    Formulas and mp-ids go to the Materials Project when a key is set; formulas fall back
    to the shipped fixtures when there is no key or no connection, and say so in one line.
    """
    path = Path(spec)
    if path.is_file():
        structure = read_structure_file(path)
        return structure, StructureSource(
            kind="file",
            id=str(path.resolve()),
            formula=structure.composition.reduced_formula,
            provenance=f"file {path.name}",
        )
    if path.suffix.lower() in STRUCTURE_SUFFIXES or "/" in spec:
        raise StructureError(f"structure file '{spec}' not found")
    key = materials_project_key()
    if MP_ID.match(spec):
        if not key:
            raise StructureError(
                f"'{spec}' is a Materials Project id, but no MP_API_KEY is set "
                "(export MP_API_KEY or give a formula or structure file)"
            )
        try:
            return fetch_from_materials_project(spec, key)
        except StructureError:
            raise
        except Exception as exc:
            raise StructureError(
                f"could not reach the Materials Project for '{spec}': {exc}"
            ) from exc
    if key:
        try:
            return fetch_from_materials_project(_reduced_formula(spec), key)
        except StructureError as exc:
            if "has no entry" in str(exc):
                raise
            reason = str(exc)
        except Exception as exc:
            reason = f"Materials Project unreachable ({type(exc).__name__})"
    else:
        reason = "no MP_API_KEY set"
    structure, source = load_fixture(spec)
    logger.warning(
        "%s: using the shipped fixture %s, %s [%s]",
        spec,
        source.id,
        source.provenance.split(":")[0] if source.provenance else "fixture",
        reason,
    )
    return structure, source
