"""Formation energies and equilibrium site fractions of neutral point defects."""

from __future__ import annotations

import math

BOLTZMANN_EV_K = 8.617333262e-5


def chemical_potential(energy_eV: float, natoms: int) -> float:
    """Energy per atom of the relaxed pure reference phase: mu_X."""
    if natoms <= 0:
        raise ValueError("a reference phase needs at least one atom")
    return energy_eV / natoms


def formation_energy(
    defect_energy_eV: float, perfect_energy_eV: float, n_added: int, mu_eV: float
) -> float:
    """E_f = E_defect - E_perfect - n * mu (n = -1 for a vacancy, +1 for an interstitial)."""
    return defect_energy_eV - perfect_energy_eV - n_added * mu_eV


def added_atoms(kind: str) -> int:
    """n in the formation energy for a defect kind."""
    return {"vacancy": -1, "interstitial": 1}[kind]


def site_fraction(formation_energy_eV: float, temperature_K: float) -> float | None:
    """Equilibrium fraction of sites occupied by the defect: exp(-E_f / k_B T) in the dilute
    limit. None for E_f < 0: the host gains energy by forming the defect, so there is no
    dilute equilibrium to speak of (the formula gave fractions above 1, and at a few K an
    OverflowError after the whole run)."""
    if temperature_K <= 0:
        raise ValueError(f"temperature must be positive, got {temperature_K} K")
    if formation_energy_eV < 0:
        return None
    return math.exp(-formation_energy_eV / (BOLTZMANN_EV_K * temperature_K))
