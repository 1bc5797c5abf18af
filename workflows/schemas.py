"""Small documents that jobs return; analysis reads only these."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pymatgen.core import Structure

from carrierflow.workflows.codes.sevennet import (
    FINE_TUNED_MODELS,
    SEVENNET_MODELS,
    fine_tune_preset,
)


class _CodeRecord(BaseModel):
    """Who computed a result: the job, and what a DFT code reports of its runs."""

    job_uuid: str | None = Field(None, description="the job that computed it (task id)")
    code: dict = Field(
        default_factory=dict,
        description="what a DFT code reports: version, inputs, task directories, state",
    )

    def provenance(self) -> dict:
        """The task id and, for DFT codes, each run's version, folder, k-points and state."""
        runs = [{k: v for k, v in run.items() if k != "incar"} for run in self.code.get("runs", [])]
        return {"job_uuid": self.job_uuid, **({"runs": runs} if runs else {})}


def _structure_numbers(structure: Structure) -> list:
    return [
        structure.lattice.matrix.tolist(),
        [site.species_string for site in structure],
        structure.frac_coords.tolist(),
    ]


def numbers_checksum(numbers: list) -> str:
    """SHA-256 of the numbers a rerun reuses (floats written exactly, as repr does)."""
    return hashlib.sha256(json.dumps(numbers, sort_keys=True).encode()).hexdigest()


class CalculationDoc(_CodeRecord):
    """One energy calculation (relaxation or single point)."""

    fingerprint: str = Field(description="hash of task, Maker settings and input structure")
    task: Literal["bulk_relax", "ion_relax", "static"]
    label: str
    calculator: dict
    energy_eV: float
    natoms: int
    formula: str
    structure: Structure = Field(description="final structure")
    steps: int
    converged: bool
    max_force_eV_A: float | None = None
    elapsed_s: float
    reused: bool = False
    checksum: str | None = Field(
        None,
        description="SHA-256 of the numbers a rerun reuses (see reused_numbers); None in stores "
        "written before it existed",
    )
    stopped: str | None = Field(
        None,
        description="why the relaxation stopped itself before converging (its atoms ran "
        "together); None for one that ran its course",
    )

    def reused_numbers(self) -> list:
        """What a rerun takes from this document: its energy, convergence and final structure
        (and why it stopped, where it stopped itself)."""
        return [
            self.fingerprint,
            self.energy_eV,
            self.steps,
            self.converged,
            self.max_force_eV_A,
            _structure_numbers(self.structure),
            *([self.stopped] if self.stopped else []),
        ]


class PathDoc(_CodeRecord):
    """One nudged-elastic-band calculation: the relaxed images and their energies."""

    fingerprint: str = Field(description="hash of the Maker settings and the initial images")
    task: Literal["neb"] = "neb"
    label: str
    calculator: dict
    energies_eV: list[float] = Field(description="every image, endpoints included")
    path_A: list[float] = Field(description="distance along the path of every image")
    images: list[Structure]
    converged: bool
    elapsed_s: float
    reused: bool = False
    checksum: str | None = Field(None, description="see CalculationDoc.checksum")

    def reused_numbers(self) -> list:
        """What a rerun takes from this document: the band's energies, path and images."""
        return [
            self.fingerprint,
            self.energies_eV,
            self.path_A,
            self.converged,
            [_structure_numbers(image) for image in self.images],
        ]


class CalculationFailure(BaseModel):
    """A calculation that did not finish: stored so that the run can say which and why."""

    failed: Literal[True] = True
    task: Literal["bulk_relax", "ion_relax", "static", "neb"]
    label: str
    calculator: dict
    error: str
    directory: str | None = None


def option(flag: str, description: str, **extra) -> dict:
    """The ``Field`` arguments of a setting that the command line exposes: its option and its
    help text live here once (``carrierflow.workflows.cli`` builds the option from them)."""
    return {"description": description, "json_schema_extra": {"option": flag, **extra}}


# numbers that reach a calculation: never NaN or infinite (``--fmax inf`` relaxed nothing and
# called it converged)
_FINITE = ConfigDict(allow_inf_nan=False)


