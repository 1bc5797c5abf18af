import logging
from types import SimpleNamespace

import pytest
from pymatgen.core import Lattice, Structure

from carrierflow.structures import sources
from carrierflow.structures.sources import StructureError, load_fixture, load_structure


def test_fixtures_carry_their_provenance():
    structure, source = load_fixture("Li5In4")
    assert structure.composition.reduced_formula == "Li5In4"
    assert source.kind == "fixture"
    assert "MODEL" in source.provenance
    # any way of writing the formula finds the same fixture
    assert load_fixture("In4Li5")[1].id == source.id


def test_without_a_key_a_formula_falls_back_to_the_fixture_and_says_so(caplog):
    with caplog.at_level(logging.WARNING, logger="carrierflow"):
        _, source = load_structure("Li3In2")
    assert source.kind == "fixture"
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert "Li3In2.json" in lines[0] and "MODEL" in lines[0] and "no MP_API_KEY" in lines[0]


class _FakeRester:
    """Stands in for mp_api's MPRester: the Materials Project is unreachable here."""

    def __init__(self, docs, fail=None):
        self.docs, self.fail, self.queries = docs, fail, []
        self.materials = SimpleNamespace(summary=SimpleNamespace(search=self._search))

    def _search(self, **kwargs):
        if self.fail:
            raise self.fail
        self.queries.append(kwargs)
        return self.docs

    def get_database_version(self):
        return "2025.09.25"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _doc(material_id, e_hull, a):
    structure = Structure(Lattice.cubic(a), ["Li", "In"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    return SimpleNamespace(
        material_id=material_id,
        structure=structure,
        energy_above_hull=e_hull,
        formula_pretty="LiIn",
    )


def test_formula_lookup_takes_the_lowest_energy_above_hull(monkeypatch):
    fake = _FakeRester([_doc("mp-2", 0.05, 3.4), _doc("mp-1", 0.0, 3.3), _doc("mp-3", None, 3.5)])
    monkeypatch.setenv("MP_API_KEY", "test-key")
    monkeypatch.setattr(sources, "_mp_rester", lambda key: fake)
    structure, source = load_structure("LiIn")
    assert source.kind == "materials_project"
    assert source.id == "mp-1"
    assert source.database_version == "2025.09.25"
    assert source.retrieved
    assert structure.lattice.a == pytest.approx(3.3)
    assert fake.queries == [{"formula": "LiIn", "fields": fake.queries[0]["fields"]}]


def test_mp_id_lookup_asks_for_that_id(monkeypatch):
    fake = _FakeRester([_doc("mp-1234", 0.0, 3.3)])
    monkeypatch.setenv("MP_API_KEY", "test-key")
    monkeypatch.setattr(sources, "_mp_rester", lambda key: fake)
    _, source = load_structure("mp-1234")
    assert source.id == "mp-1234"
    assert fake.queries[0]["material_ids"] == ["mp-1234"]


def test_unreachable_materials_project_falls_back_to_fixture(monkeypatch, caplog):
    fake = _FakeRester([], fail=ConnectionError("no route to host"))
    monkeypatch.setenv("MP_API_KEY", "test-key")
    monkeypatch.setattr(sources, "_mp_rester", lambda key: fake)
    with caplog.at_level(logging.WARNING, logger="carrierflow"):
        _, source = load_structure("Li5In4")
    assert source.kind == "fixture"
    assert "unreachable" in caplog.records[0].getMessage()


def test_unknown_entries_are_clear_errors(monkeypatch):
    with pytest.raises(StructureError, match="no MP_API_KEY is set"):
        load_structure("mp-135")
    with pytest.raises(StructureError, match="no fixture for 'NaCl'"):
        load_structure("NaCl")
    with pytest.raises(StructureError, match="neither a structure file, an mp-id nor a formula"):
        load_structure("Unobtainium")
    fake = _FakeRester([])
    monkeypatch.setenv("MP_API_KEY", "test-key")
    monkeypatch.setattr(sources, "_mp_rester", lambda key: fake)
    with pytest.raises(StructureError, match="has no entry for 'Xe'"):
        load_structure("Xe")


def test_structure_files_are_read_with_their_path(tmp_path):
    path = tmp_path / "host.cif"
    load_fixture("Li3In2")[0].to(filename=str(path))
    structure, source = load_structure(str(path))
    assert source.kind == "file"
    assert structure.composition.reduced_formula == "Li3In2"
    bad = tmp_path / "broken.cif"
    bad.write_text("not a cif")
    with pytest.raises(StructureError, match="cannot read a structure from"):
        load_structure(str(bad))
