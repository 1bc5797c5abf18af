"""Calculators by name: each one a set of atomate2 Makers, so every flow has the same graph."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from jobflow import Maker
from monty.json import MSONable

# Energies from machine-learned stand-ins are good to about 0.1 eV per defect; EMT is a toy.
DEFAULT_UNCERTAINTY_EV = {"emt": 0.1, "sevennet": 0.1, "chgnet": 0.1, "mace": 0.1}

SEVENNET_MODELS = {"7net-l3i5": {}, "7net-0": {}, "7net-mf-0": {"modal": "PBE"}}
DEFAULT_SEVENNET_MODEL = "7net-l3i5"

# ASE's EMT is parametrised for these metals (H, C, N, O are only rough add-ons)
EMT_ELEMENTS = frozenset({"Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt"})

PLANNED = {
    "vasp": "VASP (PBE, study settings) is the production path of the next release",
    "gpaw": "GPAW (local PBE) is the local DFT path of the next release",
}


class CalculatorError(ValueError):
    """A calculator that cannot be built or cannot treat the requested system."""


@dataclass
class Calculator(MSONable):
    """One calculator: the Makers for bulk relaxation, ionic relaxation and static energies.

    Parameters
    ----------
    name
        ``emt``, ``sevennet``, ``chgnet`` or ``mace``.
    model
        The model of a machine-learned potential (a shipped name or a file).
    fmax
        Force convergence of every relaxation, eV/A.
    uncertainty_eV
        The energy uncertainty used by the verdict; documented defaults per calculator.
    max_steps
        The optimizer step limit of one relaxation.
    """

    name: str
    model: str | None = None
    fmax: float = 0.01
    uncertainty_eV: float | None = None
    max_steps: int = 1000
    optimizer: str = "BFGS"
    extra_kwargs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name in PLANNED:
            raise CalculatorError(
                f"calculator '{self.name}' is not available yet: {PLANNED[self.name]}"
            )
        if self.name not in DEFAULT_UNCERTAINTY_EV:
            known = ", ".join([*DEFAULT_UNCERTAINTY_EV, *PLANNED])
            raise CalculatorError(f"unknown calculator '{self.name}' (known: {known})")
        if self.fmax <= 0:
            raise CalculatorError(f"fmax must be positive, got {self.fmax}")
        if self.uncertainty_eV is None:
            self.uncertainty_eV = DEFAULT_UNCERTAINTY_EV[self.name]
        if self.name == "sevennet":
            self.model = self.model or DEFAULT_SEVENNET_MODEL
            if self.model not in SEVENNET_MODELS and not Path(self.model).is_file():
                raise CalculatorError(
                    f"unknown SevenNet model '{self.model}' "
                    f"(shipped: {', '.join(SEVENNET_MODELS)}; or give a checkpoint file)"
                )
        elif self.name == "mace":
            if not self.model:
                raise CalculatorError(
                    "calculator 'mace' needs a model file: --model PATH "
                    "(MACE ships no weights and none can be downloaded here)"
                )
            if not Path(self.model).is_file():
                raise CalculatorError(f"MACE model file '{self.model}' does not exist")
        elif self.model:
            raise CalculatorError(f"calculator '{self.name}' takes no --model (got '{self.model}')")

    @property
    def package(self) -> str:
        """The Python package behind the calculator."""
        return {"emt": "ase", "sevennet": "sevenn", "chgnet": "chgnet", "mace": "mace-torch"}[
            self.name
        ]

    def check_installed(self) -> None:
        """Fail early, with the install command, when the calculator's package is missing."""
        module = {"ase": "ase", "sevenn": "sevenn", "chgnet": "chgnet", "mace-torch": "mace"}
        try:
            import_module(module[self.package])
        except ImportError as exc:
            extra = " (pip install 'carrierflow[mace]')" if self.name == "mace" else ""
            raise CalculatorError(
                f"calculator '{self.name}' needs the package {self.package}{extra}"
            ) from exc

    def check_elements(self, elements) -> None:
        """Refuse a system the calculator cannot treat."""
        if self.name == "emt":
            missing = sorted(set(elements) - EMT_ELEMENTS)
            if missing:
                raise CalculatorError(
                    f"EMT cannot treat {', '.join(missing)} "
                    f"(EMT elements: {', '.join(sorted(EMT_ELEMENTS))})"
                )

    def describe(self) -> dict:
        """What to record with every result."""
        try:
            package_version = version(self.package)
        except PackageNotFoundError:
            package_version = None
        return {
            "name": self.name,
            "model": self.model,
            "version": package_version,
            "fmax_eV_A": self.fmax,
            "uncertainty_eV": self.uncertainty_eV,
            "optimizer": self.optimizer,
        }

    @property
    def label(self) -> str:
        """A short label such as ``sevennet-7net-l3i5``."""
        return f"{self.name}-{Path(self.model).stem}" if self.model else self.name

    def _maker(self, relax_cell: bool, steps: int) -> Maker:
        common = {
            "relax_cell": relax_cell,
            "fix_symmetry": relax_cell,
            "steps": steps,
            "relax_kwargs": {"fmax": self.fmax, "final_atoms_object_file": None},
            "optimizer_kwargs": {"optimizer": self.optimizer},
            "ionic_step_data": ("energy",),
        }
        if self.name == "emt":
            from atomate2.ase.jobs import EmtRelaxMaker

            return EmtRelaxMaker(**common)
        from atomate2.forcefields.jobs import ForceFieldRelaxMaker

        if self.name == "sevennet":
            kwargs = {"model": self.model, **SEVENNET_MODELS.get(self.model, {})}
            return ForceFieldRelaxMaker(
                force_field_name="SevenNet", calculator_kwargs=kwargs, **common
            )
        if self.name == "chgnet":
            return ForceFieldRelaxMaker(force_field_name="CHGNet", **common)
        return ForceFieldRelaxMaker(
            force_field_name="MACE_MP_0", calculator_kwargs={"model": self.model}, **common
        )

    def bulk_relax_maker(self) -> Maker:
        """Cell and ions, space group kept."""
        return self._maker(relax_cell=True, steps=self.max_steps)

    def ion_relax_maker(self) -> Maker:
        """Ions only, at a fixed cell."""
        return self._maker(relax_cell=False, steps=self.max_steps)

    def static_maker(self) -> Maker:
        """A single-point energy."""
        return self._maker(relax_cell=False, steps=1)
