"""What the DFT codes share: the study's settings (presets and overrides), checked once."""

from __future__ import annotations

from typing import ClassVar

from pydantic import ValidationError

from carrierflow.workflows.codes.base import CalculatorError, Code
from carrierflow.workflows.dft import DftSettings

VASP_ONLY_SETTINGS = ("potcars", "incar")


class DftCode(Code):
    """A DFT code: the study's settings, run in a folder of its own."""

    is_dft = True
    # PBE at the study's settings is converged to a few 10 meV per formation energy (the fast
    # preset, coarser, gets FAST_PRESET_UNCERTAINTY_EV)
    uncertainty_eV = 0.05
    takes_vasp_settings: ClassVar[bool] = False
    # how its relaxations move the ions, for the record
    optimizer: ClassVar[str]

    def check_options(self, calculator) -> None:
        super().check_options(calculator)
        default = type(calculator).__dataclass_fields__["optimizer"].default
        if calculator.optimizer != default:
            raise CalculatorError(
                f"calculator '{self.name}' relaxes with {self.optimizer}: --optimizer chooses "
                f"the stand-ins' ASE optimizer (got '{calculator.optimizer}')"
            )
        try:
            calculator.dft_settings  # noqa: B018 - validates preset and overrides
        except ValidationError as exc:
            first = exc.errors()[0]
            field = DftSettings.model_fields.get(str(first["loc"][0]))
            name = (field.json_schema_extra or {}).get("option") if field else None
            # a check of ours words its message itself; pydantic's start with a capital
            if first["type"] == "value_error":
                message = first["msg"].removeprefix("Value error, ")
            else:
                message = first["msg"].lower()
            raise CalculatorError(
                f"invalid DFT setting {name or '.'.join(map(str, first['loc']))}: {message}"
            ) from exc
        vasp_only = [k for k in VASP_ONLY_SETTINGS if calculator.dft.get(k)]
        if vasp_only and not self.takes_vasp_settings:
            raise CalculatorError(
                f"{', '.join(vasp_only)} settings are VASP's; calculator '{self.name}' takes none"
            )
