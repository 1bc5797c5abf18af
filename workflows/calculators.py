"""Calculators by name: each one a set of atomate2 Makers, so every flow has the same graph."""

from __future__ import annotations

import hashlib
import math
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

from carrierflow.workflows.dft import PRESETS, DftSettings

# Energies from machine-learned stand-ins are good to about 0.1 eV per defect; EMT is a toy.
# PBE at the study's settings is converged to a few 10 meV per formation energy, the fast
# preset (coarser cut-off, mesh and forces) to about 0.1 eV.
DEFAULT_UNCERTAINTY_EV = {
    "emt": 0.1,
    "sevennet": 0.1,
    "chgnet": 0.1,
    "mace": 0.1,
    "vasp": 0.05,
    "gpaw": 0.05,
}
FAST_PRESET_UNCERTAINTY_EV = 0.1
DFT_CALCULATORS = frozenset({"vasp", "gpaw"})
VASP_ONLY_SETTINGS = ("potcars", "incar")
PULAY_CUTOFF_FACTOR = 1.3
TASKS = ("bulk_relax", "ion_relax", "static")

SEVENNET_MODELS = {"7net-l3i5": {}, "7net-0": {}, "7net-mf-0": {"modal": "PBE"}}
DEFAULT_SEVENNET_MODEL = "7net-l3i5"

# the optimizers atomate2's ASE Makers accept by name
ASE_OPTIMIZERS = ("BFGS", "BFGSLineSearch", "LBFGS", "LBFGSLineSearch", "FIRE")

