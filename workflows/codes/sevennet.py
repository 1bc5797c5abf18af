"""SevenNet: the models sevenn ships, those carrierflow ships (fine-tuned on its own DFT frames,
``fixtures/models/``) or a checkpoint file."""

from __future__ import annotations

import importlib.util
from functools import cache
from importlib.resources import files
from pathlib import Path

import yaml

from carrierflow.workflows.codes.ase import ForceFieldCode
from carrierflow.workflows.codes.base import CalculatorError, register

# the models sevenn ships, and the calculator arguments each needs
SEVENNET_MODELS = {"7net-l3i5": {}, "7net-0": {}, "7net-mf-0": {"modal": "PBE"}}
# the models carrierflow ships: SevenNet checkpoints fine-tuned on the DFT frames in
# fixtures/dft (how each was made and validated: its card, fixtures/models/<name>.card.json)
FINE_TUNED_MODELS = {"7net-li-in": "models/7net-li-in.pth"}
DEFAULT_SEVENNET_MODEL = "7net-l3i5"


@cache
def fine_tune_preset() -> dict:
    """SevenNet's fine-tuning preset (``sevenn/presets/fine_tune.yaml``): the training input
    and the defaults of carrierflow's training options. Read from the installed package without
    importing it (sevenn imports torch: seconds before a command could check its options)."""
    spec = importlib.util.find_spec("sevenn")
    preset = Path(spec.submodule_search_locations[0]) / "presets" / "fine_tune.yaml"
    return yaml.safe_load(preset.read_text())


def sevennet_checkpoint(model: str) -> str:
    """The checkpoint file of a SevenNet model: a shipped name (sevenn's or carrierflow's) or
    a file."""
    if model in FINE_TUNED_MODELS:
        return str(files("carrierflow.fixtures").joinpath(FINE_TUNED_MODELS[model]))
    if model in SEVENNET_MODELS:
        from sevenn.util import pretrained_name_to_path

        return str(pretrained_name_to_path(model))
    return model


def sevennet_elements(model: str) -> set[str]:
    """The elements a SevenNet model (a shipped name or a checkpoint file) was trained on; a
    file that is no SevenNet checkpoint is a one-line error before anything computes."""
    from sevenn.checkpoint import SevenNetCheckpoint

    try:
        config = SevenNetCheckpoint(sevennet_checkpoint(model)).config
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
        known = [*SEVENNET_MODELS, *FINE_TUNED_MODELS]
        if calculator.model not in known and not Path(calculator.model).is_file():
            raise CalculatorError(
                f"unknown SevenNet model '{calculator.model}' "
                f"(shipped: {', '.join(known)}; or give a checkpoint file)"
            )

    def model_file(self, calculator) -> str | None:
        # carrierflow's own models are files that a new release may replace: identified by
        # their content like any model file
        if calculator.model in FINE_TUNED_MODELS:
            return sevennet_checkpoint(calculator.model)
        return super().model_file(calculator)

    def check_elements(self, calculator, elements) -> None:
        missing = sorted(set(elements) - sevennet_elements(calculator.model))
        if missing:
            raise CalculatorError(
                f"SevenNet model '{calculator.model}' does not know {', '.join(missing)}"
            )

    def calculator_kwargs(self, calculator) -> dict:
        model = calculator.model
        if model in FINE_TUNED_MODELS:
            return {"model": sevennet_checkpoint(model)}
        return {"model": model, **SEVENNET_MODELS.get(model, {})}
