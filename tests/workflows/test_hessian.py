import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.optimize import BFGS

from carrierflow.workflows.hessian import (
    EIGENVALUE_FLOOR_EV_A2,
    FIXED_EV_A2,
    initial_hessian,
    regularized,
)


def _copper_vacancy():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2)
    del atoms[0]
    atoms.rattle(0.05, seed=3)
    return atoms


def _relax(atoms, hessian=None):
    atoms = atoms.copy()
    atoms.calc = EMT()
    optimizer = BFGS(atoms, maxstep=0.05, logfile=None)
    if hessian is not None:
        optimizer.H0 = hessian
    assert optimizer.run(fmax=0.01, steps=200)
    return optimizer.nsteps, atoms.get_potential_energy()


def test_the_first_hessian_guess_is_the_force_fields_curvature_made_positive():
    atoms = _copper_vacancy()
    hessian = initial_hessian(atoms, EMT(), fixed=[4])
    assert hessian.shape == (3 * len(atoms), 3 * len(atoms))
    assert np.allclose(hessian, hessian.T)
    assert np.linalg.eigvalsh(hessian).min() >= EIGENVALUE_FLOOR_EV_A2 - 1e-9
    # a fixed atom's coordinates keep the stiff default, coupled to nothing
    assert np.allclose(hessian[12:15], FIXED_EV_A2 * np.eye(3 * len(atoms))[12:15])
    # elsewhere it is EMT's curvature: the energy along a stiff mode rises as the guess says
    free = [i for i in range(3 * len(atoms)) if i not in (12, 13, 14)]
    values, vectors = np.linalg.eigh(hessian[np.ix_(free, free)])
    mode = np.zeros(3 * len(atoms))
    mode[free] = vectors[:, -1]
    probe = atoms.copy()
    probe.calc = EMT()
    energies = []
    for step in (-0.01, 0.0, 0.01):
        probe.positions = atoms.positions + step * mode.reshape(-1, 3)
        energies.append(probe.get_potential_energy())
    curvature = (energies[0] - 2 * energies[1] + energies[2]) / 0.01**2
    assert curvature == pytest.approx(values[-1], rel=0.05)


def test_negative_and_zero_curvatures_are_lifted_to_the_floor():
    hessian = np.diag([-3.0, 0.0, 0.5, 10.0])
    assert np.allclose(np.diag(regularized(hessian, 2.0)), [3.0, 2.0, 2.0, 10.0])


def test_a_relaxation_from_the_force_fields_hessian_takes_fewer_steps_to_the_same_minimum():
    atoms = _copper_vacancy()
    steps_default, energy_default = _relax(atoms)
    steps_guided, energy_guided = _relax(atoms, initial_hessian(atoms, EMT()))
    assert steps_guided < steps_default
    assert energy_guided == pytest.approx(energy_default, abs=2e-3)
