"""The dominant carrier per host, with its margin, and the whole results document."""

from __future__ import annotations

from datetime import UTC, datetime

from carrierflow.analysis.documents import RESULTS_SCHEMA_VERSION, Results
from carrierflow.analysis.formation import site_fraction
from carrierflow.analysis.schemas import DefectOutcome, HostOutcome


def dominant_carrier(
    lowest_vacancy_eV: float | None, lowest_interstitial_eV: float | None, uncertainty_eV: float
) -> tuple[str, float | None, str]:
    """Vacancy, interstitial or undecided, the margin E_f(int) - E_f(vac), and why.

    The carrier with the lower formation energy dominates, unless the margin is within the
    calculator's stated energy uncertainty.
    """
    if lowest_vacancy_eV is None or lowest_interstitial_eV is None:
        missing = "vacancy" if lowest_vacancy_eV is None else "interstitial"
        return "undecided", None, f"no {missing} formation energy"
    margin = lowest_interstitial_eV - lowest_vacancy_eV
    if abs(margin) <= uncertainty_eV:
        return (
            "undecided",
            margin,
            f"margin {abs(margin):.3f} eV is within the calculator uncertainty "
            f"{uncertainty_eV:.3f} eV",
        )
    carrier = "vacancy" if margin > 0 else "interstitial"
    return (
        carrier,
        margin,
        f"{carrier} lower by {abs(margin):.3f} eV (uncertainty {uncertainty_eV:.3f} eV)",
    )


def _lowest(defects: list[DefectOutcome], kind: str) -> DefectOutcome | None:
    of_kind = [d for d in defects if d.kind == kind and not d.collapsed]
    return min(of_kind, key=lambda d: d.ranking_energy_eV) if of_kind else None


def defect_entry(defect: DefectOutcome, temperature_K: float) -> dict:
    """One row of results.json."""
    return {
        "name": defect.name,
        "kind": defect.kind,
        "frac_coords": defect.frac_coords,
        "multiplicity": defect.multiplicity,
        "formation_energy_eV": defect.formation_energy_eV,
        "local_formation_energy_eV": defect.local.formation_energy_eV if defect.local else None,
        "ranking_energy_eV": defect.ranking_energy_eV,
        "site_fraction": None
        if defect.collapsed
        else site_fraction(defect.ranking_energy_eV, temperature_K),
        "converged": defect.converged,
        "steps": defect.steps,
        "max_displacement_A": defect.max_displacement_A,
        "far_field_displacement_A": defect.far_field_displacement_A,
        "defect_shift_A": defect.defect_shift_A,
        "ended_at": defect.ended_at,
        "flags": [flag.model_dump(mode="json") for flag in defect.flags],
        "local": defect.local.model_dump() if defect.local else None,
        "provenance": defect.provenance,
        "screen": defect.screen.model_dump() if defect.screen else None,
        "search": defect.search.model_dump() if defect.search else None,
    }


def host_summary(
    host: HostOutcome,
    uncertainty_eV: float,
    temperature_K: float,
    reference_vacancy_eV: float | None = None,
) -> dict:
    """A host's block of results.json: its defects, lowest energies and verdict."""
    lowest = {kind: _lowest(host.defects, kind) for kind in ("vacancy", "interstitial")}
    lowest_eV = {kind: d.ranking_energy_eV if d else None for kind, d in lowest.items()}
    carrier, margin, reason = dominant_carrier(
        lowest_eV["vacancy"], lowest_eV["interstitial"], uncertainty_eV
    )
    flagged = [d.name for d in host.defects if d.flags]
    return {
        "label": host.label,
        "formula": host.formula,
        "source": host.source.model_dump(),
        "bulk_energy_per_atom_eV": host.bulk_energy_per_atom_eV,
        "bulk_lattice_abc_A": host.bulk_lattice_abc_A,
        "supercell": host.supercell.model_dump(),
        "perfect_energy_eV": host.perfect_energy_eV,
        "defects": [defect_entry(d, temperature_K) for d in host.defects],
        "screen_supercell": host.screen_supercell.model_dump() if host.screen_supercell else None,
        "screened": [defect_entry(d, temperature_K) for d in host.screened],
        "lowest_eV": lowest_eV,
        "lowest_defect": {kind: d.name if d else None for kind, d in lowest.items()},
        "dominant_carrier": carrier,
        "margin_eV": margin,
        "verdict_reason": reason,
        "flagged_defects": flagged,
        "vacancy_vs_reference_eV": (
            lowest_eV["vacancy"] - reference_vacancy_eV
            if lowest_eV["vacancy"] is not None and reference_vacancy_eV is not None
            else None
        ),
        "provenance": host.provenance,
    }


def code_versions(hosts: list[HostOutcome]) -> list[str]:
    """Every version a DFT code reported in the calculations behind these results."""
    blocks = []
    for host in hosts:
        blocks += list(host.provenance.values())
        for defect in host.defects:
            blocks.append(defect.provenance)
            if defect.local:
                blocks.append(defect.local.provenance)
    return sorted({run["code_version"] for b in blocks for run in b.get("runs", [])})


def summarize(
    system: str,
    species: str,
    calculator: dict,
    temperature_K: float,
    settings: dict,
    reference: HostOutcome,
    hosts: list[HostOutcome],
) -> Results:
    """The results document: reference phase, every host, and each verdict (checked: a
    non-finite number or an undeclared key fails here, in the job that made it)."""
    uncertainty = calculator["uncertainty_eV"]
    reference_block = host_summary(reference, uncertainty, temperature_K)
    reference_block["mu_eV"] = reference.bulk_energy_per_atom_eV
    reference_vacancy = reference_block["lowest_eV"]["vacancy"]
    return Results.model_validate(
        {
            "schema_version": RESULTS_SCHEMA_VERSION,
            "system": system,
            "species": species,
            "calculator": calculator,
            "code_versions": code_versions([reference, *hosts]),
            "temperature_K": temperature_K,
            "settings": settings,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "reference": reference_block,
            "hosts": [
                host_summary(h, uncertainty, temperature_K, reference_vacancy) for h in hosts
            ],
        }
    )
