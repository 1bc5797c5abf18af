"""Codes that run in-process through ASE: EMT and the machine-learned potentials."""

from __future__ import annotations

from typing import TYPE_CHECKING

from jobflow import Maker

from carrierflow.workflows.codes.base import Code

if TYPE_CHECKING:
    from carrierflow.workflows.calculators import Calculator

# the optimizers atomate2's ASE Makers accept by name
ASE_OPTIMIZERS = ("BFGS", "BFGSLineSearch", "LBFGS", "LBFGSLineSearch", "FIRE")
# climbing image with the improved tangent; FIRE, atomate2's default, for the band
NEB_KWARGS = {"climb": True, "method": "improvedtangent", "k": 5.0}


class AseCode(Code):
    """A code with atomate2's ASE relax and NEB Makers: one Maker per flow role."""

    def relax_maker(self, calculator: Calculator, **common) -> Maker:
        """atomate2's relax Maker of the code, with the flow role's settings."""
        raise NotImplementedError

    def neb_maker(self, calculator: Calculator, **common) -> Maker:
        """atomate2's NEB Maker of the code (none: the code has no NEB here)."""
        return super().neb_makers(calculator, common["relax_kwargs"]["fmax"], common["steps"])

    def makers(self, calculator: Calculator, task: str) -> list[Maker]:
        relax_cell = task == "bulk_relax"
        common = {
            "relax_cell": relax_cell,
            "fix_symmetry": relax_cell,
            "steps": 1 if task == "static" else calculator.max_steps,
            "relax_kwargs": {"fmax": calculator.fmax, "final_atoms_object_file": None},
            "optimizer_kwargs": {"optimizer": calculator.optimizer},
            "ionic_step_data": ("energy",),
        }
        return [self.relax_maker(calculator, **common)]

    def neb_makers(self, calculator: Calculator, fmax: float, steps: int) -> list[Maker]:
        common = {"steps": steps, "relax_kwargs": {"fmax": fmax}, "neb_kwargs": dict(NEB_KWARGS)}
        return [self.neb_maker(calculator, **common)]


class ForceFieldCode(AseCode):
    """A machine-learned potential through atomate2's force-field Makers."""

    force_field: str

    def calculator_kwargs(self, calculator: Calculator) -> dict:
        """atomate2's calculator arguments of the force field."""
        return {}

    def relax_maker(self, calculator: Calculator, **common) -> Maker:
        from atomate2.forcefields.jobs import ForceFieldRelaxMaker

        return ForceFieldRelaxMaker(
            force_field_name=self.force_field,
            calculator_kwargs=self.calculator_kwargs(calculator),
            **common,
        )

    def neb_maker(self, calculator: Calculator, **common) -> Maker:
        from atomate2.forcefields.neb import ForceFieldNebFromImagesMaker

        return ForceFieldNebFromImagesMaker(
            force_field_name=self.force_field,
            calculator_kwargs=self.calculator_kwargs(calculator),
            **common,
        )
