"""Symmetry-distinct vacancies and interstitial candidates, placed in a shared supercell."""

from __future__ import annotations

import zlib
from typing import Literal

import numpy as np
from pydantic import BaseModel
from pymatgen.analysis.defects.generators import VacancyGenerator, VoronoiInterstitialGenerator
from pymatgen.core import DummySpecies, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from carrierflow.structures.sources import StructureError

SYMPREC = 0.01


class DefectCandidate(BaseModel):
    """One symmetry-distinct defect of the mobile species in a host cell."""

    name: str
    kind: Literal["vacancy", "interstitial"]
    species: str
    frac_coords: list[float]
    multiplicity: int
    equivalent_frac_coords: list[list[float]]
    nearest_host_distance_A: float


class DefectCell(BaseModel):
    """A defect placed in the host's perfect supercell (before rattling)."""

    name: str
    kind: Literal["vacancy", "interstitial"]
    structure: Structure
    site_cart: list[float]
    host_indices: list[int | None]


def check_species(host: Structure, species: str) -> None:
    """Refuse a host that does not contain the mobile species."""
    if species not in {el.symbol for el in host.composition.elements}:
        raise StructureError(f"species {species} is not in host {host.composition.reduced_formula}")


def equivalent_positions(host: Structure, frac_coords, tol: float = 1e-3) -> np.ndarray:
    """All positions in the host cell equivalent by symmetry to ``frac_coords``."""
    operations = SpacegroupAnalyzer(host, symprec=SYMPREC).get_symmetry_operations()
    positions: list[np.ndarray] = []
    for op in operations:
        image = np.mod(op.operate(frac_coords), 1.0)
        image[np.isclose(image, 1.0, atol=tol)] = 0.0
        if not any(_periodic_close(image, p, tol) for p in positions):
            positions.append(image)
    return np.array(positions)


def _periodic_close(a: np.ndarray, b: np.ndarray, tol: float) -> bool:
    delta = a - b
    return bool(np.all(np.abs(delta - np.round(delta)) < tol))


def _nearest_distance(host: Structure, frac_coords) -> float:
    """The distance from a point to the nearest host atom not on it, periodic images included
    (in a one-atom cell that is an image of the atom itself)."""
    centre = host.lattice.get_cartesian_coords(frac_coords)
    # an image of any site lies within the longest lattice vector
    neighbours = host.get_sites_in_sphere(centre, max(host.lattice.abc) + 1e-6)
    return float(min(n.nn_distance for n in neighbours if n.nn_distance > 1e-3))


def find_vacancies(host: Structure, species: str) -> list[DefectCandidate]:
    """Symmetry-distinct vacancies of ``species`` (pymatgen-analysis-defects' generator)."""
    check_species(host, species)
    symmetrized = SpacegroupAnalyzer(host, symprec=SYMPREC).get_symmetrized_structure()
    candidates = []
    for vacancy in VacancyGenerator(symprec=SYMPREC).get_defects(host, rm_species=[species]):
        site = vacancy.site
        wyckoff = next(
            symmetrized.wyckoff_symbols[i]
            for i, group in enumerate(symmetrized.equivalent_indices)
            if any(np.allclose(host[j].frac_coords, site.frac_coords) for j in group)
        )
        equivalent = equivalent_positions(host, site.frac_coords)
        candidates.append(
            DefectCandidate(
                name=f"v_{species}_{wyckoff}",
                kind="vacancy",
                species=species,
                frac_coords=[float(x) for x in site.frac_coords],
                multiplicity=len(equivalent),
                equivalent_frac_coords=equivalent.tolist(),
                nearest_host_distance_A=_nearest_distance(host, site.frac_coords),
            )
        )
    return _unique_names(candidates)


def find_interstitials(
    host: Structure, species: str, min_distance_A: float = 1.5
) -> list[DefectCandidate]:
    """Symmetry-distinct interstitial candidates (Voronoi nodes) at least ``min_distance_A``
    from every host atom."""
    check_species(host, species)
    generator = VoronoiInterstitialGenerator(min_dist=min_distance_A)
    candidates = []
    for interstitial in generator.get_defects(host, insert_species=[species]):
        frac = np.mod(interstitial.site.frac_coords, 1.0)
        candidates.append(interstitial_at(host, f"{species}_i", species, frac))
    # roomiest first: the usual order of interest, and stable names across runs
    candidates.sort(key=lambda c: (-round(c.nearest_host_distance_A, 3), c.multiplicity))
    return _unique_names(candidates)


