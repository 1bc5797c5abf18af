"""What every code is: a small base class, and the one registry of codes by name.

A code knows what it needs (its package), what it takes (a model, DFT settings, a command), what
it can treat, and its atomate2 Makers for each flow role and for NEB. ``Calculator`` holds the
user's settings and asks its code for the rest; adding a potential is one module here.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from jobflow import Maker

if TYPE_CHECKING:
    from carrierflow.workflows.calculators import Calculator

TASKS = ("bulk_relax", "ion_relax", "static")

CODES: dict[str, Code] = {}


class CalculatorError(ValueError):
    """A calculator that cannot be built or cannot treat the requested system."""


def register(code: type[Code]) -> type[Code]:
    """Add a code to the registry under its name."""
    CODES[code.name] = code()
    return code


class Code:
    """One code: its name, package, default uncertainty and Makers."""

    name: ClassVar[str]
    package: ClassVar[str]
    module: ClassVar[str]
    # the energy uncertainty of one formation energy, used by the verdict (eV)
    uncertainty_eV: ClassVar[float] = 0.1
    is_dft: ClassVar[bool] = False
    # runs under MPI with --cores ranks
    parallel: ClassVar[bool] = False
    # continues a relaxation from its frames in a data set (--resume-from)
    resumes_from_frames: ClassVar[bool] = False
    install_hint: ClassVar[str] = ""

    def check_options(self, calculator: Calculator) -> None:
        """Refuse settings the code does not take (called once a calculator is built)."""
        if calculator.model:
            raise CalculatorError(
                f"calculator '{self.name}' takes no --model (got '{calculator.model}')"
            )

    def model_file(self, calculator: Calculator) -> str | None:
        """The file of the calculator's model, identified by its content (None: no file)."""
        if calculator.model and Path(calculator.model).is_file():
            return calculator.model
        return None

    def check_installed(self, calculator: Calculator) -> None:
        """Fail early, with the install command, when the code's package is missing."""
        try:
            import_module(self.module)
        except ImportError as exc:
            raise CalculatorError(
                f"calculator '{self.name}' needs the package {self.package}{self.install_hint}"
            ) from exc

    def check_can_run(self, calculator: Calculator) -> None:
        """Fail early when the code cannot run here (an executable, data files)."""

    def installed_version(self, calculator: Calculator) -> str | None:
        """The code's version as its runs record it (``code_version``), where it can be known
        before a run (None: it cannot, or the code records none)."""
        return None

    def check_elements(self, calculator: Calculator, elements: set[str]) -> None:
        """Refuse a system the code cannot treat."""

    def makers(self, calculator: Calculator, task: str) -> list[Maker]:
        """The Makers of one flow role, run in order, each from the previous final structure."""
        raise NotImplementedError

    def relax_from_minimum(self, calculator: Calculator, stand_in: Calculator) -> list[Maker]:
        """The ionic relaxation Makers of a start that is ``stand_in``'s minimum (the
        refinement's DFT relaxations): a code whose optimizer takes a first Hessian uses the
        stand-in's there."""
        return self.makers(calculator, "ion_relax")

    def neb_makers(self, calculator: Calculator, fmax: float, steps: int) -> list[Maker]:
        """The climbing-image NEB Makers of a path's images."""
        raise CalculatorError(f"NEB with '{self.name}' is not available yet")
