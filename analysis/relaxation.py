"""Where a relaxed defect went, and whether the host reconstructed around it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pymatgen.core import Lattice, Structure

from carrierflow.analysis.flags import Flag, FlagCode, has
from carrierflow.structures.defects import shortest_distance

# a relaxed cell whose closest atoms are nearer than this fraction of the perfect cell's closest
# pair ran together: found with the fine-tuned 7net-li-in, whose energy fell without bound (to
# -1e17 eV in 500 steps) from a Li5In4 vacancy start with its neighbours pushed out by 30 %
COLLAPSE_FRACTION = 0.5
# a running relaxation stops itself when its closest pair falls below this fraction of its start's
# closest pair (the engine's guard): below COLLAPSE_FRACTION, so a stopped cell is one the flag
# names anyway. Unstopped, the collapse above ran to its step limit and slowed to minutes per force
# call (every atom within the model's cutoff of every other)
STOP_FRACTION = 0.4


def collapse(relaxed: Structure, perfect: Structure) -> str | None:
    """Why a relaxed defect cell is no physical state (its atoms ran together), or None."""
    closest, reference = shortest_distance(relaxed), shortest_distance(perfect)
    if closest < COLLAPSE_FRACTION * reference:
        return (
            f"atoms ran together: {closest:.2f} A apart after relaxation (the perfect cell's "
            f"closest pair {reference:.2f} A); a hole in the model, not a state, never ranked"
        )
    return None


def _min_image(lattice: Lattice, frac_delta: np.ndarray) -> np.ndarray:
    """Cartesian minimum-image vectors for fractional differences (n, 3)."""
    wrapped = frac_delta - np.round(frac_delta)
    # the rounded image is the shortest for compact (LLL-reduced) cells, as carrierflow builds
    return wrapped @ lattice.matrix


def displacements(initial: Structure, final: Structure) -> np.ndarray:
    """Per-atom displacement lengths between two structures with the same atom order."""
    delta = final.frac_coords - initial.frac_coords
    return np.linalg.norm(_min_image(initial.lattice, delta), axis=1)


def distances_from(structure: Structure, point_cart) -> np.ndarray:
    """Minimum-image distance of every atom from a point."""
    point = structure.lattice.get_fractional_coords(point_cart)
    return structure.lattice.get_all_distances([point], structure.frac_coords)[0]


def vacancy_centre(final: Structure, perfect: Structure, species: str) -> np.ndarray:
    """The perfect-lattice site of ``species`` farthest from every atom after relaxation."""
    sites = [i for i, site in enumerate(perfect) if site.specie.symbol == species]
    nearest = perfect.lattice.get_all_distances(perfect.frac_coords[sites], final.frac_coords).min(
        axis=1
    )
    return perfect.cart_coords[sites[int(np.argmax(nearest))]]


def interstitial_centre(final: Structure, perfect: Structure) -> np.ndarray:
    """The atom farthest from every perfect-lattice site after relaxation."""
    nearest = final.lattice.get_all_distances(final.frac_coords, perfect.frac_coords).min(axis=1)
    return final.cart_coords[int(np.argmax(nearest))]


def nearest_candidate(
    lattice: Lattice, point_cart, candidate_sites: dict[str, np.ndarray]
) -> tuple[str, float]:
    """The candidate with an equivalent site closest to ``point_cart``, and that distance."""
    point = lattice.get_fractional_coords(point_cart)
    best = ("", float("inf"))
    for name, sites in candidate_sites.items():
        distance = float(
            lattice.get_all_distances([point], lattice.get_fractional_coords(sites)).min()
        )
        if distance < best[1]:
            best = (name, distance)
    return best


@dataclass
class RelaxationGeometry:
    """How a defect cell relaxed, measured from its unrattled starting geometry."""

    max_displacement_A: float
    far_field_displacement_A: float
    defect_shift_A: float
    ended_at: str | None


def relaxation_geometry(
    start: Structure,
    final: Structure,
    perfect: Structure,
    kind: str,
    species: str,
    site_cart,
    candidate_sites: dict[str, np.ndarray],
    far_radius_A: float,
    site_tolerance_A: float = 0.5,
) -> RelaxationGeometry:
    """Measure a relaxed defect cell.

    Parameters
    ----------
    start, final
        The defect cell before rattling and after relaxation (same atom order).
    perfect
        The perfect supercell.
    site_cart
        Where the defect was put.
    candidate_sites
        Every candidate of the same kind, with all its equivalent sites in the supercell.
    far_radius_A
        Atoms farther than this from the defect count as far field.
    """
    moved = displacements(start, final)
    far = distances_from(start, site_cart) > far_radius_A
    centre = (
        vacancy_centre(final, perfect, species)
        if kind == "vacancy"
        else interstitial_centre(final, perfect)
    )
    lattice = final.lattice
    shift = float(
        lattice.get_all_distances(
            [lattice.get_fractional_coords(centre)], [lattice.get_fractional_coords(site_cart)]
        )[0, 0]
    )
    name, distance = nearest_candidate(lattice, centre, candidate_sites)
    return RelaxationGeometry(
        max_displacement_A=float(moved.max()),
        far_field_displacement_A=float(moved[far].max()) if far.any() else 0.0,
        defect_shift_A=shift,
        ended_at=name if distance <= site_tolerance_A else None,
    )


def reconstruction_evidence(
    formation_energy_eV: float,
    far_field_displacement_A: float,
    far_radius_A: float,
    threshold_A: float,
    can_reorder: bool = True,
) -> list[str]:
    """Signs that a point defect set off a reordering of the host instead of relaxing locally.

    A pure phase (``can_reorder=False``) has no other arrangement of species to fall into: its
    long-range relaxations (a crowdion in bcc Li) are elastic, so only E_f < 0 counts there.
    """
    evidence = []
    if formation_energy_eV < 0:
        evidence.append(f"negative formation energy ({formation_energy_eV:.3f} eV)")
    if can_reorder and far_field_displacement_A > threshold_A:
        evidence.append(
            f"atoms beyond {far_radius_A:.3g} A moved up to {far_field_displacement_A:.2f} A "
            f"(threshold {threshold_A:g} A)"
        )
    return evidence


def hold_far_atoms(structure: Structure, site_cart, radius_A: float) -> Structure:
    """A copy with every atom beyond ``radius_A`` of the defect fixed (selective dynamics)."""
    far = distances_from(structure, site_cart) > radius_A
    fixed = structure.copy()
    fixed.add_site_property("selective_dynamics", [[not f] * 3 for f in far])
    return fixed


def mark_shared_final_states(defects: list, tolerance_eV: float = 0.001) -> None:
    """Flag defects of one kind that relaxed to the energy of an earlier one.

    Two candidates that end within ``tolerance_eV`` of each other have almost surely relaxed
    into one configuration (for example two interstitial sites draining into the same split
    interstitial); the later one is flagged so that it is not read as a second carrier.
    Marking again (a later round's defects added to a list marked before) flags nothing twice.
    """
    for index, defect in enumerate(defects):
        if has(defect.flags, FlagCode.SHARED_STATE):
            continue
        for earlier in defects[:index]:
            if (
                earlier.kind == defect.kind
                and abs(earlier.formation_energy_eV - defect.formation_energy_eV) < tolerance_eV
            ):
                defect.flags.append(
                    Flag(
                        code=FlagCode.SHARED_STATE,
                        text=f"same relaxed energy as {earlier.name} "
                        f"(within {tolerance_eV * 1000:g} meV): one final state",
                    )
                )
                break
