"""results.json is the typed document of analysis/documents.py, checked before it is written."""

import json
import math

import pytest
from pydantic import ValidationError

from carrierflow.analysis.documents import (
    RESULTS_SCHEMA_VERSION,
    Results,
    checked,
    schema,
    shipped_schema,
)

REFINED = {
    "calculator": {"name": "gpaw"},
    "refine": {"k": 1},
    "verdicts": {"Li": {"dominant_carrier": "vacancy", "margin_eV": 0.2, "lowest_eV": {}}},
}


def test_the_shipped_json_schema_is_the_models():
    """Regenerate with `python -m carrierflow.analysis.documents` when a model changes."""
    assert shipped_schema() == json.loads(json.dumps(schema()))


def test_a_block_with_an_undeclared_key_or_a_non_finite_number_is_refused():
    from carrierflow.analysis.documents import RefinedFrom

    RefinedFrom.model_validate(REFINED)
    with pytest.raises(ValidationError, match="extra"):
        RefinedFrom.model_validate({**REFINED, "surprise": 1})
    bad = {**REFINED["verdicts"]["Li"], "margin_eV": math.nan}
    with pytest.raises(ValidationError, match="finite"):
        RefinedFrom.model_validate({**REFINED, "verdicts": {"Li": bad}})
    with pytest.raises(ValidationError):
        Results.model_validate({"schema_version": RESULTS_SCHEMA_VERSION})


def test_documents_of_an_older_schema_are_read_as_they_are():
    old = {"schema_version": 2, "system": "Li-In", "anything": "kept"}
    assert checked(old) == old
