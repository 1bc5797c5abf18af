import json
import math

import pytest

from carrierflow.analysis.formation import (
    BOLTZMANN_EV_K,
    added_atoms,
    chemical_potential,
    formation_energy,
    site_fraction,
)
from carrierflow.analysis.report import strict_json
from carrierflow.analysis.verdict import dominant_carrier


def test_formation_energy_identity():
    mu = chemical_potential(-3.8, 2)
    assert mu == pytest.approx(-1.9)
    # a vacancy gives an atom back to the reservoir, an interstitial takes one from it
    assert formation_energy(-98.0, -100.0, added_atoms("vacancy"), mu) == pytest.approx(2.0 - 1.9)
    assert formation_energy(-101.0, -100.0, added_atoms("interstitial"), mu) == pytest.approx(0.9)
    # removing then re-adding an atom at mu costs nothing overall
    e_vac = formation_energy(-98.0, -100.0, -1, mu)
    assert formation_energy(-100.0, -98.0, 1, mu) == pytest.approx(-e_vac)


def test_site_fraction_is_boltzmann():
    assert site_fraction(0.0, 300) == 1.0
    assert site_fraction(0.5, 300) == pytest.approx(math.exp(-0.5 / (BOLTZMANN_EV_K * 300)))
    assert site_fraction(0.5, 600) > site_fraction(0.5, 300)
    with pytest.raises(ValueError, match="temperature must be positive"):
        site_fraction(0.5, 0)


def test_a_defect_that_lowers_the_energy_has_no_dilute_site_fraction():
    # exp(+0.07 eV / k_B 1 K) overflowed after the whole run; above 0 K it exceeded 1
    assert site_fraction(-0.07, 1.0) is None
    assert site_fraction(-0.07, 300) is None
    assert site_fraction(2.0, 1.0) == 0.0


def test_dominant_carrier_respects_the_uncertainty():
    assert dominant_carrier(0.6, 1.1, 0.1)[:2] == ("vacancy", pytest.approx(0.5))
    assert dominant_carrier(0.9, 0.5, 0.1)[:2] == ("interstitial", pytest.approx(-0.4))
    carrier, margin, reason = dominant_carrier(0.67, 0.60, 0.1)
    assert carrier == "undecided"
    assert margin == pytest.approx(-0.07)
    assert "within the calculator uncertainty" in reason
    assert dominant_carrier(0.6, None, 0.1)[0] == "undecided"
    assert "no interstitial" in dominant_carrier(0.6, None, 0.1)[2]


def test_results_json_is_strict_even_if_a_number_is_not_finite():
    text = strict_json({"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": -float("inf")}})
    assert json.loads(text, parse_constant=lambda name: pytest.fail(name)) == {
        "a": None,
        "b": [1.0, None],
        "c": {"d": None},
    }