# ASE's EMT is parametrised for these metals (H, C, N, O are only rough add-ons)
EMT_ELEMENTS = frozenset({"Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt"})


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
        Force convergence of every relaxation, eV/A (0.01; 0.05 with the fast DFT preset).
    uncertainty_eV
        The energy uncertainty used by the verdict; documented defaults per calculator.
    max_steps
        The optimizer step limit of one relaxation.
    optimizer
        The ASE optimizer of the ionic relaxations (not of DFT codes). BFGSLineSearch needs about
        0.6x the force calls of BFGS per Li-In defect, but its longer steps land some Li-In
        interstitials in other minima (E_f up to 0.2 eV apart): BFGS stays the default.
    dft
        Overrides of the preset's DFT settings (:class:`DftSettings` fields), DFT codes only.
    preset
        DFT settings to start from: ``study`` (the study's) or ``fast`` (a laptop's).
    command
        The command that runs the code (VASP: ``$CARRIERFLOW_VASP_CMD`` or atomate2's VASP_CMD;
        GPAW: the Python that has GPAW, found when not given).
    cores
        MPI ranks of one GPAW calculation.
    workdir
        Where codes that write files run, relative to the job's directory.
    """

    name: str
    model: str | None = None
    fmax: float | None = None
    uncertainty_eV: float | None = None
    max_steps: int = 1000
    optimizer: str = "BFGS"
    dft: dict = field(default_factory=dict)
    preset: str = "study"
    command: str | None = None
    cores: int = 1
    workdir: str = "carrierflow-calculations"
    model_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.name not in DEFAULT_UNCERTAINTY_EV:
            known = ", ".join(DEFAULT_UNCERTAINTY_EV)
            raise CalculatorError(f"unknown calculator '{self.name}' (known: {known})")
        if self.preset not in PRESETS:
            raise CalculatorError(
                f"unknown DFT preset '{self.preset}' (presets: {', '.join(PRESETS)})"
            )
        fast = self.preset == "fast"
        if self.fmax is None:
            self.fmax = 0.05 if fast else 0.01
        # inf relaxed nothing and called it converged; nan ran every relaxation to its limit
        if not (math.isfinite(self.fmax) and self.fmax > 0):
            raise CalculatorError(f"--fmax must be a finite number > 0, got {self.fmax}")
        if self.optimizer not in ASE_OPTIMIZERS:
            raise CalculatorError(
                f"unknown optimizer '{self.optimizer}' (known: {', '.join(ASE_OPTIMIZERS)})"
            )
        if self.cores < 1:
            raise CalculatorError(f"cores must be at least 1, got {self.cores}")
        if self.uncertainty_eV is not None and not (
            math.isfinite(self.uncertainty_eV) and self.uncertainty_eV >= 0
        ):
            raise CalculatorError(
                f"--uncertainty must be a finite number >= 0, got {self.uncertainty_eV}"
            )
        if self.uncertainty_eV is None:
            self.uncertainty_eV = (
                FAST_PRESET_UNCERTAINTY_EV if fast else DEFAULT_UNCERTAINTY_EV[self.name]
            )
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
        self._identify_model_file()
        if self.name in DFT_CALCULATORS:
            try:
                self.dft_settings  # noqa: B018 - validates preset and overrides
            except ValidationError as exc:
                first = exc.errors()[0]
                field = DftSettings.model_fields.get(str(first["loc"][0]))
                name = (field.json_schema_extra or {}).get("option") if field else None
                raise CalculatorError(
                    f"invalid DFT setting {name or '.'.join(map(str, first['loc']))}: "
                    f"{first['msg'].lower()}"
                ) from exc
            vasp_only = [k for k in VASP_ONLY_SETTINGS if self.dft.get(k)]
            if self.name != "vasp" and vasp_only:
                raise CalculatorError(
                    f"{', '.join(vasp_only)} settings are VASP's; calculator '{self.name}' "
                    "takes none"
                )
            if self.command is None and self.name == "vasp":
                self.command = _default_vasp_command()
        elif self.dft or fast:
            given = ", ".join(self.dft) or f"preset {self.preset}"
            raise CalculatorError(f"calculator '{self.name}' takes no DFT settings (got {given})")
        elif self.command:
            raise CalculatorError(f"calculator '{self.name}' runs in-process: it takes no command")
        if self.cores > 1 and self.name != "gpaw":
            raise CalculatorError("--cores sets the MPI ranks of GPAW; other calculators take none")

    def _identify_model_file(self) -> None:
        """A model file is identified by its content, not its path: overwrite the file and no
        result of the old model is reused. A calculator rebuilt from a flow (a queued job)
        refuses a file that changed since the flow was built."""
        if not self.model or not Path(self.model).is_file():
            return
        digest = file_sha256(self.model)
        if self.model_sha256 is not None and self.model_sha256 != digest:
            raise CalculatorError(
                f"model file '{self.model}' changed since the flow was built "
                f"(SHA-256 {self.model_sha256[:12]}... then, {digest[:12]}... now)"
            )
        self.model_sha256 = digest

    @property
    def dft_settings(self) -> DftSettings | None:
        """The DFT settings in force (preset, then overrides), None for the other calculators."""
        if self.name not in DFT_CALCULATORS:
            return None
        return DftSettings(**{**PRESETS[self.preset], **self.dft})

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
            "gpaw": "gpaw",
        }[self.name]

    def check_installed(self) -> None:
        """Fail early, with the install command, when the calculator's package is missing."""
        if self.name == "gpaw":
            from carrierflow.workflows.gpaw_makers import INSTALL_HINT, python_with_gpaw

            python = python_with_gpaw(self.command)
            if python is None:
                raise CalculatorError(f"GPAW is not installed: {INSTALL_HINT}")
            self.command = python
            return
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
        """Fail early when a code cannot run here: the VASP executable or POTCARs, GPAW's PAW
        setups or mpirun missing."""
        if self.name == "gpaw":
            from carrierflow.workflows.gpaw_makers import has_paw_setups

            self.check_installed()
            if not has_paw_setups(self.command):
                raise CalculatorError(
                    "GPAW finds no PAW setups: install gpaw-data (apt-get or pip), or set "
                    "GPAW_SETUP_PATH"
                )
            if self.cores > 1 and not shutil.which("mpirun"):
                raise CalculatorError(f"--cores {self.cores} needs mpirun, which is not installed")
            return
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
        """Refuse a system the calculator cannot treat: elements EMT is not made for, or that a
        SevenNet model was not trained on (read from its checkpoint, which must load)."""
        if self.name == "sevennet":
            known = sevennet_elements(self.model)
            missing = sorted(set(elements) - known)
            if missing:
                raise CalculatorError(
                    f"SevenNet model '{self.model}' does not know {', '.join(missing)}"
                )
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
            "model_sha256": self.model_sha256,
            "version": package_version,
            "fmax_eV_A": self.fmax,
            "uncertainty_eV": self.uncertainty_eV,
            "optimizer": self.optimizer,
        }
        if self.dft_settings is not None:
            described |= {
                "optimizer": "VASP IBRION=2 (conjugate gradient)"
                if self.name == "vasp"
                else "ASE BFGS (maxstep 0.05 A)",
                "preset": self.preset,
                "settings": self.dft_settings.model_dump(),
                "overrides": self.dft_settings.overrides(),
            }
        return described

    @property
    def label(self) -> str:
        """A short label such as ``sevennet-7net-l3i5`` or ``gpaw-fast``."""
        if self.model_sha256:
            return f"{self.name}-{Path(self.model).stem}-{self.model_sha256[:8]}"
        if self.model:
            return f"{self.name}-{self.model}"
        return self.name if self.preset == "study" else f"{self.name}-{self.preset}"

    def makers(self, task: str) -> list[Maker]:
        """The Makers of one flow role, run in order, each from the previous one's structure:
        ``bulk_relax`` (cell and ions), ``ion_relax`` (ions at a fixed cell) or ``static``."""
        if task not in TASKS:
            raise ValueError(f"unknown task '{task}' (tasks: {', '.join(TASKS)})")
        if self.name == "vasp":
            from carrierflow.workflows.vasp_makers import VaspMakers

            # POTCARs are written where VASP runs, which may not be where the flow is built
            vasp = VaspMakers(settings=self.dft_settings, fmax=self.fmax, command=self.command)
            return (
                vasp.bulk_relax()
                if task == "bulk_relax"
                else (vasp.ion_relax() if task == "ion_relax" else [vasp.static()])
            )
        if self.name == "gpaw":
            return self._gpaw_makers(task)
        steps = 1 if task == "static" else self.max_steps
        return [self._ase_maker(relax_cell=task == "bulk_relax", steps=steps)]

    def neb_makers(self, fmax: float, steps: int) -> list[Maker]:
        """The climbing-image NEB of a path's images: atomate2's ASE NEB Makers (FIRE) for the
        in-process calculators, its VASP NEB Maker (VTST) for VASP."""
        if self.name == "gpaw":
            raise CalculatorError("NEB with 'gpaw' is not available yet")
        if self.name == "vasp":
            from carrierflow.workflows.vasp_makers import VaspMakers

            vasp = VaspMakers(settings=self.dft_settings, fmax=fmax, command=self.command)
            return [vasp.neb(steps)]
        common = {
            "steps": steps,
            "relax_kwargs": {"fmax": fmax},
            "neb_kwargs": {"climb": True, "method": "improvedtangent", "k": 5.0},
        }
        if self.name == "emt":
            from atomate2.ase.neb import EmtNebFromImagesMaker

            return [EmtNebFromImagesMaker(**common)]
        from atomate2.forcefields.neb import ForceFieldNebFromImagesMaker

        name, kwargs = self._force_field()
        return [
            ForceFieldNebFromImagesMaker(force_field_name=name, calculator_kwargs=kwargs, **common)
        ]

    def _force_field(self) -> tuple[str, dict]:
        """atomate2's force-field name and calculator arguments."""
        if self.name == "sevennet":
            return "SevenNet", {"model": self.model, **SEVENNET_MODELS.get(self.model, {})}
        if self.name == "chgnet":
            return "CHGNet", {}
        return "MACE_MP_0", {"model": self.model}

    def _gpaw_makers(self, task: str) -> list[Maker]:
        from carrierflow.workflows.gpaw_makers import GpawMaker

        common = {
            "fmax": self.fmax,
            "settings": self.dft_settings.model_dump(),
            "python": self.command,
            "cores": self.cores,
        }
        static = GpawMaker(name="static", steps=1, **common)
        if task == "static":
            return [static]
        if task == "ion_relax":
            return [GpawMaker(name="ion relax", steps=self.max_steps, **common)]
        # The cell relaxes at 1.3x the cut-off, where the Pulay stress of a plane-wave basis is
        # small (at 400 eV it shrinks the Li-In cells by 1 % and raises their energy); the
        # single point that follows, at the preset's cut-off, gives the energy that mu and the
        # supercells share.
        relax_settings = {**common["settings"]}
        relax_settings["encut_eV"] = PULAY_CUTOFF_FACTOR * relax_settings["encut_eV"]
        relax = GpawMaker(
            name="bulk relax",
            relax_cell=True,
            steps=self.max_steps,
            **{**common, "settings": relax_settings},
        )
        return [relax, static]

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

        name, kwargs = self._force_field()
        return ForceFieldRelaxMaker(force_field_name=name, calculator_kwargs=kwargs, **common)


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


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _default_vasp_command() -> str:
    from atomate2 import SETTINGS

    return os.environ.get("CARRIERFLOW_VASP_CMD") or SETTINGS.VASP_CMD


def potcar_directory() -> str | None:
    """pymatgen's POTCAR directory (PMG_VASP_PSP_DIR), None when it is not set."""
    from pymatgen.core import SETTINGS

    return SETTINGS.get("PMG_VASP_PSP_DIR")
