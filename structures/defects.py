"""Symmetry-distinct vacancies and interstitial candidates, placed in a shared supercell."""

from __future__ import annotations

import itertools
import zlib
from typing import Literal

import numpy as np
from pydantic import BaseModel
from pymatgen.core import DummySpecies, Lattice, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
from scipy.spatial import Voronoi

from carrierflow.structures.sources import StructureError
from carrierflow.structures.symmetry import (
    SYMPREC,
    canonical_frac,
    space_group_operations,
    tolerant_rank,
)


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


def equivalent_positions(host: Structure, frac_coords, tol_A: float = 0.01) -> np.ndarray:
    """All positions in the host cell equivalent by symmetry to ``frac_coords``, in a canonical
    order (see :func:`canonical_order`): the first is the orbit's canonical representative."""
    positions: list[np.ndarray] = []
    for op in space_group_operations(host):
        image = canonical_frac(op.operate(frac_coords))
        if not any(_periodic_distance(host, image, p) < tol_A for p in positions):
            positions.append(image)
    positions = np.array(positions)
    return positions[canonical_order(positions)]


def canonical_order(frac_coords: np.ndarray, tol: float = 1e-4) -> list[int]:
    """Positions sorted by their fractional coordinates (x, then y, then z), where coordinates
    within ``tol`` count as equal, so that noise cannot reorder symmetry-equivalent positions."""
    frac_coords = np.asarray(frac_coords)
    ranks = np.stack([tolerant_rank(frac_coords[:, axis], tol) for axis in range(3)], axis=1)
    return sorted(range(len(frac_coords)), key=lambda i: tuple(ranks[i]))


def _periodic_distance(host: Structure, a, b) -> float:
    return float(host.lattice.get_all_distances([a], [b])[0, 0])


def _nearest_distance(host: Structure, frac_coords) -> float:
    """The distance from a point to the nearest host atom not on it, periodic images included
    (in a one-atom cell that is an image of the atom itself)."""
    centre = host.lattice.get_cartesian_coords(frac_coords)
    # an image of any site lies within the longest lattice vector
    neighbours = host.get_sites_in_sphere(centre, max(host.lattice.abc) + 1e-6)
    return float(min(n.nn_distance for n in neighbours if n.nn_distance > 1e-3))


def find_vacancies(
    host: Structure, species: str, given: Structure | None = None
) -> list[DefectCandidate]:
    """Symmetry-distinct vacancies of ``species`` (pymatgen-analysis-defects' generator), each
    represented by the first atom of its orbit in the host's atom order.

    The Wyckoff letters of the names are read from ``given`` (the structure as the user gave it,
    same atom order; default: the host). spglib's letter depends on its choice among equivalent
    origins (1a or 1b of P-3m1, 4a or 4b of Fm-3m), and a relaxed host carries noise that flips
    that choice (30 hosts strained by 1e-5: Li5In4's 1a named 1b in 10); the input is the same
    bytes in every run.
    """
    # imported here, not above: pymatgen-analysis-defects takes 1.3 s to import (pymatgen's
    # local_env), which every process importing this module paid, each SLURM job included;
    # only the candidate search needs it
    from pymatgen.analysis.defects.generators import VacancyGenerator

    check_species(host, species)
    symmetrized = SpacegroupAnalyzer(host, symprec=SYMPREC).get_symmetrized_structure()
    named = SpacegroupAnalyzer(given or host, symprec=SYMPREC).get_symmetrized_structure()
    letters = {
        index: named.wyckoff_symbols[group]
        for group, indices in enumerate(named.equivalent_indices)
        for index in indices
    }
    candidates = []
    for vacancy in VacancyGenerator(symprec=SYMPREC).get_defects(host, rm_species=[species]):
        indices = next(
            indices
            for indices in symmetrized.equivalent_indices
            if any(np.allclose(host[j].frac_coords, vacancy.site.frac_coords) for j in indices)
        )
        first = canonical_frac(host[min(indices)].frac_coords)
        candidates.append(
            DefectCandidate(
                name=f"v_{species}_{letters[min(indices)]}",
                kind="vacancy",
                species=species,
                frac_coords=[float(x) for x in first],
                multiplicity=len(indices),
                equivalent_frac_coords=equivalent_positions(host, first).tolist(),
                nearest_host_distance_A=_nearest_distance(host, first),
            )
        )
    return _unique_names(candidates)


