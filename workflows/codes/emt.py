"""EMT (ASE): a toy potential for a handful of fcc metals; the fast test analogue."""

from __future__ import annotations

from carrierflow.workflows.codes.ase import AseCode
from carrierflow.workflows.codes.base import CalculatorError, register

# ASE's EMT is parametrised for these metals (H, C, N, O are only rough add-ons)
EMT_ELEMENTS = frozenset({"Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt"})


@register
class Emt(AseCode):
    name = "emt"
    package = "ase"
    module = "ase"

    def check_elements(self, calculator, elements) -> None:
        missing = sorted(set(elements) - EMT_ELEMENTS)
        if missing:
            raise CalculatorError(
                f"EMT cannot treat {', '.join(missing)} "
                f"(EMT elements: {', '.join(sorted(EMT_ELEMENTS))})"
            )

    def relax_maker(self, calculator, **common):
        from atomate2.ase.jobs import EmtRelaxMaker

        return EmtRelaxMaker(**common)

    def neb_maker(self, calculator, **common):
        from atomate2.ase.neb import EmtNebFromImagesMaker

        return EmtNebFromImagesMaker(**common)
