"""Symmetrized hosts and canonical representatives: the discrete choices of a run made so that
floating-point noise (a relaxation's last digits, another CPU's BLAS kernels) cannot change them."""

from __future__ import annotations

import numpy as np
from ase.spacegroup.symmetrize import refine_symmetry
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

# the symmetry tolerance of every discrete choice (A); relaxation noise is ~1e-5 A, a real
# distortion of a host is far above it
SYMPREC = 0.01
# lengths closer than this (A) count as equal when candidates are ranked; ties are then broken by
# integer or fractional coordinates, which do not carry rounding noise
LENGTH_TOL_A = 1e-3


# spglib's origin shifts to a standard setting are multiples of 1/24 (ITA origins, hexagonal
# and cubic settings included); what is left over is noise
ORIGIN_GRID = 24


def symmetrize(structure: Structure, symprec: float = SYMPREC) -> Structure:
    """The structure with its cell and positions made exactly symmetric at ``symprec``: same
    lattice setting, same atom order, displacements below ``symprec``.

    ASE's ``refine_symmetry`` (which ``FixSymmetry`` relaxations rest on) symmetrizes cell and
    positions about the noisy origin of the input; the structure is then translated so that its
    symmetry elements sit exactly where the standard setting puts them (spglib's origin shift
    rounded to 1/24), and coordinates within 1e-8 of 1 wrap to 0. Two hosts that differ by
    noise below ``symprec`` then come out equal up to the noise in their symmetric degrees of
    freedom (lattice parameters, free Wyckoff coordinates), with atoms on the same side of
    every cell boundary, so that supercells list the same atoms in the same order.
    """
    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.calc = None
    refine_symmetry(atoms, symprec=symprec)
    refined = AseAtomsAdaptor.get_structure(atoms)
    dataset = SpacegroupAnalyzer(refined, symprec=symprec).get_symmetry_dataset()
    origin = np.asarray(dataset.origin_shift, dtype=float)
    noise = origin - np.round(origin * ORIGIN_GRID) / ORIGIN_GRID
    # x_standard = P x + p: moving every atom by P^-1 (p_exact - p) makes the shift exact
    shift = np.linalg.solve(np.asarray(dataset.transformation_matrix, dtype=float), noise)
    return Structure(
        refined.lattice,
        structure.species,
        canonical_frac(refined.frac_coords + shift, decimals=8),
        site_properties=structure.site_properties,
    )


def tolerant_rank(values, tol: float = LENGTH_TOL_A) -> np.ndarray:
    """Integer ranks of ``values`` in which values within ``tol`` of their sorted neighbour
    share a rank: ties that noise would break at random stay ties."""
    values = np.asarray(values, dtype=float)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=int)
    rank = 0
    for position, index in enumerate(order):
        if position and values[index] - values[order[position - 1]] > tol:
            rank += 1
        ranks[index] = rank
    return ranks


def space_group_operations(structure: Structure, symprec: float = SYMPREC):
    """The space-group operations of a structure (fractional coordinates)."""
    return SpacegroupAnalyzer(structure, symprec=symprec).get_symmetry_operations()


def canonical_frac(frac_coords, decimals: int = 6) -> np.ndarray:
    """Fractional coordinates wrapped into [0, 1) with values within 10^-decimals of 1 set to 0."""
    frac = np.mod(np.asarray(frac_coords, dtype=float), 1.0)
    frac[np.isclose(frac, 1.0, atol=10.0**-decimals)] = 0.0
    return frac