def voronoi_nodes(host: Structure) -> np.ndarray:
    """Fractional coordinates of the Voronoi vertices of the host's atoms inside the cell.

    The tessellation runs on the cell in pymatgen's standard orientation, so a rotation of
    the input changes nothing. Vertices of a symmetric crystal are degenerate (more than four
    atoms on one sphere); qhull then returns several vertices at one place, which
    :func:`find_interstitials` clusters. pymatgen-analysis-defects' ``TopographyAnalyzer``
    filters vertices at the cell boundary with an absolute tolerance and lost every vertex of a
    Cu3Au cell strained by 1e-5; here nothing is filtered but by distance.
    """
    lattice = Lattice.from_parameters(*host.lattice.parameters)
    reach = 2 if len(host) < 5 else 1
    shifts = np.array(list(itertools.product(range(-reach, reach + 1), repeat=3)))
    frac = (host.frac_coords[None, :, :] + shifts[:, None, :]).reshape(-1, 3)
    vertices = lattice.get_fractional_coords(Voronoi(lattice.get_cartesian_coords(frac)).vertices)
    inside = np.all((vertices > -0.05) & (vertices < 1.05), axis=1)
    return canonical_frac(vertices[inside])


def find_interstitials(
    host: Structure, species: str, min_distance_A: float = 1.5, cluster_tol_A: float = 0.5
) -> list[DefectCandidate]:
    """Symmetry-distinct interstitial candidates at least ``min_distance_A`` from every host
    atom: Voronoi vertices (:func:`voronoi_nodes`) outside the atoms, clustered within
    ``cluster_tol_A`` (pymatgen-analysis-defects' ``remove_collisions`` and ``cluster_nodes``,
    as its ``VoronoiInterstitialGenerator`` does), put exactly on their site symmetry and grouped
    into orbits by the host's space group.

    Nothing here depends on rounding: the host should be symmetrized first
    (:func:`carrierflow.structures.symmetry.symmetrize`), each orbit is represented by its
    canonical position (:func:`equivalent_positions`), and the candidates are named in a fixed
    order: roomiest first (distances within 1e-3 A tie), then by multiplicity, then position.
    """
    # imported here: find_vacancies says why
    from pymatgen.analysis.defects.utils import cluster_nodes, remove_collisions

    check_species(host, species)
    nodes = remove_collisions(voronoi_nodes(host), structure=host, min_dist=min_distance_A)
    if len(nodes) > 1:
        nodes = cluster_nodes(nodes, lattice=host.lattice, tol=cluster_tol_A)
    operations = space_group_operations(host)
    orbits: list[np.ndarray] = []
    for node in nodes:
        site = _on_site_symmetry(host, operations, node, cluster_tol_A)
        if not any(
            host.lattice.get_all_distances([site], orbit).min() < cluster_tol_A for orbit in orbits
        ):
            orbits.append(equivalent_positions(host, site))
    candidates = [
        interstitial_at(host, f"{species}_i", species, orbit[0])
        for orbit in orbits
        if _nearest_distance(host, orbit[0]) >= min_distance_A
    ]
    if not candidates:
        return []
    roomy = tolerant_rank([-c.nearest_host_distance_A for c in candidates])
    position = {
        i: rank for rank, i in enumerate(canonical_order([c.frac_coords for c in candidates]))
    }
    order = sorted(
        range(len(candidates)), key=lambda i: (roomy[i], candidates[i].multiplicity, position[i])
    )
    candidates = [candidates[i] for i in order]
    return _unique_names(candidates)


