"""Migration barriers from NEB energy profiles, activation energies and Arrhenius diffusion."""

from __future__ import annotations

import math

from carrierflow.analysis.flags import Flag, FlagCode, has
from carrierflow.analysis.schemas import CarrierTransport, HopOutcome, PhaseTransport

BOLTZMANN_EV_K = 8.617333262e-5
CM_PER_A = 1e-8
# energy differences below this are noise of the NEB
PROFILE_TOLERANCE_EV = 0.02
# flags after which a hop's barrier is not a migration barrier
DISQUALIFYING = (
    FlagCode.ENDPOINT_MAXIMUM,
    FlagCode.ANOTHER_MINIMUM,
    FlagCode.END_LEFT_SITE,
    FlagCode.DELOCALIZED,
)


def profile_flags(
    energies_eV: list[float], symmetric: bool, tolerance_eV: float = PROFILE_TOLERANCE_EV
) -> list[Flag]:
    """What is wrong with an energy profile along a hop (endpoints included)."""
    flags = []
    start, end = energies_eV[0], energies_eV[-1]
    highest = max(range(len(energies_eV)), key=energies_eV.__getitem__)
    if highest in (0, len(energies_eV) - 1):
        flags.append(
            Flag(
                code=FlagCode.ENDPOINT_MAXIMUM,
                text="path maximum at an endpoint: no saddle between the images",
            )
        )
    for i in range(1, len(energies_eV) - 1):
        energy = energies_eV[i]
        if energy < min(start, end) - tolerance_eV:
            flags.append(
                Flag(
                    code=FlagCode.ANOTHER_MINIMUM,
                    text=f"image {i} lies {min(start, end) - energy:.3f} eV below both "
                    "endpoints: it relaxed into another minimum",
                )
            )
        elif (
            energies_eV[i - 1] > energy < energies_eV[i + 1]
            and max(energies_eV[:i]) - energy > tolerance_eV
            and max(energies_eV[i + 1 :]) - energy > tolerance_eV
        ):
            flags.append(
                Flag(
                    code=FlagCode.INTERMEDIATE_MINIMUM,
                    text=f"image {i} is an intermediate minimum: the hop passes another state",
                )
            )
    if symmetric and abs(end - start) > tolerance_eV:
        flags.append(
            Flag(
                code=FlagCode.ASYMMETRIC_ENDPOINTS,
                text=f"symmetric hop with endpoints {abs(end - start):.3f} eV apart",
            )
        )
    return flags


def hop_counts(converged: bool, flags: list[Flag]) -> bool:
    """Whether a hop's barrier enters E_a and D: a converged NEB with a saddle between the
    images, between endpoints that stayed where they were put."""
    return converged and not has(flags, *DISQUALIFYING)


def barriers(energies_eV: list[float]) -> tuple[float, float]:
    """Forward and reverse barrier: the highest image above the start and above the end."""
    top = max(energies_eV)
    return top - energies_eV[0], top - energies_eV[-1]


def diffusion_coefficient(
    hops: list[tuple[int, float, float]], temperature_K: float, attempt_frequency_Hz: float
) -> float:
    """D = (1/6) sum_h z_h a_h^2 nu exp(-E_a,h / k_B T), cm^2/s, from (z, a in A, E_a in eV)
    of each hop."""
    kt = BOLTZMANN_EV_K * temperature_K
    return (
        sum(
            z * (a * CM_PER_A) ** 2 * attempt_frequency_Hz * math.exp(-ea / kt) for z, a, ea in hops
        )
        / 6.0
    )


def carrier_transport(
    kind: str,
    defect: str | None,
    formation_energy_eV: float | None,
    hops: list[HopOutcome],
    temperature_K: float,
    attempt_frequency_Hz: float,
    flags: list[Flag] | None = None,
) -> CarrierTransport:
    """E_a = E_f + E_m per hop, the limiting (lowest) E_a and D(T) of one carrier; only hops
    that count (:func:`hop_counts`) enter."""
    flags = list(flags or [])
    usable = [h for h in hops if h.counts and h.barrier_eV is not None]
    if hops and not usable:
        flags.append(
            Flag(code=FlagCode.NO_HOP_COUNTS, text="no hop counts: see the flags of each hop")
        )
    if formation_energy_eV is None or not usable:
        return CarrierTransport(kind=kind, defect=defect, hops=hops, flags=flags)
    for hop in usable:
        hop.activation_energy_eV = formation_energy_eV + hop.barrier_eV
    limiting = min(usable, key=lambda h: h.activation_energy_eV)
    return CarrierTransport(
        kind=kind,
        defect=defect,
        formation_energy_eV=formation_energy_eV,
        hops=hops,
        activation_energy_eV=limiting.activation_energy_eV,
        migration_barrier_eV=limiting.barrier_eV,
        limiting_hop=limiting.name,
        diffusion_cm2_s=diffusion_coefficient(
            [(h.multiplicity, h.length_A, h.activation_energy_eV) for h in usable],
            temperature_K,
            attempt_frequency_Hz,
        ),
        flags=flags,
    )


def dominant_transport_carrier(carriers: list[CarrierTransport]) -> tuple[str, str]:
    """The carrier with the larger diffusion coefficient, and why."""
    known = {c.kind: c.diffusion_cm2_s for c in carriers if c.diffusion_cm2_s is not None}
    if len(known) < 2:
        missing = sorted({"vacancy", "interstitial"} - known.keys())
        return "undecided", f"no diffusion coefficient for {', '.join(missing)}"
    vacancy, interstitial = known["vacancy"], known["interstitial"]
    carrier = "vacancy" if vacancy > interstitial else "interstitial"
    ratio = (
        max(vacancy, interstitial) / min(vacancy, interstitial) if min(known.values()) else math.inf
    )
    return carrier, f"D({carrier}) larger by a factor {ratio:.3g}"


def phase_transport(
    label: str,
    carriers: list[CarrierTransport],
    temperature_K: float,
    attempt_frequency_Hz: float,
) -> PhaseTransport:
    """One phase's carriers and which dominates transport."""
    carrier, reason = dominant_transport_carrier(carriers)
    return PhaseTransport(
        label=label,
        temperature_K=temperature_K,
        attempt_frequency_Hz=attempt_frequency_Hz,
        carriers=carriers,
        dominant_transport_carrier=carrier,
        reason=reason,
    )