def interstitial_at(host: Structure, name: str, species: str, frac_coords) -> DefectCandidate:
    """An interstitial candidate of ``species`` at ``frac_coords`` of the host cell."""
    frac = np.mod(np.asarray(frac_coords, dtype=float), 1.0)
    equivalent = equivalent_positions(host, frac)
    return DefectCandidate(
        name=name,
        kind="interstitial",
        species=species,
        frac_coords=[float(x) for x in frac],
        multiplicity=len(equivalent),
        equivalent_frac_coords=equivalent.tolist(),
        nearest_host_distance_A=_nearest_distance(host, frac),
    )


def find_defects(
    host: Structure, species: str, min_distance_A: float = 1.5
) -> list[DefectCandidate]:
    """All vacancies and interstitial candidates of ``species`` in ``host``."""
    return find_vacancies(host, species) + find_interstitials(host, species, min_distance_A)


def _unique_names(candidates: list[DefectCandidate]) -> list[DefectCandidate]:
    counts: dict[str, int] = {}
    for c in candidates:
        counts[c.name] = counts.get(c.name, 0) + 1
    seen: dict[str, int] = {}
    for c in candidates:
        if counts[c.name] > 1 or c.kind == "interstitial":
            seen[c.name] = seen.get(c.name, 0) + 1
            c.name = (
                f"{c.name}{seen[c.name]}"
                if c.kind == "interstitial"
                else f"{c.name}_{seen[c.name]}"
            )
    return candidates


def positions_in_supercell(host: Structure, matrix, frac_coords_list) -> np.ndarray:
    """Cartesian images, inside the supercell, of positions given in the host cell."""
    markers = Structure(host.lattice, [DummySpecies("X")] * len(frac_coords_list), frac_coords_list)
    return markers.make_supercell(matrix, in_place=False).cart_coords


def build_defect_cell(
    host: Structure, matrix, perfect: Structure, candidate: DefectCandidate
) -> DefectCell:
    """Remove or insert the mobile species in the perfect supercell at the candidate site."""
    site_cart = positions_in_supercell(host, matrix, [candidate.frac_coords])[0]
    site_frac = perfect.lattice.get_fractional_coords(site_cart)
    defect = perfect.copy()
    if candidate.kind == "vacancy":
        dists = perfect.lattice.get_all_distances([site_frac], perfect.frac_coords)[0]
        index = int(np.argmin(dists))
        if dists[index] > 0.1 or perfect[index].specie.symbol != candidate.species:
            raise StructureError(
                f"{candidate.name}: no {candidate.species} atom at the vacancy site"
            )
        defect.remove_sites([index])
        host_indices: list[int | None] = [i for i in range(len(perfect)) if i != index]
    else:
        defect.append(candidate.species, site_frac)
        host_indices = [*range(len(perfect)), None]
    return DefectCell(
        name=candidate.name,
        kind=candidate.kind,
        structure=defect,
        site_cart=site_cart.tolist(),
        host_indices=host_indices,
    )


def rattle_near(
    structure: Structure,
    center_cart,
    radius_A: float = 4.0,
    amplitude_A: float = 0.03,
    seed: str = "",
) -> Structure:
    """Randomly displace the atoms within ``radius_A`` of a point, reproducibly for a seed.

    A small rattle lets a relaxation leave a symmetric saddle point; the seed makes a
    rerun start from the very same geometry.
    """
    rng = np.random.default_rng(zlib.crc32(seed.encode()))
    rattled = structure.copy()
    center_frac = structure.lattice.get_fractional_coords(center_cart)
    distances = structure.lattice.get_all_distances([center_frac], structure.frac_coords)[0]
    for index in np.flatnonzero(distances < radius_A):
        rattled.translate_sites(
            [int(index)], rng.normal(0.0, amplitude_A, 3), frac_coords=False, to_unit_cell=True
        )
    return rattled