def _on_site_symmetry(host: Structure, operations, frac_coords, tol_A: float) -> np.ndarray:
    """A point moved exactly onto the symmetry elements it lies within ``tol_A`` of: the mean of
    its images under the operations that map it within ``tol_A`` of itself (its site group)."""
    point = np.asarray(frac_coords, dtype=float)
    for _ in range(5):
        images = np.array([op.operate(point) for op in operations])
        shifts = images - point
        shifts -= np.round(shifts)
        near = np.linalg.norm(host.lattice.get_cartesian_coords(shifts), axis=1) < tol_A
        moved = point + shifts[near].mean(axis=0)
        if np.allclose(moved, point, atol=1e-12):
            break
        point = moved
    return canonical_frac(point)


def interstitial_at(host: Structure, name: str, species: str, frac_coords) -> DefectCandidate:
    """An interstitial candidate of ``species`` at ``frac_coords`` of the host cell."""
    frac = canonical_frac(frac_coords)
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
    host: Structure, species: str, min_distance_A: float = 1.5, given: Structure | None = None
) -> list[DefectCandidate]:
    """All vacancies and interstitial candidates of ``species`` in ``host`` (vacancy names from
    ``given``, see :func:`find_vacancies`)."""
    return find_vacancies(host, species, given) + find_interstitials(host, species, min_distance_A)


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


# The starts of a structure search around one defect, after the small rattle: ShakeNBreak's
# (Mosquera-Lois et al., npj Comput. Mater. 2023) bond distortions and Monte Carlo rattles, with
# its own functions. How many neighbours ShakeNBreak distorts follows from the defect's charge and
# the host's oxidation states, which a metal does not have: here every nearest neighbour of the
# site (the shell within NEIGHBOUR_SHELL of the nearest) is pulled in or pushed out, then the
# small rattle breaks what symmetry is left; stronger rattles (ShakeNBreak's, which keep atoms
# apart) explore the rest. The first start stays the small seeded rattle of a single-start run,
# so that a search reuses that run's relaxation.
START_PLAN: list[tuple[str, float]] = [
    ("distort", -0.3),
    ("distort", 0.3),
    ("rattle", 0.1),
    ("distort", -0.15),
    ("distort", 0.15),
    ("rattle", 0.2),
]
NEIGHBOUR_SHELL = 1.2  # neighbours: within this factor of the nearest one's distance


def _neighbour_shell(structure: Structure, centre_cart) -> tuple[np.ndarray, np.ndarray]:
    """Distances from a point to every atom, and which atoms are its nearest neighbours (not
    an atom on the point itself: the interstitial)."""
    centre_frac = structure.lattice.get_fractional_coords(centre_cart)
    distances = structure.lattice.get_all_distances([centre_frac], structure.frac_coords)[0]
    around = distances > 0.3
    return distances, around & (distances < NEIGHBOUR_SHELL * distances[around].min())


def distort_neighbours(structure: Structure, centre_cart, fraction: float) -> Structure:
    """The structure with the nearest neighbours of a point (the defect's site) moved along
    their bonds to it by ``fraction`` of the bond (-0.3: pulled 30 % closer): ShakeNBreak's
    bond distortion of every neighbour in the shell, about the interstitial atom on the site or
    about the vacant site."""
    from shakenbreak.distortions import distort

    distances, shell = _neighbour_shell(structure, centre_cart)
    on_site = np.flatnonzero(distances <= 0.3)
    where = (
        {"site_index": int(on_site[0])}
        if len(on_site)
        else {"frac_coords": structure.lattice.get_fractional_coords(centre_cart)}
    )
    distorted = distort(structure, int(shell.sum()), 1.0 + fraction, **where)
    return distorted["distorted_structure"]


