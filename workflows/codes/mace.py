"""MACE: needs a model file (MACE ships no weights and none can be downloaded here)."""

from __future__ import annotations

from pathlib import Path

from carrierflow.workflows.codes.ase import ForceFieldCode
from carrierflow.workflows.codes.base import CalculatorError, register


@register
class Mace(ForceFieldCode):
    name = "mace"
    package = "mace-torch"
    module = "mace"
    force_field = "MACE_MP_0"
    install_hint = " (pip install 'carrierflow[mace]')"

    def check_options(self, calculator) -> None:
        if not calculator.model:
            raise CalculatorError(
                "calculator 'mace' needs a model file: --model PATH "
                "(MACE ships no weights and none can be downloaded here)"
            )
        if not Path(calculator.model).is_file():
            raise CalculatorError(f"MACE model file '{calculator.model}' does not exist")

    def calculator_kwargs(self, calculator) -> dict:
        return {"model": calculator.model}
