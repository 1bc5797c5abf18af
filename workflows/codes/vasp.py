"""VASP through atomate2's Makers and custodian, with the study's settings."""

from __future__ import annotations

import os
import shlex
import shutil

from carrierflow.workflows.codes.base import CalculatorError, register
from carrierflow.workflows.codes.dft import DftCode


def potcar_directory() -> str | None:
    """pymatgen's POTCAR directory (PMG_VASP_PSP_DIR), None when it is not set."""
    from pymatgen.core import SETTINGS

    return SETTINGS.get("PMG_VASP_PSP_DIR")


def default_vasp_command() -> str:
    from atomate2 import SETTINGS

    return os.environ.get("CARRIERFLOW_VASP_CMD") or SETTINGS.VASP_CMD


@register
class Vasp(DftCode):
    name = "vasp"
    package = "custodian"
    module = "custodian"
    takes_vasp_settings = True
    optimizer = "VASP IBRION=2 (conjugate gradient)"

    def check_options(self, calculator) -> None:
        super().check_options(calculator)
        if calculator.command is None:
            calculator.command = default_vasp_command()

    def check_can_run(self, calculator) -> None:
        command = calculator.command
        program = shlex.split(command)[0] if command.strip() else ""
        if not shutil.which(program):
            raise CalculatorError(
                f"VASP command '{command}' not found: set --vasp-cmd or CARRIERFLOW_VASP_CMD"
                " (e.g. 'mpirun -np 4 vasp_std'), or write the inputs with carrierflow write-inputs"
            )
        if not potcar_directory():
            raise CalculatorError(
                "VASP needs POTCARs: set PMG_VASP_PSP_DIR (pymatgen's POTCAR directory) in the "
                "environment or ~/.config/.pmgrc.yaml"
            )

    def _makers(self, calculator, fmax: float):
        from carrierflow.workflows.vasp_makers import VaspMakers

        # POTCARs are written where VASP runs, which may not be where the flow is built
        return VaspMakers(settings=calculator.dft_settings, fmax=fmax, command=calculator.command)

    def makers(self, calculator, task: str):
        vasp = self._makers(calculator, calculator.fmax)
        if task == "bulk_relax":
            return vasp.bulk_relax()
        return vasp.ion_relax() if task == "ion_relax" else [vasp.static()]

    def neb_makers(self, calculator, fmax: float, steps: int):
        return [self._makers(calculator, fmax).neb(steps)]
