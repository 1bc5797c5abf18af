"""GPAW (PBE, plane waves) through carrierflow's worker, in any Python that has GPAW."""

from __future__ import annotations

import shutil
from dataclasses import replace

from carrierflow.workflows.codes.base import CalculatorError, register
from carrierflow.workflows.codes.dft import DftCode

PULAY_CUTOFF_FACTOR = 1.3
# BFGS's largest step (A) in a relaxation that starts from a stand-in's Hessian; the worker's
# 0.05 elsewhere (70 eV/A^2's first steps are short anyway). Guided, the Li5In4 vacancy's descent
# from SevenNet-0's minimum was clipped at 0.05 A in 17 of its 19 steps (0.02 eV down each). On
# the shipped Li-In model standing in for GPAW from there: 21 force calls at 0.05, 12 at 0.1,
# 9-10 at 0.15-0.2, none uphill. In GPAW (fast preset, 2 cores, 2026-12-03): 11 force calls
# and 141 SCF iterations in 30 min at 0.1, where 0.05 took 20 and 234 in 57 min, ending 8 meV
# higher (-66.0453 against -66.0529 eV; fmax 0.044 on the flat end, inside the preset's 0.1 eV).
GUIDED_MAXSTEP_A = 0.1


@register
class Gpaw(DftCode):
    name = "gpaw"
    package = "gpaw"
    module = "gpaw"
    parallel = True
    resumes_from_frames = True
    optimizer = f"ASE BFGS (maxstep 0.05 A; {GUIDED_MAXSTEP_A} A from a stand-in's Hessian)"

    def check_installed(self, calculator) -> None:
        from carrierflow.workflows.gpaw_makers import INSTALL_HINT, python_with_gpaw

        python = python_with_gpaw(calculator.command)
        if python is None:
            raise CalculatorError(f"GPAW is not installed: {INSTALL_HINT}")
        calculator.command = python

    def check_can_run(self, calculator) -> None:
        from carrierflow.workflows.gpaw_makers import has_paw_setups

        self.check_installed(calculator)
        if not has_paw_setups(calculator.command):
            raise CalculatorError(
                "GPAW finds no PAW setups: install gpaw-data (apt-get or pip), or set "
                "GPAW_SETUP_PATH"
            )
        if calculator.cores > 1 and not shutil.which("mpirun"):
            raise CalculatorError(
                f"--cores {calculator.cores} needs mpirun, which is not installed"
            )

    def installed_version(self, calculator) -> str | None:
        from carrierflow.workflows.gpaw_makers import gpaw_version, python_with_gpaw

        python = python_with_gpaw(calculator.command)
        return gpaw_version(python) if python else None

    def makers(self, calculator, task: str):
        from carrierflow.workflows.gpaw_makers import GpawMaker

        common = {
            "fmax": calculator.fmax,
            "settings": calculator.dft_settings.model_dump(),
            "python": calculator.command,
            "cores": calculator.cores,
            "resume_from": calculator.resume_from,
        }
        static = GpawMaker(name="static", steps=1, **common)
        if task == "static":
            return [static]
        if task == "ion_relax":
            return [GpawMaker(name="ion relax", steps=calculator.max_steps, **common)]
        # The cell relaxes at 1.3x the cut-off, where the Pulay stress of a plane-wave basis is
        # small (at 400 eV it shrinks the Li-In cells by 1 % and raises their energy); the
        # single point that follows, at the preset's cut-off, gives the energy that mu and the
        # supercells share.
        relax_settings = {**common["settings"]}
        relax_settings["encut_eV"] = PULAY_CUTOFF_FACTOR * relax_settings["encut_eV"]
        relax = GpawMaker(
            name="bulk relax",
            relax_cell=True,
            steps=calculator.max_steps,
            **{**common, "settings": relax_settings},
        )
        return [relax, static]

    def relax_from_minimum(self, calculator, stand_in):
        makers = self.makers(calculator, "ion_relax")
        if stand_in.code.is_dft:
            return makers
        # 20 GPAW force calls for the Li5In4 vacancy from SevenNet-0's minimum, where 70 eV/A^2 took
        # 38 (carrierflow.workflows.hessian); 11 with the longer guided steps
        guided = {"hessian_from": stand_in.model_identity, "maxstep_A": GUIDED_MAXSTEP_A}
        return [replace(maker, **guided) for maker in makers]