# no distorted start has a pair closer than this fraction of its undistorted cell's closest pair.
# Why 0.6: a 30 % pull-in puts every bond of the shell at 0.70 by design, and the collapse flag
# (analysis/relaxation.py) calls a cell whose closest pair is under 0.5 of the perfect cell's
# ran together. Measured on Li-In, 7 A screen cells (20-27 atoms): neighbours of a vacancy
# pushed out by 30 % meet their own periodic images' neighbours at 0.38-0.46 of a bond (Li5In4
# v_Li_1a: 1.19 A against 2.82), and 7net-li-in ran that start together; in the 10 A cells the
# same push leaves 0.68-0.73, untouched. ShakeNBreak keeps its rattles at 0.8 of a bond and its
# distortions unfloored.
START_FLOOR_FRACTION = 0.6


def shortest_distance(structure: Structure) -> float:
    """The closest pair of atoms, periodic images included (A)."""
    distances = structure.distance_matrix + np.diag(np.full(len(structure), np.inf))
    return float(distances.min())


def floored_distortion(
    structure: Structure, centre_cart, fraction: float
) -> tuple[float, Structure]:
    """:func:`distort_neighbours` by ``fraction``, scaled back a percent at a time until no pair
    is closer than START_FLOOR_FRACTION of the undistorted cell's closest pair: the fraction
    used and the structure."""
    floor = START_FLOOR_FRACTION * shortest_distance(structure)
    steps = round(abs(fraction) * 100)
    for step in range(steps, 0, -1):
        used = float(np.sign(fraction)) * step / 100
        distorted = distort_neighbours(structure, centre_cart, used)
        if shortest_distance(distorted) >= floor:
            return used, distorted
    return 0.0, structure.copy()


def rattle_strongly(
    structure: Structure, centre_cart, radius_A: float, stdev_A: float, seed: str
) -> Structure:
    """ShakeNBreak's Monte Carlo rattle of the atoms within ``radius_A`` of a point (Gaussian
    moves of ``stdev_A`` that keep atoms at least 80 % of the nearest-neighbour distance apart),
    reproducibly for a seed."""
    from shakenbreak.distortions import rattle

    distances, _ = _neighbour_shell(structure, centre_cart)
    active = [int(i) for i in np.flatnonzero(distances < radius_A)]
    return rattle(structure, stdev=stdev_A, active_atoms=active, seed=zlib.crc32(seed.encode()))


# a split interstitial's pair, as a fraction of the nearest-neighbour distance (EMT Cu's <100>
# dumbbell: 2.2 A against 2.55 A); the relaxation finds the actual separation
SPLIT_SEPARATION = 0.85
SPLIT_ORIENTATIONS = 2  # split starts per interstitial, before the distortions


