"""Flags carry a code that decisions test and a sentence that people read."""

import pytest
from pydantic import ValidationError

from carrierflow.analysis.flags import Flag, FlagCode, codes, has, texts
from carrierflow.workflows.refine import lowest_defects


def test_a_decision_reads_the_code_not_the_wording(defect_outcome):
    reworded = Flag(code=FlagCode.SHARED_STATE, text="one state with i1")
    misleading = Flag(code=FlagCode.NOT_CONVERGED, text="same relaxed energy as i1")
    defects = [
        defect_outcome("i1", "interstitial", 0.30),
        defect_outcome("i2", "interstitial", 0.30, flags=[reworded]),
        defect_outcome("i3", "interstitial", 0.40, flags=[misleading]),
    ]
    assert [d.name for d in lowest_defects(defects, 2)] == ["i1", "i3"]
    assert has([misleading], FlagCode.NOT_CONVERGED)
    assert not has([misleading], FlagCode.SHARED_STATE)


def test_flags_in_results_documents_are_read_in_both_forms():
    written = [Flag(code=FlagCode.SHARED_STATE, text="same state as i1").model_dump(mode="json")]
    assert written == [{"code": "shared-state", "text": "same state as i1"}]
    assert codes(written) == {FlagCode.SHARED_STATE}
    assert texts(written) == ["same state as i1"]
    # schema 3 and before held the sentence alone: the one code a report decides by is read
    # from its old opening, any other has none
    legacy = ["same relaxed energy as i1 (within 1 meV): one final state", "NEB not converged"]
    assert codes(legacy) == {FlagCode.SHARED_STATE, None}
    assert texts(legacy) == legacy


def test_a_flag_of_an_unknown_code_is_refused():
    with pytest.raises(ValidationError):
        Flag(code="looks-fine", text="anything")
