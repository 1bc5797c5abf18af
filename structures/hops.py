"""Symmetry-distinct hops of a carrier between its sites, and the end state of a hop in the
defect supercell."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field
from pymatgen.core import Structure, SymmOp
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
from pymatgen.util.coord import pbc_diff
from scipy.optimize import linear_sum_assignment

from carrierflow.structures.defects import SYMPREC, DefectCandidate, DefectCell
from carrierflow.structures.sources import StructureError

# two hop ends closer than this are the same point
SAME_POINT_A = 0.05
# atoms of two states this close are on the same place
SAME_STATE_A = 0.3
# an atom that moves farther than this in a hop takes part in it; a state whose atoms are all
# this close to the start's is the start (relaxation noise breaks its symmetry)
MOVING_ATOM_A = 0.5
# a hop that carries the species less than this far is a reorientation
NO_TRANSPORT_A = 0.5
# in a hop between localized states some atom moves at least this far; below it, the defect
# is spread over the supercell (a crowdion) and shifts rather than hops
LOCALIZED_MOVE_A = 1.0


class Hop(BaseModel):
    """One symmetry-distinct hop of a defect from its site to a neighbouring site."""

    name: str = Field(description="start and end site, and the hop length")
    kind: Literal["vacancy", "interstitial"]
    species: str
    start: str = Field(description="the defect (candidate) that hops")
    end: str = Field(description="the candidate whose site the hop ends on")
    start_frac: list[float] | None = Field(None, description="host-cell fractional (site hops)")
    end_frac: list[float] | None = Field(
        None, description="host-cell fractional, unwrapped from the start (site hops)"
    )
    length_A: float = Field(
        description="net displacement of the carrier species: one atom's hop length for a "
        "direct hop, the sum of the moving atoms' displacements for an interstitialcy"
    )
    multiplicity: int = Field(description="equivalent hops from the start (z)")
    symmetric: bool = Field(description="between equivalent states: equal end energies")
    mechanism: Literal["direct", "interstitialcy"] = Field(
        "direct", description="one atom moves, or several move together"
    )
    moving_atoms: int = 1
    largest_move_A: float | None = Field(None, description="farthest any atom moves (images)")


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


def moving_atom_and_end(cell: DefectCell, host: Structure, hop: Hop) -> tuple[int, np.ndarray]:
    """The index of the atom that moves in a site-to-site hop, and its Cartesian end site in the
    defect cell: a vacancy is filled by a neighbour; an interstitial moves by the hop vector from
    its site's image in the supercell (the host cell's Cartesian end site is another site
    whenever that image is not the host-cell one)."""
    if hop.kind == "vacancy":
        return vacancy_filler(cell, host, hop), np.array(cell.site_cart)
    return cell.host_indices.index(None), np.array(cell.site_cart) + hop_vector(host, hop)


def hop_end_state(relaxed_start: Structure, index: int, end_cart) -> Structure:
    """The relaxed start state with atom ``index`` put at ``end_cart``: the other end of a
    hop, with the atoms in the same order (as NEB needs)."""
    end = relaxed_start.copy()
    end.replace(index, end[index].species, end_cart, coords_are_cartesian=True)
    nearest = min(end.get_distance(index, i) for i in range(len(end)) if i != index)
    if nearest < 1.0:
        raise StructureError(f"the hop's end site is {nearest:.2f} A from another atom")
    return end


@dataclass
class _Image:
    """A symmetry image of the start state: the points that differ from the start's atoms."""

    op: SymmOp
    points: np.ndarray = field(repr=False)
    new: dict[str, np.ndarray] = field(repr=False)
    vacated: frozenset[int]
    motion_A: float  # least total motion of the atoms that differ


