"""SevenNet: the shipped models (7net-l3i5 by default) or a checkpoint file."""

from __future__ import annotations

from pathlib import Path

from carrierflow.workflows.codes.ase import ForceFieldCode
from carrierflow.workflows.codes.base import CalculatorError, register

# the models sevenn ships, and the calculator arguments each needs
SEVENNET_MODELS = {"7net-l3i5": {}, "7net-0": {}, "7net-mf-0": {"modal": "PBE"}}
DEFAULT_SEVENNET_MODEL = "7net-l3i5"


def sevennet_elements(model: str) -> set[str]:
    """The elements a SevenNet model (a shipped name or a checkpoint file) was trained on; a
    file that is no SevenNet checkpoint is a one-line error before anything computes."""
    from sevenn.checkpoint import SevenNetCheckpoint
    from sevenn.util import pretrained_name_to_path

    path = model if Path(model).is_file() else pretrained_name_to_path(model)
    try:
        config = SevenNetCheckpoint(path).config
    except Exception as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise CalculatorError(f"cannot load SevenNet model '{model}': {reason}") from exc
    return set(config["chemical_species"])


@register
class SevenNet(ForceFieldCode):
    name = "sevennet"
    package = "sevenn"
    module = "sevenn"
    force_field = "SevenNet"

    def check_options(self, calculator) -> None:
        calculator.model = calculator.model or DEFAULT_SEVENNET_MODEL
        if calculator.model not in SEVENNET_MODELS and not Path(calculator.model).is_file():
            raise CalculatorError(
                f"unknown SevenNet model '{calculator.model}' "
                f"(shipped: {', '.join(SEVENNET_MODELS)}; or give a checkpoint file)"
            )

    def check_elements(self, calculator, elements) -> None:
        missing = sorted(set(elements) - sevennet_elements(calculator.model))
        if missing:
            raise CalculatorError(
                f"SevenNet model '{calculator.model}' does not know {', '.join(missing)}"
            )

    def calculator_kwargs(self, calculator) -> dict:
        return {"model": calculator.model, **SEVENNET_MODELS.get(calculator.model, {})}