class DefectSettings(BaseModel):
    """How defects are generated, placed, relaxed and checked."""

    model_config = _FINITE

    species: str
    # images closer than a bond length (~3 A) leave no isolated defect to speak of
    min_image_distance_A: float = Field(
        10.0,
        ge=3.0,
        **option("--min-image-distance", "minimum distance between periodic images of a defect, A"),
    )
    max_atoms: int = Field(250, gt=0, **option("--max-atoms", "supercell atom cap"))
    interstitial_min_distance_A: float = Field(
        1.5,
        gt=0,
        **option(
            "--interstitial-min-distance",
            "closest an interstitial candidate may sit to a host atom, A",
        ),
    )
    starts: int = Field(
        1,
        ge=1,
        le=24,
        **option(
            "--starts",
            "relaxation starts per defect candidate: the small rattle, then its neighbours "
            "pulled in and pushed out by 30 and 15 percent (less where atoms would meet closer "
            "than 60 percent of the cell's closest pair) and stronger rattles; the lowest "
            "final state counts",
        ),
    )
    screen_image_distance_A: float | None = Field(
        None,
        ge=3.0,
        **option(
            "--screen-image-distance",
            "relax every start in the smallest supercell whose images are this far apart (7-8), "
            "then the lowest states again in the --min-image-distance cell, A "
            "(default: every start in the final cell)",
        ),
    )
    keep: int = Field(
        2,
        ge=1,
        **option(
            "--keep",
            "with --screen-image-distance: lowest distinct states per kind relaxed in the final "
            "cell, with every one within the uncertainty of the lowest",
        ),
    )
    rattle_amplitude_A: float = Field(0.03, ge=0)
    rattle_radius_A: float = Field(4.0, ge=0)
    reconstruction_radius_A: float = Field(
        6.0,
        gt=0,
        **option(
            "--reconstruction-radius", "atoms beyond this distance from a defect are far field, A"
        ),
    )
    reconstruction_threshold_A: float = Field(
        0.5,
        gt=0,
        **option(
            "--reconstruction-threshold", "far-field move that signals a host reconstruction, A"
        ),
    )
    local_relaxation: bool = True
    relax_hosts: bool = Field(
        True,
        **option(
            "--no-host-relaxation",
            "keep each host's cell and positions as given (e.g. DFT-relaxed); the reference "
            "phase is always relaxed",
        ),
    )
    defect_kinds: list[Literal["vacancy", "interstitial"]] = Field(
        ["vacancy", "interstitial"], **option("--defects", "defect kinds to compute")
    )
    temperature_K: float = Field(
        300.0,
        gt=0,
        **option(
            "--temperature", "temperature of the site fractions and diffusion coefficients, K"
        ),
    )

    @model_validator(mode="after")
    def _screen_cell_not_larger(self) -> DefectSettings:
        screen = self.screen_image_distance_A
        if screen is not None and screen > self.min_image_distance_A:
            raise ValueError(
                f"--screen-image-distance ({screen:g}) must not exceed --min-image-distance "
                f"({self.min_image_distance_A:g})"
            )
        return self

    def identity(self) -> dict:
        """The settings that determine a run's numbers. The small-cell screen's settings count
        only when it is on, so that runs from before it keep their identity."""
        dumped = self.model_dump()
        if self.screen_image_distance_A is None:
            del dumped["screen_image_distance_A"], dumped["keep"]
        return dumped


class RefineSettings(BaseModel):
    """Which stand-in results are recomputed with DFT, and in which supercell."""

    model_config = _FINITE

    k: int = Field(
        1,
        ge=1,
        **option(
            "--refine-k",
            "with --refine: lowest vacancies and interstitials per phase to refine, of the screen "
            "and of the stand-in in the DFT cell",
        ),
    )
    min_image_distance_A: float = Field(
        8.0,
        ge=3.0,
        **option(
            "--dft-min-image-distance", "with --refine: image distance of the DFT supercells, A"
        ),
    )
    max_atoms: int = Field(
        64, gt=0, **option("--dft-max-atoms", "with --refine: DFT supercell atom cap")
    )


class MigrationSettings(BaseModel):
    """Which hops are computed, and how: climbing-image NEB between relaxed endpoints."""

    model_config = _FINITE

    images: int = Field(5, ge=1, **option("--images", "intermediate NEB images"))
    fmax_eV_A: float = Field(0.05, gt=0, **option("--neb-fmax", "NEB force convergence, eV/A"))
    max_steps: int = Field(300, ge=1, **option("--neb-steps", "NEB step limit"))
    shell_tolerance: float = Field(
        0.1, ge=0, description="hops reach sites up to (1 + this) x the nearest distance"
    )
    max_length_A: float | None = Field(
        None,
        gt=0,
        **option("--max-hop", "hop to every site this close, A (default: the nearest shell)"),
    )
    max_hops: int | None = Field(
        None,
        ge=1,
        **option("--max-hops", "the shortest symmetry-distinct hops per carrier (default: all)"),
    )
    attempt_frequency_Hz: float = Field(
        1e13, gt=0, **option("--attempt-frequency", "nu of D = z a^2 nu exp(-Ea/kT)/6, Hz")
    )


