"""Calculators by name: each one a set of atomate2 Makers, so every flow has the same graph."""

from __future__ import annotations

import os
import shlex
import shutil
from dataclasses import dataclass, field
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from jobflow import Maker
from monty.json import MSONable
from pydantic import ValidationError

from carrierflow.workflows.dft import DftSettings

# Energies from machine-learned stand-ins are good to about 0.1 eV per defect; EMT is a toy.
# PBE at the study's settings is converged to a few 10 meV per formation energy.
DEFAULT_UNCERTAINTY_EV = {"emt": 0.1, "sevennet": 0.1, "chgnet": 0.1, "mace": 0.1, "vasp": 0.05}
DFT_CALCULATORS = frozenset({"vasp"})
TASKS = ("bulk_relax", "ion_relax", "static")

SEVENNET_MODELS = {"7net-l3i5": {}, "7net-0": {}, "7net-mf-0": {"modal": "PBE"}}
DEFAULT_SEVENNET_MODEL = "7net-l3i5"

# ASE's EMT is parametrised for these metals (H, C, N, O are only rough add-ons)
EMT_ELEMENTS = frozenset({"Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt"})

PLANNED = {
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
        ``emt``, ``sevennet``, ``chgnet``, ``mace`` or ``vasp``.
    model
        The model of a machine-learned potential (a shipped name or a file).
    fmax
        Force convergence of every relaxation, eV/A.
    uncertainty_eV
        The energy uncertainty used by the verdict; documented defaults per calculator.
    max_steps
        The optimizer step limit of one relaxation.
    dft
        Overrides of the study's DFT settings (:class:`DftSettings` fields), DFT codes only.
    command
        The command that runs the code (VASP: ``$CARRIERFLOW_VASP_CMD`` or atomate2's VASP_CMD).
    workdir
        Where codes that write files run, relative to the job's directory.
    """

    name: str
    model: str | None = None
    fmax: float = 0.01
    uncertainty_eV: float | None = None
    max_steps: int = 1000
    optimizer: str = "BFGS"
    dft: dict = field(default_factory=dict)
    command: str | None = None
    workdir: str = "carrierflow-calculations"

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
        if self.name in DFT_CALCULATORS:
            try:
                DftSettings(**self.dft)
            except ValidationError as exc:
                first = exc.errors()[0]
                raise CalculatorError(
                    f"invalid DFT setting {'.'.join(map(str, first['loc']))}: {first['msg']}"
                ) from exc
            if self.command is None:
                self.command = _default_vasp_command()
        elif self.dft:
            raise CalculatorError(
                f"calculator '{self.name}' takes no DFT settings (got {', '.join(self.dft)})"
            )
        elif self.command:
            raise CalculatorError(f"calculator '{self.name}' runs in-process: it takes no command")

    @property
    def dft_settings(self) -> DftSettings | None:
        """The DFT settings in force, None for the other calculators."""
        return DftSettings(**self.dft) if self.name in DFT_CALCULATORS else None

    @property
    def writes_files(self) -> bool:
        """Whether the code runs in a directory of its own (DFT codes)."""
        return self.name in DFT_CALCULATORS

    @property
    def package(self) -> str:
        """The Python package behind the calculator."""
        return {
            "emt": "ase",
            "sevennet": "sevenn",
            "chgnet": "chgnet",
            "mace": "mace-torch",
            "vasp": "custodian",
        }[self.name]

    def check_installed(self) -> None:
        """Fail early, with the install command, when the calculator's package is missing."""
        module = {
            "ase": "ase",
            "sevenn": "sevenn",
            "chgnet": "chgnet",
            "mace-torch": "mace",
            "custodian": "custodian",
        }
        try:
            import_module(module[self.package])
        except ImportError as exc:
            extra = " (pip install 'carrierflow[mace]')" if self.name == "mace" else ""
            raise CalculatorError(
                f"calculator '{self.name}' needs the package {self.package}{extra}"
            ) from exc

    def check_can_run(self) -> None:
        """Fail early when a code cannot run here: the VASP executable or POTCARs missing."""
        if self.name != "vasp":
            return
        program = shlex.split(self.command)[0] if self.command.strip() else ""
        if not shutil.which(program):
            raise CalculatorError(
                f"VASP command '{self.command}' not found: set --vasp-cmd or CARRIERFLOW_VASP_CMD"
                " (e.g. 'mpirun -np 4 vasp_std'), or write the inputs with carrierflow write-inputs"
            )
        if not potcar_directory():
            raise CalculatorError(
                "VASP needs POTCARs: set PMG_VASP_PSP_DIR (pymatgen's POTCAR directory) in the "
                "environment or ~/.config/.pmgrc.yaml"
            )

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
        described = {
            "name": self.name,
            "model": self.model,
            "version": package_version,
            "fmax_eV_A": self.fmax,
            "uncertainty_eV": self.uncertainty_eV,
            "optimizer": self.optimizer,
        }
        if self.dft_settings is not None:
            described |= {
                "optimizer": "VASP IBRION=2 (conjugate gradient)",
                "settings": self.dft_settings.model_dump(),
                "overrides": self.dft_settings.overrides(),
            }
        return described

    @property
    def label(self) -> str:
        """A short label such as ``sevennet-7net-l3i5``."""
        return f"{self.name}-{Path(self.model).stem}" if self.model else self.name

    def makers(self, task: str) -> list[Maker]:
        """The Makers of one flow role, run in order, each from the previous one's structure:
        ``bulk_relax`` (cell and ions), ``ion_relax`` (ions at a fixed cell) or ``static``."""
        if task not in TASKS:
            raise ValueError(f"unknown task '{task}' (tasks: {', '.join(TASKS)})")
        if self.name == "vasp":
            from carrierflow.workflows.vasp import VaspMakers

            vasp = VaspMakers(
                settings=self.dft_settings,
                fmax=self.fmax,
                command=self.command,
                potcar_spec=not potcar_directory(),
            )
            return (
                vasp.bulk_relax()
                if task == "bulk_relax"
                else (vasp.ion_relax() if task == "ion_relax" else [vasp.static()])
            )
        steps = 1 if task == "static" else self.max_steps
        return [self._ase_maker(relax_cell=task == "bulk_relax", steps=steps)]

    def _ase_maker(self, relax_cell: bool, steps: int) -> Maker:
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


def _default_vasp_command() -> str:
    from atomate2 import SETTINGS

    return os.environ.get("CARRIERFLOW_VASP_CMD") or SETTINGS.VASP_CMD


def potcar_directory() -> str | None:
    """pymatgen's POTCAR directory (PMG_VASP_PSP_DIR), None when it is not set."""
    from pymatgen.core import SETTINGS

    return SETTINGS.get("PMG_VASP_PSP_DIR")