def split_orientations(
    host: Structure, structure: Structure, site_cart, species: str, count: int
) -> list[tuple[int, np.ndarray]]:
    """Symmetry-distinct orientations of a split interstitial (a dumbbell) on the atom of the
    mobile species nearest to an interstitial site: the line to the site first, then the atom's
    bonds, shortest first. Two orientations are one when an operation of the host that keeps
    the atom maps one onto the other or its reverse. Returns the atom's index in ``structure``
    (a supercell of ``host``, the interstitial on the site) and up to ``count`` unit vectors."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    distances, _ = _neighbour_shell(structure, site_cart)
    same = np.array([s.specie.symbol == species for s in structure]) & (distances > 0.3)
    if not same.any():
        return []
    atom = int(np.flatnonzero(same)[np.argmin(distances[same])])
    centre = structure.cart_coords[atom]

    def towards(points) -> np.ndarray:
        frac = structure.lattice.get_fractional_coords(np.asarray(points) - centre)
        return structure.lattice.get_cartesian_coords(frac - np.round(frac))

    bonds = towards(structure.cart_coords)
    lengths = np.linalg.norm(bonds, axis=1)
    others = (lengths > 0.3) & (distances > 0.3)  # neither the atom nor the interstitial
    shell = others & (lengths < NEIGHBOUR_SHELL * lengths[others].min())
    order = np.lexsort((*np.round(bonds[shell], 3).T[::-1], np.round(lengths[shell], 3)))
    directions = [towards([site_cart])[0], *bonds[shell][order]]
    keeping = [
        op
        for op in SpacegroupAnalyzer(host, symprec=SYMPREC).get_symmetry_operations(cartesian=True)
        if _is_lattice_vector(host, op.operate(centre) - centre)
    ]
    chosen: list[np.ndarray] = []
    for direction in directions:
        unit = direction / np.linalg.norm(direction)
        images = [op.apply_rotation_only(unit) for op in keeping]
        if not any(abs(abs(np.dot(image, c)) - 1.0) < 1e-3 for image in images for c in chosen):
            chosen.append(unit)
        if len(chosen) == count:
            break
    return [(atom, c) for c in chosen]


def _is_lattice_vector(host: Structure, vector) -> bool:
    frac = host.lattice.get_fractional_coords(vector)
    return bool(np.abs(frac - np.round(frac)).max() < 1e-3)


def split_start(
    structure: Structure, interstitial: int, atom: int, direction: np.ndarray
) -> Structure:
    """The interstitial and a host atom as a pair centred on the host atom's site along
    ``direction`` (the interstitial on the side the direction points to)."""
    distances = structure.distance_matrix[atom]
    nearest = distances[(distances > 0.3) & (np.arange(len(structure)) != interstitial)].min()
    half = 0.5 * SPLIT_SEPARATION * nearest * np.asarray(direction)
    centre = structure.cart_coords[atom]
    split = structure.copy()
    split.replace(interstitial, structure[interstitial].species, centre + half, True)
    split.replace(atom, structure[atom].species, centre - half, True)
    return split


def defect_starts(
    cell: DefectCell,
    seed: str,
    count: int,
    radius_A: float,
    amplitude_A: float,
    host: Structure | None = None,
) -> list[tuple[str, Structure]]:
    """``count`` reproducible starts of one defect cell, each with its tag: first the small
    rattle (seeded by ``seed``: the start of a single-start run); for an interstitial of a
    ``host``, then split interstitials on the nearest atom of its species
    (:func:`split_orientations`, at most :data:`SPLIT_ORIENTATIONS`); then :data:`START_PLAN` in
    order (repeated with new seeds past its length), a distortion scaled back where it would
    bring atoms too close (:func:`floored_distortion`; its tag names the fraction used)."""
    starts = [(f"rattle {amplitude_A:g} A", cell.structure)]
    splits = []
    if cell.kind == "interstitial" and host is not None and count > 1:
        interstitial = cell.host_indices.index(None)
        species = cell.structure[interstitial].specie.symbol
        splits = split_orientations(
            host, cell.structure, cell.site_cart, species, SPLIT_ORIENTATIONS
        )
        for atom, direction in splits[: count - 1]:
            shown = " ".join(f"{round(x, 2) + 0.0:.2f}" for x in direction)  # no -0.00
            starts.append(
                (f"split [{shown}]", split_start(cell.structure, interstitial, atom, direction))
            )
    for number in range(len(starts), count):
        index = number - 1 - len(splits)
        kind, value = START_PLAN[index % len(START_PLAN)]
        repeat = index // len(START_PLAN)
        suffix = f" #{repeat + 1}" if repeat else ""
        if kind == "distort":
            used, distorted = floored_distortion(cell.structure, cell.site_cart, value)
            starts.append((f"neighbours {used:+.0%}{suffix}", distorted))
        else:
            rattled = rattle_strongly(
                cell.structure, cell.site_cart, radius_A, value, f"{seed}/start {number}"
            )
            starts.append((f"rattle {value:g} A{suffix}", rattled))
    # every start then gets the small seeded rattle (the first: a single-start run's start)
    return [
        (
            tag,
            rattle_near(
                structure,
                cell.site_cart,
                radius_A,
                amplitude_A,
                seed=seed if number == 0 else f"{seed}/start {number}",
            ),
        )
        for number, (tag, structure) in enumerate(starts)
    ]
