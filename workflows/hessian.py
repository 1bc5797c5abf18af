"""The stand-in's Hessian as a DFT relaxation's first guess.

Every DFT relaxation of the refinement and the learning loop starts from the stand-in's own
minimum in the same cell, where the stand-in's Hessian is the best cheap guess of the curvature
DFT will meet. ASE's BFGS starts from 70 eV/A^2 on every coordinate instead, while these
cells' curvatures lie between 0 and 6-8 eV/A^2 (median 1.5-1.9 by SevenNet-0 at the starts of
the timed loop's DFT relaxations): its first steps are 20-50 times too short, and it learns the
curvature one force call at a time, each of them 45-80 s of GPAW on 2 cores.

The Hessian comes from ASE's finite differences (:class:`ase.vibrations.Vibrations`, central,
0.01 A), 6N force calls of the stand-in: 23-45 s for 23-31 atoms with SevenNet-0 on 2 cores
(the re-timed Li-In loop's logs; 53-176 s beside a running GPAW, benchmarks/hessian.json).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.vibrations import Vibrations

# Eigenvalues are made positive and at least this (eV/A^2). The three translations are zero and
# a few soft modes are near zero, which a quasi-Newton step would follow too far (maxstep
# bounds it, but then every step is maxstep along them). Measured with the shipped Li-In model
# relaxing from SevenNet-0's minima of the timed loop's three costliest DFT relaxations (force
# calls to 0.05 eV/A, maxstep 0.05 A; benchmarks/hessian.json): 70 eV/A^2 everywhere (ASE) 84;
# SevenNet-0's Hessian floored at 0.5, 55; at 2, 26 (the Li5In4 vacancy: 46, 48, 21). In GPAW the
# Li5In4 vacancy took 20 force calls from the floor of 2, where 70 eV/A^2 had taken 38.
EIGENVALUE_FLOOR_EV_A2 = 2.0

# the curvature of an atom that does not move (its rows decouple from the free atoms)
FIXED_EV_A2 = 70.0


def regularized(hessian: np.ndarray, floor: float = EIGENVALUE_FLOOR_EV_A2) -> np.ndarray:
    """The symmetric part of ``hessian`` with every eigenvalue replaced by max(|λ|, floor)."""
    symmetric = 0.5 * (hessian + hessian.T)
    values, vectors = np.linalg.eigh(symmetric)
    return (vectors * np.maximum(np.abs(values), floor)) @ vectors.T


def force_field_hessian(atoms: Atoms, calculator, fixed: list[int] | tuple = ()) -> np.ndarray:
    """The Hessian (3N x 3N, eV/A^2, ASE's coordinate order) of ``calculator`` at ``atoms`` by
    ASE's central differences; atoms in ``fixed`` get :data:`FIXED_EV_A2`, uncoupled."""
    atoms = atoms.copy()
    atoms.set_constraint()
    atoms.calc = calculator
    free = [i for i in range(len(atoms)) if i not in set(fixed)]
    with tempfile.TemporaryDirectory(prefix="carrierflow-hessian-") as cache:
        vibrations = Vibrations(atoms, indices=free, name=str(Path(cache) / "vib"))
        vibrations.run()
        free_hessian = vibrations.get_vibrations().get_hessian_2d()
    coordinates = np.array([3 * i + k for i in free for k in range(3)], dtype=int)
    hessian = np.eye(3 * len(atoms)) * FIXED_EV_A2
    hessian[np.ix_(coordinates, coordinates)] = free_hessian
    return hessian


def initial_hessian(
    atoms: Atoms,
    calculator,
    fixed: list[int] | tuple = (),
    floor: float = EIGENVALUE_FLOOR_EV_A2,
) -> np.ndarray:
    """BFGS's first guess at ``atoms``: ``calculator``'s Hessian there, :func:`regularized`."""
    return regularized(force_field_hessian(atoms, calculator, fixed), floor)
