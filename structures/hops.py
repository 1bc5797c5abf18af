"""Symmetry-distinct hops of a carrier between its sites, and the end state of a hop in the
defect supercell."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, Field
from pymatgen.core import Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from carrierflow.structures.defects import SYMPREC, DefectCandidate, DefectCell
from carrierflow.structures.sources import StructureError

# two hop ends closer than this are the same point
SAME_POINT_A = 0.05


class Hop(BaseModel):
    """One symmetry-distinct hop of a defect from its site to a neighbouring site."""

    name: str = Field(description="start and end site, and the hop length")
    kind: Literal["vacancy", "interstitial"]
    species: str
    start: str = Field(description="the defect (candidate) that hops")
    end: str = Field(description="the candidate whose site the hop ends on")
    start_frac: list[float]
    end_frac: list[float] = Field(description="host-cell fractional, unwrapped from the start")
    length_A: float
    multiplicity: int = Field(description="equivalent hops from the start site (z)")
    symmetric: bool = Field(description="from a site to an equivalent one: equal end energies")


def find_hops(
    host: Structure,
    start: DefectCandidate,
    targets: list[DefectCandidate],
    shell_tolerance: float = 0.1,
    max_length_A: float | None = None,
) -> list[Hop]:
    """The symmetry-distinct hops from ``start``'s site to the nearest sites of ``targets``.

    Hops reach the nearest-neighbour shell (lengths up to ``1 + shell_tolerance`` times the
    shortest), or every site within ``max_length_A`` when given. Two hops are the same when a
    symmetry operation of the host that keeps the start site maps one onto the other; the
    multiplicity counts the equivalent ones. Shortest first.
    """
    lattice = host.lattice
    origin = np.array(start.frac_coords)
    centre = lattice.get_cartesian_coords(origin)
    radius = max_length_A or max(lattice.abc) + 1.0
    ends: list[tuple[str, np.ndarray, float]] = []
    for target in targets:
        found = lattice.get_points_in_sphere(target.equivalent_frac_coords, centre, radius)
        ends += [(target.name, np.array(f), float(d)) for f, d, *_ in found if d > SAME_POINT_A]
    if not ends:
        raise StructureError(f"{start.name}: no site to hop to within {radius:.2f} A")
    if max_length_A is None:
        shell = (1 + shell_tolerance) * min(d for *_, d in ends)
        ends = [e for e in ends if e[2] <= shell]

    classes = _equivalence_classes(host, origin, [f for _, f, _ in ends])
    hops = []
    for members in classes:
        name, frac, length = ends[members[0]]
        hops.append(
            Hop(
                name=f"{start.name}>{name} {length:.2f}A",
                kind=start.kind,
                species=start.species,
                start=start.name,
                end=name,
                start_frac=origin.tolist(),
                end_frac=frac.tolist(),
                length_A=length,
                multiplicity=len(members),
                symmetric=name == start.name,
            )
        )
    return sorted(hops, key=lambda h: (h.length_A, h.end))


def _equivalence_classes(host: Structure, origin: np.ndarray, ends: list[np.ndarray]):
    """Group hop ends that a symmetry operation keeping ``origin`` maps onto each other."""
    lattice = host.lattice
    ends_cart = lattice.get_cartesian_coords(np.array(ends))
    label = list(range(len(ends)))
    for op in SpacegroupAnalyzer(host, symprec=SYMPREC).get_symmetry_operations():
        shift = op.operate(origin) - origin
        if np.linalg.norm(lattice.get_cartesian_coords(shift - np.round(shift))) > SAME_POINT_A:
            continue
        mapped = lattice.get_cartesian_coords(
            np.array([op.operate(f) for f in ends]) - np.round(shift)
        )
        for i, point in enumerate(mapped):
            j = int(np.argmin(np.linalg.norm(ends_cart - point, axis=1)))
            if np.linalg.norm(ends_cart[j] - point) < SAME_POINT_A:
                old, new = sorted((label[i], label[j]))
                label = [old if x == new else x for x in label]
    groups: dict[int, list[int]] = {}
    for i, x in enumerate(label):
        groups.setdefault(x, []).append(i)
    return list(groups.values())


def hop_vector(host: Structure, hop: Hop) -> np.ndarray:
    """The Cartesian vector from the hop's start to its end."""
    return host.lattice.get_cartesian_coords(np.array(hop.end_frac) - np.array(hop.start_frac))


def vacancy_filler(cell: DefectCell, host: Structure, hop: Hop) -> int:
    """Index, in the vacancy supercell, of the neighbour that fills the vacancy in a hop."""
    supercell = cell.structure
    target = np.array(cell.site_cart) + hop_vector(host, hop)
    frac = supercell.lattice.get_fractional_coords(target)
    distances = supercell.lattice.get_all_distances([frac], supercell.frac_coords)[0]
    index = int(np.argmin(distances))
    if distances[index] > 0.3 or supercell[index].specie.symbol != hop.species:
        raise StructureError(f"{hop.name}: no {hop.species} atom at the end site of the hop")
    return index


def hop_end_state(relaxed_start: Structure, index: int, end_cart) -> Structure:
    """The relaxed start state with atom ``index`` put at ``end_cart``: the other end of a
    hop, with the atoms in the same order (as NEB needs)."""
    end = relaxed_start.copy()
    end.replace(index, end[index].species, end_cart, coords_are_cartesian=True)
    nearest = min(end.get_distance(index, i) for i in range(len(end)) if i != index)
    if nearest < 1.0:
        raise StructureError(f"the hop's end site is {nearest:.2f} A from another atom")
    return end
