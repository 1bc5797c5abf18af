"""Calculators: the user's settings for one code; the code (``workflows/codes/``) gives the
Makers, so every flow has the same graph whatever computes it."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from jobflow import Maker
from monty.json import MSONable

from carrierflow.workflows.codes import CODES, DFT_CALCULATORS, TASKS, CalculatorError, Code
from carrierflow.workflows.codes.ase import ASE_OPTIMIZERS
from carrierflow.workflows.codes.sevennet import sevennet_elements
from carrierflow.workflows.codes.vasp import potcar_directory
from carrierflow.workflows.dataset import check_frames_file
from carrierflow.workflows.dft import PRESETS, DftSettings

# Energies from machine-learned stand-ins are good to about 0.1 eV per defect (each code's
# uncertainty_eV); the fast DFT preset (coarser cut-off, mesh and forces) to about 0.1 eV.
FAST_PRESET_UNCERTAINTY_EV = 0.1

__all__ = [
    "DFT_CALCULATORS",
    "TASKS",
    "Calculator",
    "CalculatorError",
    "by_content",
    "file_sha256",
    "potcar_directory",
    "sevennet_elements",
]


# force convergence of every relaxation by DFT preset (the study's 0.01 eV/A; the fast preset's
# coarser mesh and cut-off do not resolve finer forces), unless --fmax says otherwise
FMAX_EV_A = {"study": 0.01, "fast": 0.05}


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
        Force convergence of every relaxation, eV/A (:data:`FMAX_EV_A` by DFT preset).
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
    resume_from
        A data set of DFT frames (``carrierflow dataset``'s output, such as the ones committed
        in ``fixtures/dft/``) from which GPAW relaxations continue where they start from a
        recorded relaxation's first frame: a new machine does not pay again for the DFT of
        another. Not part of any result's identity: the last geometry is computed here.
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
    resume_from: str | None = None
    model_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.name not in CODES:
            raise CalculatorError(f"unknown calculator '{self.name}' (known: {', '.join(CODES)})")
        if self.preset not in PRESETS:
            raise CalculatorError(
                f"unknown DFT preset '{self.preset}' (presets: {', '.join(PRESETS)})"
            )
        fast = self.preset == "fast"
        if self.fmax is None:
            self.fmax = FMAX_EV_A[self.preset]
        # inf relaxed nothing and called it converged; nan ran every relaxation to its limit
        if not (math.isfinite(self.fmax) and self.fmax > 0):
            raise CalculatorError(f"--fmax must be a finite number > 0, got {self.fmax}")
        if self.optimizer not in ASE_OPTIMIZERS:
            raise CalculatorError(
                f"unknown optimizer '{self.optimizer}' (known: {', '.join(ASE_OPTIMIZERS)})"
            )
        if self.cores < 1:
            raise CalculatorError(f"--cores must be at least 1, got {self.cores}")
        if self.uncertainty_eV is not None and not (
            math.isfinite(self.uncertainty_eV) and self.uncertainty_eV >= 0
        ):
            raise CalculatorError(
                f"--uncertainty must be a finite number >= 0, got {self.uncertainty_eV}"
            )
        if self.uncertainty_eV is None:
            self.uncertainty_eV = FAST_PRESET_UNCERTAINTY_EV if fast else self.code.uncertainty_eV
        if not self.code.is_dft:
            if self.dft or fast:
                given = (
                    ", ".join(map(DftSettings.option, self.dft)) or f"--dft-preset {self.preset}"
                )
                raise CalculatorError(
                    f"calculator '{self.name}' takes no DFT settings (got {given})"
                )
            if self.command:
                raise CalculatorError(
                    f"calculator '{self.name}' runs in-process: it takes no command"
                )
            if self.workdir != type(self).__dataclass_fields__["workdir"].default:
                raise CalculatorError(
                    f"calculator '{self.name}' runs in-process: --workdir is where DFT "
                    "calculations run"
                )
        self.code.check_options(self)
        if self.resume_from is not None:
            if not self.code.resumes_from_frames:
                raise CalculatorError(
                    f"--resume-from continues GPAW relaxations; calculator '{self.name}' cannot"
                )
            self.resume_from = str(check_frames_file(Path(self.resume_from)))
        self._identify_model_file()
        if self.cores > 1 and not self.code.parallel:
            raise CalculatorError("--cores sets the MPI ranks of GPAW; other calculators take none")

    @property
    def code(self) -> Code:
        """The code this calculator runs (``workflows/codes/``)."""
        return CODES[self.name]

    def _identify_model_file(self) -> None:
        """A model file is identified by its content, not its path: overwrite the file and no
        result of the old model is reused. A calculator rebuilt from a flow (a queued job)
        refuses a file that changed since the flow was built."""
        path = self.code.model_file(self)
        if path is None:
            return
        digest = file_sha256(path)
        if self.model_sha256 is not None and self.model_sha256 != digest:
            raise CalculatorError(
                f"model file '{self.model}' changed since the flow was built "
                f"(SHA-256 {self.model_sha256[:12]}... then, {digest[:12]}... now)"
            )
        self.model_sha256 = digest

    @property
    def dft_settings(self) -> DftSettings | None:
        """The DFT settings in force (preset, then overrides), None for the other calculators."""
        if not self.code.is_dft:
            return None
        return DftSettings(**{**PRESETS[self.preset], **self.dft})

    @property
    def writes_files(self) -> bool:
        """Whether the code runs in a directory of its own (DFT codes)."""
        return self.code.is_dft

    @property
    def package(self) -> str:
        """The Python package behind the calculator."""
        return self.code.package

    def check_installed(self) -> None:
        """Fail early, with the install command, when the calculator's package is missing."""
        self.code.check_installed(self)

    def check_can_run(self) -> None:
        """Fail early when a code cannot run here: the VASP executable or POTCARs, GPAW's PAW
        setups or mpirun missing."""
        self.code.check_can_run(self)

    def check_elements(self, elements) -> None:
        """Refuse a system the calculator cannot treat: elements EMT is not made for, or that a
        SevenNet model was not trained on (read from its checkpoint, which must load)."""
        self.code.check_elements(self, set(elements))

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
            "carrierflow_version": version("carrierflow"),
            "fmax_eV_A": self.fmax,
            "uncertainty_eV": self.uncertainty_eV,
            "optimizer": self.optimizer,
        }
        if self.dft_settings is not None:
            described |= {
                "optimizer": self.code.optimizer,
                "preset": self.preset,
                "settings": self.dft_settings.model_dump(),
                "overrides": self.dft_settings.overrides(),
            }
        return described

    @property
    def model_identity(self) -> dict:
        """What identifies the calculator's model: ``name``, ``model`` and a model file's
        ``model_sha256`` (``Calculator(**model_identity)`` loads it again)."""
        identity = {"name": self.name, "model": self.model}
        if self.model_sha256:
            identity["model_sha256"] = self.model_sha256
        return identity

    @property
    def label(self) -> str:
        """A short label such as ``sevennet-7net-l3i5`` or ``gpaw-fast`` (:func:`label_of`)."""
        # the fields the label reads, not describe(): that looks up package versions (3 ms)
        return label_of(self.model_identity | {"preset": self.preset})

    def makers(self, task: str) -> list[Maker]:
        """The Makers of one flow role, run in order, each from the previous one's structure:
        ``bulk_relax`` (cell and ions), ``ion_relax`` (ions at a fixed cell) or ``static``."""
        if task not in TASKS:
            raise ValueError(f"unknown task '{task}' (tasks: {', '.join(TASKS)})")
        return self.code.makers(self, task)

    def relax_from_minimum(self, stand_in: Calculator) -> list[Maker]:
        """The ``ion_relax`` Makers of a start that is ``stand_in``'s own minimum: GPAW's
        BFGS then starts from the stand-in's Hessian there (:mod:`carrierflow.workflows.hessian`).
        """
        return self.code.relax_from_minimum(self, stand_in)

    def neb_makers(self, fmax: float, steps: int) -> list[Maker]:
        """The climbing-image NEB of a path's images: atomate2's ASE NEB Makers (FIRE) for the
        in-process calculators, its VASP NEB Maker (VTST) for VASP."""
        return self.code.neb_makers(self, fmax, steps)


def label_of(described: dict) -> str:
    """The short label of a described calculator (:meth:`Calculator.describe`, as results and
    stored calculations keep it): ``sevennet-7net-l3i5``, ``gpaw-fast``, ``gpaw`` for the
    study's settings, and a model file by its name and the start of its SHA-256
    (``sevennet-checkpoint_30-3f2a9c1e``: every fine-tuning writes a checkpoint of that name)."""
    name, model, digest = described["name"], described.get("model"), described.get("model_sha256")
    if digest:
        return f"{name}-{Path(model).stem}-{digest[:8]}"
    if model:
        return f"{name}-{model}"
    preset = described.get("preset") or "study"
    return name if preset == "study" else f"{name}-{preset}"


def by_content(described: dict) -> dict:
    """A described calculator (or its ``model_identity``) with a model file named by its
    content alone: without the path it was read from where its SHA-256 is there. The shipped
    ``7net-li-in`` sits in each checkout's or environment's own folder, and a user's checkpoint
    may be copied or moved; the same content is the same model."""
    if described.get("model_sha256"):
        return {k: v for k, v in described.items() if k != "model"}
    return described


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
