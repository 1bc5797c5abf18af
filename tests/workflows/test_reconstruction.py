"""Host reconstruction on a real case: SevenNet-0 on the PBE-relaxed Li5In4 model.

SevenNet-0 prefers another ordering of Li5In4 than PBE does (fixtures/README.md). In a
36-atom supercell of the PBE structure, taken as given, removing a Li lets it relax into its
own favourite arrangement: an energy below perfect + mu_Li, which is no point-defect energy.
The flow must flag it, relax it again with the far atoms held fixed, and rank with that.
"""

import json

import pytest

from carrierflow.workflows.cli import main


def _li5in4_vacancies(model: str, root) -> dict:
    """Li vacancies in a 36-atom supercell of the PBE Li5In4 model, taken as given."""
    code = main([
        "run", "--species", "Li", "--hosts", "Li5In4", "--reference", "Li",
        "--calculator", "sevennet", "--model", model, "--defects", "vacancy",
        "--no-host-relaxation", "--min-image-distance", "9", "--max-atoms", "40",
        "--store", str(root / "store"), "--output", str(root / "out"),
    ])  # fmt: skip
    assert code == 0
    return json.loads((root / "out" / "results.json").read_text())


@pytest.fixture(scope="module")
def sevennet0_li5in4(tmp_path_factory):
    return _li5in4_vacancies("7net-0", tmp_path_factory.mktemp("reconstruction"))


def test_reordering_is_flagged_with_its_evidence(sevennet0_li5in4):
    host = sevennet0_li5in4["hosts"][0]
    assert host["supercell"]["natoms"] == 36
    reconstructed = [
        d for d in host["defects"] if any(f["code"] == "host-reconstruction" for f in d["flags"])
    ]
    assert reconstructed, host["defects"]
    for d in reconstructed:
        evidence = next(f["text"] for f in d["flags"] if f["code"] == "host-reconstruction")
        assert "negative formation energy" in evidence or "moved up to" in evidence
        assert d["name"] in host["flagged_defects"]


def test_reconstructed_defects_are_relaxed_again_locally_and_ranked_so(sevennet0_li5in4):
    host = sevennet0_li5in4["hosts"][0]
    for d in host["defects"]:
        if not any(f["code"] == "host-reconstruction" for f in d["flags"]):
            assert d["local"] is None
            continue
        local = d["local"]
        # 6 A by default, capped at half the image distance so that a far field exists
        assert local["radius_A"] == min(6.0, host["supercell"]["min_image_distance_A"] / 2)
        assert local["converged"]
        # holding the far field fixed removes the way down into the other ordering
        assert d["local_formation_energy_eV"] >= d["formation_energy_eV"] - 0.01
        assert d["ranking_energy_eV"] == d["local_formation_energy_eV"]
        assert any(f["code"] == "local-ranking" for f in d["flags"])
    vacancies = [d["ranking_energy_eV"] for d in host["defects"] if d["kind"] == "vacancy"]
    assert host["lowest_eV"]["vacancy"] == min(vacancies)


@pytest.mark.slow
def test_7net_l3i5_relaxes_the_same_vacancies_locally(tmp_path):
    """The default model ranks the PBE ordering lowest: no reordering, nothing flagged."""
    host = _li5in4_vacancies("7net-l3i5", tmp_path)["hosts"][0]
    for d in host["defects"]:
        assert not any(f["code"] == "host-reconstruction" for f in d["flags"]), d
        assert d["formation_energy_eV"] > 0
        assert d["local"] is None