# the shipped SevenNet models that can be fine-tuned: sevenn's single-fidelity ones (a
# multi-fidelity model needs its modal), and carrierflow's own (fine-tuning it again continues
# from what it learnt of the DFT frames)
_SINGLE_FIDELITY = tuple(m for m, needs in SEVENNET_MODELS.items() if not needs)
BASE_MODELS = _SINGLE_FIDELITY + tuple(FINE_TUNED_MODELS)
BaseModelName = Literal[BASE_MODELS]


# The training options start from SevenNet's fine-tuning preset (its loss, optimizer and rate);
# three defaults are carrierflow's own recipe, measured on Li-In DFT frames (README, "The shipped
# Li-In model"). The preset's decay of 0.99 per epoch is made for 100 epochs: stopped at 30, its
# rate is still 74 % of the start, and on a --learn loop's 62 frames (from 7net-0) the defects it
# never trained on came out 0.206 eV off on average, all six alloy ones 0.11-0.35 eV low. 40 epochs
# at a decay of 0.9 (the last rate 1.6 % of the start) with the forces weighted 0.1 against the
# energy per atom (E_f is an energy; a DFT relaxation's frames hold many more force components than
# energies) put them 0.058 eV off (2026-12-04).
_PRESET_TRAIN = fine_tune_preset()["train"]


class FineTuneSettings(BaseModel):
    """What a fine-tuning run does; every field is recorded with the checkpoint."""

    base_model: BaseModelName = Field(
        "7net-l3i5", **option("--base-model", "the shipped SevenNet model to start from")
    )
    epochs: int = Field(40, ge=1, le=10000, **option("--epochs", "training epochs"))
    batch_size: int = Field(4, ge=1, le=1024, **option("--batch-size", "frames per batch"))
    force_weight: float = Field(
        0.1,
        gt=0,
        le=1000,
        allow_inf_nan=False,
        **option(
            "--force-weight",
            "weight of the forces against the energy per atom in the loss (SevenNet's "
            f"fine-tuning preset: {_PRESET_TRAIN['force_loss_weight']:g})",
        ),
    )
    learning_rate: float = Field(
        _PRESET_TRAIN["optim_param"]["lr"],
        gt=0,
        le=1,
        allow_inf_nan=False,
        **option("--learning-rate", "Adam's initial learning rate; default: SevenNet's preset's"),
    )
    lr_decay: float = Field(
        0.9,
        gt=0,
        le=1,
        allow_inf_nan=False,
        **option(
            "--lr-decay",
            "factor on the learning rate after every epoch (SevenNet's preset: "
            f"{_PRESET_TRAIN['scheduler_param']['gamma']:g}, made for {_PRESET_TRAIN['epoch']} "
            "epochs)",
        ),
    )
    reference_weight: float = Field(
        10.0,
        ge=1,
        le=1000,
        allow_inf_nan=False,
        **option(
            "--reference-weight",
            "weight of each perfect supercell's energy in the loss, against 1 for every other "
            "frame: it is the reference of every E_f of its host",
        ),
    )
    defect_weight: float = Field(
        1.0,
        ge=1,
        le=1000,
        allow_inf_nan=False,
        **option(
            "--defect-weight",
            "weight of the energy of each defect relaxation's last frame in the loss, against 1 "
            "for every other frame: the state that defect's E_f is read from",
        ),
    )
    seed: int = Field(1, ge=0, **option("--seed", "random seed of SevenNet's trainer"))
    device: str = Field(
        "cpu",
        pattern=r"^(cpu|cuda(:[0-9]+)?)$",
        **option("--device", "torch device of the trainer (cpu, cuda, cuda:N)"),
    )


class LearnSettings(BaseModel):
    """How the screen learns from DFT (``run --learn``); recorded with the results and part of
    a run's identity."""

    model_config = _FINITE

    rounds: int = Field(
        2, ge=1, le=5, **option("--learn-rounds", "with --learn: fine-tunings at most")
    )
    frames_per_calculation: int = Field(
        4,
        ge=2,
        le=1000,
        **option(
            "--learn-frames",
            "with --learn: DFT frames per calculation to train on, spread over its energies",
        ),
    )
    start_points: int = Field(
        2,
        ge=0,
        le=8,
        **option(
            "--learn-start-points",
            "with --learn: DFT single points at this many distorted starts of each refined "
            "defect (split interstitials, neighbours up to 30 %% in and out: the short pairs a "
            "search meets; 0: none)",
        ),
    )
    rattles: int = Field(
        2,
        ge=0,
        le=5,
        **option(
            "--learn-rattles",
            "with --learn: DFT single points of each phase's perfect DFT supercell with every "
            "atom rattled (ShakeNBreak's Monte Carlo rattle, sigma 0.1, 0.2, ... A; 0: none)",
        ),
    )
    fine_tune: FineTuneSettings = Field(
        default_factory=FineTuneSettings, description="SevenNet's trainer (base: the screen's)"
    )