def symmetry_image_hops(
    perfect: Structure,
    relaxed: Structure,
    start: DefectCandidate,
    shell_tolerance: float = 0.1,
    max_length_A: float | None = None,
) -> list[tuple[Hop, Structure]]:
    """Hops of a relaxed defect to its nearest symmetry images, and each hop's end state.

    A symmetry operation of the perfect supercell maps the relaxed defect onto an equivalent
    state elsewhere (a split interstitial onto a split interstitial on another site); its
    atoms are matched to the start's by least total motion (Hungarian assignment per species),
    so a hop may move several atoms together (interstitialcy). Hops that carry no net
    displacement (reorientations) are left out. The nearest end states are those of least
    total motion, up to ``1 + shell_tolerance`` times the least, or up to ``max_length_A``.
    Two hops are the same when an operation that keeps the start maps one end onto the other,
    or when one is the other reversed; the multiplicity counts the end states of one hop.
    Shortest first.

    Parameters
    ----------
    perfect
        The perfect supercell, whose symmetry operations map the defect supercell onto itself.
    relaxed
        The relaxed defect supercell (same lattice).
    start
        The defect's candidate (its name and species label the hops).
    """
    lattice = relaxed.lattice
    if not np.allclose(lattice.matrix, perfect.lattice.matrix, atol=1e-4):
        raise StructureError(f"{start.name}: the defect supercell is not the perfect supercell")
    origin = relaxed.frac_coords
    symbols = np.array([site.specie.symbol for site in relaxed])
    keeping, images = [], []
    for op in SpacegroupAnalyzer(perfect, symprec=SYMPREC).get_symmetry_operations():
        image = _difference(lattice, symbols, origin, op)
        if image is None:
            keeping.append(op)
        else:
            images.append(image)
    ends: list[tuple[_Image, np.ndarray]] = []  # each end state once, with its atoms matched
    limit = max_length_A
    for image in sorted(images, key=lambda i: i.motion_A):
        if limit is not None and image.motion_A > limit:
            break
        if any(_same_state(lattice, image, end) for end, _ in ends):
            continue
        frac = _matched(lattice, symbols, origin, image.points)
        if _carried(lattice, symbols == start.species, origin, frac) < NO_TRANSPORT_A:
            continue
        ends.append((image, frac))
        limit = limit or (1 + shell_tolerance) * image.motion_A
    if not ends:
        raise StructureError(f"{start.name}: no symmetry image to hop to")

    def index_of(image: _Image | None) -> int | None:
        if image is None:
            return None
        return next(
            (i for i, (end, _) in enumerate(ends) if _same_state(lattice, image, end)), None
        )

    label = list(range(len(ends)))
    for i, (end, _) in enumerate(ends):
        # an operation keeping the start maps the end onto an equivalent one; the inverse
        # gives the reverse hop
        for op in [*(keep * end.op for keep in keeping), end.op.inverse]:
            j = index_of(_difference(lattice, symbols, origin, op))
            if j is not None:
                old, new = sorted((label[i], label[j]))
                label = [old if x == new else x for x in label]
    hops = []
    for first in dict.fromkeys(label):
        frac = ends[first][1]
        carried = _carried(lattice, symbols == start.species, origin, frac)
        moves = np.linalg.norm(pbc_diff(frac, origin) @ lattice.matrix, axis=1)
        moving = int((moves > MOVING_ATOM_A).sum())
        mechanism = "interstitialcy" if moving > 1 else "direct"
        hop = Hop(
            name=f"{start.name}>{start.name} {mechanism} {carried:.2f}A",
            kind=start.kind,
            species=start.species,
            start=start.name,
            end=start.name,
            length_A=carried,
            multiplicity=label.count(first),
            symmetric=True,
            mechanism=mechanism,
            moving_atoms=moving,
            largest_move_A=float(moves.max()),
        )
        # unwrapped from the start, so that the path between them is the hop
        hops.append((hop, Structure(lattice, relaxed.species, origin + pbc_diff(frac, origin))))
    return hops


def _difference(lattice, symbols: np.ndarray, origin: np.ndarray, op: SymmOp) -> _Image | None:
    """The image of the start under ``op``: its points that no start atom of their species is
    near, the start atoms that none of its points is near, and the least motion between them;
    None when it is the start again."""
    points = op.operate_multi(origin)
    new, vacated, motion = {}, [], 0.0
    for symbol in np.unique(symbols):
        index = np.flatnonzero(symbols == symbol)
        distances = _distances(lattice, points[index], origin[index])
        arrived = distances.min(axis=1) >= MOVING_ATOM_A
        left = distances.min(axis=0) >= MOVING_ATOM_A
        if arrived.any():
            new[symbol] = points[index[arrived]]
            vacated += index[left].tolist()
            moves = distances[np.ix_(arrived, left)] ** 2
            rows, cols = linear_sum_assignment(moves)
            motion += float(moves[rows, cols].sum())
    if not new:
        return None
    return _Image(op, points, new, frozenset(vacated), float(np.sqrt(motion)))


def _carried(lattice, carriers: np.ndarray, origin: np.ndarray, frac: np.ndarray) -> float:
    """The net displacement of the carrier species in a hop, A: the sum of its atoms' moves
    (a crowdion's many small ones included)."""
    return float(np.linalg.norm((pbc_diff(frac, origin) @ lattice.matrix)[carriers].sum(axis=0)))


def _same_state(lattice, image: _Image, other: _Image) -> bool:
    """Whether two images are the same state (whichever atom sits where)."""
    if image.vacated != other.vacated or image.new.keys() != other.new.keys():
        return False
    return all(
        _distances(lattice, points, other.new[symbol]).min(axis=1).max() < SAME_STATE_A
        for symbol, points in image.new.items()
    )


def _matched(lattice, symbols: np.ndarray, origin: np.ndarray, frac: np.ndarray) -> np.ndarray:
    """``frac`` reordered so that each atom at ``origin`` gets the point of its species that
    keeps the total squared motion least."""
    matched = np.empty_like(frac)
    for symbol in np.unique(symbols):
        index = np.flatnonzero(symbols == symbol)
        distances = _distances(lattice, origin[index], frac[index])
        rows, cols = linear_sum_assignment(distances**2)
        matched[index[rows]] = frac[index[cols]]
    return matched


def _distances(lattice, frac: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Minimum-image distances between two sets of points (the rounded image is the nearest
    in the compact supercells carrierflow builds)."""
    return np.linalg.norm(pbc_diff(frac[:, None, :], other[None, :, :]) @ lattice.matrix, axis=-1)
