"""Learning from DFT: the stand-in fine-tuned on the DFT its refinement paid for, the screen run
again with it, and DFT for whatever the better screen now puts lowest.

Why: against GPAW in the same cells, 7net-l3i5 put Li interstitials in Li5In4 and Li3In2
0.17-0.60 eV too low (its vacancies within 0.03-0.14 eV), so its screen named the wrong carrier
in both hosts. Universal potentials soften away from equilibrium, and a few DFT points in
fine-tuning largely remove that (Deng et al., npj Comput. Mater. 11, 9 (2025)).

The loop (:class:`LearningFlowMaker`): screen with the base model, refine each phase's lowest
vacancy and interstitial with DFT, the screen's and the model's own in the DFT cell (the
``--refine`` flow: the same calculations, shared through the store), then in round r = 1, 2,
...: fine-tune the base model on every DFT frame of the system computed with this DFT
calculator so far (:mod:`carrierflow.workflows.finetune`; a rerun takes the frames the round
took the first time, :func:`pinned_frames`), screen every phase again with the fine-tuned
model and relax every candidate with it in the DFT cell, and where a phase's lowest vacancy or
interstitial of either is one that DFT has not refined, refine it (from the fine-tuned model's
state in the DFT cell) and go on, at
most ``rounds`` fine-tunings. The verdict comes from DFT; the fine-tuned screen stands beside it.
A rerun reuses every calculation and every fine-tuned model (a model is identified by its data,
settings and base checkpoint).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from ase import Atoms
from jobflow import CURRENT_JOB, Flow, JobConfig, Response, job
from pymatgen.core import Structure

from carrierflow.analysis.documents import Learned, LearnedDefect, Results, verdicts
from carrierflow.analysis.relaxation import mark_shared_final_states
from carrierflow.analysis.schemas import DefectOutcome, HostOutcome
from carrierflow.structures.defects import rattle_strongly
from carrierflow.workflows.calculators import Calculator
from carrierflow.workflows.codes.sevennet import SevenNet
from carrierflow.workflows.dataset import dft_frames
from carrierflow.workflows.engine import calculation
from carrierflow.workflows.finetune import (
    FineTuneError,
    FineTuneResult,
    fine_tuned_model,
    is_perfect_supercell,
)
from carrierflow.workflows.flows import CarrierFlowMaker, Phase, identity_hash
from carrierflow.workflows.jobs import starts_of, summarize_results
from carrierflow.workflows.refine import add_screen_verdicts, dft_plan, refinement_choice
from carrierflow.workflows.schemas import (
    BASE_MODELS,
    CalculationDoc,
    DefectSettings,
    LearnSettings,
    RefineSettings,
)

logger = logging.getLogger("carrierflow")


def spread(frames: list[Atoms], n: int) -> list[Atoms]:
    """At most ``n`` frames of one run: its first and last, and between them those nearest to
    evenly spaced energies. A relaxation's late steps are all alike (the last 0.05 eV/A of
    force changes nothing a model learns), its early ones are the strained geometries where a
    softened model errs; equal spacing in energy keeps both ends without paying for the tail."""
    if len(frames) <= n:
        return list(frames)
    energies = np.array([a.get_potential_energy() for a in frames])
    chosen = {0, len(frames) - 1}
    for target in np.linspace(energies[0], energies[-1], n)[1:-1]:
        order = np.argsort(np.abs(energies - target), kind="stable")
        chosen.add(next(int(i) for i in order if int(i) not in chosen))
    return [frames[i] for i in sorted(chosen)]


def runs_of(frames: list[Atoms]) -> dict[tuple[str, str], list[Atoms]]:
    """The frames of each calculation's run, by (fingerprint, run), in their order."""
    runs: dict[tuple[str, str], list[Atoms]] = {}
    for atoms in frames:
        runs.setdefault((atoms.info["fingerprint"], atoms.info["run"]), []).append(atoms)
    return runs


def learning_sets(frames: list[Atoms], per_calculation: int) -> tuple[list[Atoms], list[Atoms]]:
    """Training and validation frames: ``per_calculation`` frames of each run (:func:`spread`),
    whole calculations validate (every fifth in fingerprint order, so that consecutive steps of
    one relaxation never sit on both sides). A perfect supercell always trains: every E_f of its
    host is a difference against it."""
    runs = runs_of(frames)
    fingerprints = sorted({fp for fp, _ in runs})
    if len(fingerprints) < 2:
        raise FineTuneError(
            f"learning needs DFT frames of at least two calculations (got {len(fingerprints)})"
        )
    references = {fp for (fp, _), steps in runs.items() if is_perfect_supercell(steps[0])}
    validating = set([fp for fp in fingerprints if fp not in references][::5])
    train, valid = [], []
    for (fp, _), steps in runs.items():
        (valid if fp in validating else train).extend(spread(steps, per_calculation))
    return train, valid


def pinned_frames(frames: list[Atoms], record: Path) -> list[Atoms]:
    """The DFT frames of a learning round: those of the calculations it saw when it first ran
    (listed in ``record``), the same on every rerun; ``frames`` (all of the store's) when it
    runs for the first time, or when a calculation it saw is gone from the store (a warning).

    Why: a round learned from every DFT frame in the store, and a rerun builds the flow anew,
    so a resumed loop's round 1 learned from the later rounds' DFT too: another model, whose
    screen asked for DFT that the run had not made. The timed Li-In loop (--learn-rounds 2),
    resumed after round 2's DFT, trained 60 frames where its round 1 had trained 40 and began a
    third round of GPAW relaxations. Pinned, a rerun replays each round with the same frames,
    the same fine-tuned model (read back by its hash) and the same screen and DFT (reused)."""
    keys = sorted(runs_of(frames))
    if record.is_file():
        pinned = {tuple(key) for key in json.loads(record.read_text())}
        missing = pinned - set(keys)
        if not missing:
            return [a for a in frames if (a.info["fingerprint"], a.info["run"]) in pinned]
        logger.warning(
            "%s: %d of the %d DFT runs this learning round trained on are gone from the store "
            "(or their folders): it learns from the %d there are now",
            record.stem,
            len(missing),
            len(pinned),
            len(keys),
        )
    record.parent.mkdir(parents=True, exist_ok=True)
    partial = record.with_suffix(".partial")
    partial.write_text(json.dumps(keys, indent=0) + "\n")
    partial.replace(record)  # whole or not at all: an interrupted write pins nothing
    return frames


def model_record(result: FineTuneResult) -> dict:
    """What the results say of a fine-tuned model."""
    return {
        "checkpoint": result.checkpoint,
        "checkpoint_sha256": result.checkpoint_sha256,
        "base_model": result.base_model,
        "train_frames": result.train_frames,
        "valid_frames": result.valid_frames,
        "epoch": result.epoch,
        "valid_errors": result.errors["valid"],
        "valid_note": "validation frames are whole DFT calculations of this system left out of "
        "training (not a held-out host)",
        "element_offsets_eV": result.element_offsets_eV,
        "elapsed_s": result.elapsed_s,
    }


@dataclass
class LearningFlowMaker(CarrierFlowMaker):
    """The carrier flow whose screen learns from its DFT refinement (``run --learn``).

    Parameters
    ----------
    learn
        Rounds, frames per calculation and SevenNet's training settings; the base model is the
        screen's.
    """

    learn: LearnSettings = field(default_factory=LearnSettings)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.refine is None:
            raise ValueError("learning from DFT needs a DFT calculator (refine)")
        if self.migration is not None:
            raise ValueError("migration barriers of a learning run are not available yet")
        model = self.calculator.model
        if self.calculator.name != SevenNet.name or model not in BASE_MODELS:
            raise ValueError(
                f"--learn fine-tunes a shipped SevenNet model ({', '.join(BASE_MODELS)}); "
                f"--calculator {self.calculator.label} cannot be fine-tuned"
            )
        tune = self.learn.fine_tune.model_copy(update={"base_model": model})
        self.learn = self.learn.model_copy(update={"fine_tune": tune})

    @property
    def label(self) -> str:
        """``sevennet-7net-l3i5+learn-gpaw-fast``."""
        return f"{self.calculator.label}+learn-{self.refine.label}"

    def run_id(self, reference: Phase, hosts: list[Phase]) -> str:
        """The identity of the refined run, with the learning settings."""
        return identity_hash([super().run_id(reference, hosts), self.learn.model_dump()])

    def frames_id(self, reference: Phase, hosts: list[Phase]) -> str:
        """What names a learning round's pinned frames: the run's identity but for the settings
        that change how its results read, not what it computes (the temperature of the site
        fractions, the verdict's uncertainty). Named by the run, a rerun at another
        temperature found no pinned frames, trained round 1 on every frame in the store, and
        its new model's screen and Hessians sent the GPAW relaxations to be done again."""
        identity = self.identity(reference, hosts)
        identity["settings"].pop("temperature_K", None)
        for code in ("calculator", "refine"):
            identity[code].pop("uncertainty_eV", None)
        return identity_hash([identity, self.learn.model_dump()])

    def make(self, reference: Phase, hosts: list[Phase]) -> Flow:
        """Screen, refine, then learn (rounds run as the flow runs)."""
        jobs, reference_bulk, screened, summary = self._screen(reference, hosts)
        run_id = self.run_id(reference, hosts)
        phases = [reference, *hosts]
        refinement, outcomes, bulks, cells = self._refinement_jobs(
            phases, self.calculator, reference_bulk, screened
        )
        points = [
            dft_start_points(
                phase.label,
                bulk,
                screen,
                cell,
                self.refine,
                self.settings,
                self.refine_settings,
                self.learn.start_points,
                phase.structure,
                self.learn.rattles,
            )
            for phase, bulk, screen, cell in zip(phases, bulks, screened, cells, strict=True)
            if self.learn.start_points or self.learn.rattles
        ]
        first = learn_round(
            1,
            self,
            reference,
            hosts,
            outcomes,
            summary.output,
            [],
            run_id,
            [p.output for p in points],
        )
        return self._flow([*jobs, *refinement, *points, first], first, run_id)


@job
def dft_start_points(
    label: str,
    bulk: CalculationDoc,
    screen: HostOutcome,
    in_dft_cell: list[DefectOutcome],
    calculator: Calculator,
    settings: DefectSettings,
    refine: RefineSettings,
    count: int,
    given: Structure | None = None,
    rattles: int = 0,
) -> Response:
    """DFT single points at the first ``count`` distorted starts of each defect the refinement
    takes, in its DFT cell (the starts a ``--starts`` search would relax there after the small
    rattle: split interstitials, neighbours pulled in and pushed out by up to 30 %, see
    :func:`carrierflow.structures.defects.floored_distortion`), and at ``rattles`` copies of the
    perfect DFT supercell with every atom rattled (:func:`rattled_hosts`).

    Why: a DFT relaxation's frames run from the stand-in's minimum to DFT's and never come
    near another atom's core; the search's starts do (neighbours 30 % in sit at 70 % of a bond
    from the site, pushed out they meet their own neighbours at 60-73 %). With no frame closer
    than 2.11 A, the fine-tuned 7net-li-in had nothing that holds atoms apart: in the Li-In
    search benchmark three Li5In4 vacancy starts ran together (to 0.4 A, -3e5 eV and lower
    within 36 force calls)."""
    chosen = set(refinement_choice(screen.defects, in_dft_cell, refine.k))
    plan = dft_plan(label, bulk, screen, chosen, settings, refine, given)
    jobs = []
    for candidate, cell in zip(plan.selected, plan.cells, strict=True):
        tagged = starts_of(label, candidate, cell, settings, 1 + count, "/dft", host=plan.host)
        for tag, start in tagged[1:]:
            name = f"{label} {candidate.name} [DFT start: {tag}]"
            jobs.append(calculation(calculator, "static", start, name))
    logger.info(
        "%s: DFT single points at %d distorted starts of %s and %d rattled perfect supercells",
        label,
        len(jobs),
        ", ".join(sorted(chosen)),
        rattles,
    )
    for name, rattled in rattled_hosts(label, plan.perfect, rattles):
        jobs.append(calculation(calculator, "static", rattled, name))
    return Response(replace=Flow(jobs, output=[j.output.fingerprint for j in jobs]))


# The amplitudes of the rattled perfect supercells: Gaussian moves of sigma = 0.1, 0.2, ... A
# (mean moves 0.15 and 0.35 A in the Li-In cells, the larger as far as the atoms around a
# relaxed defect move), ShakeNBreak keeping atoms at least 80 % of a bond apart.
RATTLE_STEP_A = 0.1


def rattled_hosts(label: str, perfect: Structure, count: int) -> list[tuple[str, Structure]]:
    """``count`` copies of a phase's perfect DFT supercell, every atom rattled by ShakeNBreak's
    Monte Carlo rattle at sigma = 0.1, 0.2, ... A, each seeded by its label, with the labels.

    Why: every other frame of a phase is a defect or the perfect crystal at rest, so a model
    learns the perfect host's energy from one frame and nothing of how steeply it rises; the
    held-out error of an unseen host was one offset of its perfect supercell against its
    defect cells (the host too high, so every defect too low)."""
    centre = perfect.lattice.get_cartesian_coords([0.5, 0.5, 0.5])
    made = []
    for i in range(1, count + 1):
        name = f"{label} perfect supercell [DFT rattle: {RATTLE_STEP_A * i:.2f} A]"
        made.append((name, rattle_strongly(perfect, centre, math.inf, RATTLE_STEP_A * i, name)))
    return made


def _elements(phases: list[Phase]) -> set[str]:
    return {el.symbol for p in phases for el in p.structure.composition.elements}


@job(config=JobConfig(expose_store=True))
def learn_round(
    number: int,
    maker: LearningFlowMaker,
    reference: Phase,
    hosts: list[Phase],
    dft: list[HostOutcome],
    base_results: Results,
    history: list[dict],
    run_id: str,
    start_points: list | None = None,
) -> Response:
    """Round ``number``: fine-tune on every DFT frame of the system so far (on a rerun: those
    it took the first time), screen every phase
    with the fine-tuned model, and replace this job by that screen and the decision
    (``start_points``: the DFT single points of the first round's starts, which it waits for)."""
    phases = [reference, *hosts]
    if CURRENT_JOB.store is None:
        raise RuntimeError("learn_round reads the DFT frames from the store: run it with one")
    root = Path(maker.refine.workdir).absolute() / "fine-tuned"
    rounds = root / "rounds"
    record = rounds / f"{maker.frames_id(reference, hosts)}-{number}.json"
    named_by_run = rounds / f"{run_id}-{number}.json"  # how rounds pinned them until 2026-12-04
    if not record.is_file() and named_by_run.is_file():
        record.write_text(named_by_run.read_text())
    frames = pinned_frames(
        dft_frames(CURRENT_JOB.store, maker.refine.describe(), _elements(phases)), record
    )
    train, valid = learning_sets(frames, maker.learn.frames_per_calculation)
    logger.info(
        "learning round %d: %d DFT frames, %d to train on, %d to validate",
        number,
        len(frames),
        len(train),
        len(valid),
    )
    result = fine_tuned_model(train, valid, maker.learn.fine_tune, root)
    tuned = replace(maker.calculator, model=result.checkpoint, model_sha256=None)
    screen = CarrierFlowMaker(calculator=tuned, settings=maker.settings, system=maker.system)
    jobs, reference_bulk, screened, summary = screen._screen(reference, hosts)
    # the fine-tuned model's own ranking in the DFT cells, which the decision reads too
    cells_made, bulks, cells = maker._dft_cells(phases, tuned, reference_bulk, screened)
    decide = learn_decide(
        number,
        maker,
        tuned,
        reference,
        hosts,
        screened,
        reference_bulk,
        summary.output,
        model_record(result),
        dft,
        base_results,
        history,
        run_id,
        bulks,
        cells,
    )
    flow = Flow([*jobs, *cells_made, decide], output=decide.output, name=f"round {number}")
    return Response(replace=flow)


def not_refined(
    screened: list[HostOutcome],
    in_dft_cells: list[list[DefectOutcome]],
    dft: list[HostOutcome],
    k: int,
) -> list[list[str]]:
    """Per phase, what :func:`refinement_choice` takes of a screen and of its model's ranking
    in the DFT cell that DFT has not refined yet."""
    return [
        [
            name
            for name in refinement_choice(s.defects, cell, k)
            if name not in {d.name for d in r.defects}
        ]
        for s, cell, r in zip(screened, in_dft_cells, dft, strict=True)
    ]


@job
def learn_decide(
    number: int,
    maker: LearningFlowMaker,
    tuned: Calculator,
    reference: Phase,
    hosts: list[Phase],
    screened: list[HostOutcome],
    screen_reference_bulk: CalculationDoc,
    screen_results: Results,
    model: dict,
    dft: list[HostOutcome],
    base_results: Results,
    history: list[dict],
    run_id: str,
    bulks: list[CalculationDoc],
    in_dft_cells: list[list[DefectOutcome]],
) -> Response:
    """After the fine-tuned screen of round ``number`` and its ranking in the DFT cells
    (``bulks``, ``in_dft_cells``): refine with DFT what it now puts lowest and learn again, or
    write the results."""
    new = not_refined(screened, in_dft_cells, dft, maker.refine_settings.k)
    record = {
        "round": number,
        "model": model,
        "verdicts": {k: v.model_dump() for k, v in verdicts(screen_results).items()},
        "to_refine": {o.label: names for o, names in zip(screened, new, strict=True) if names},
    }
    if any(new) and number < maker.learn.rounds:
        logger.info(
            "learning round %d: the fine-tuned screen puts lowest what DFT has not refined: %s",
            number,
            "; ".join(f"{label} {', '.join(n)}" for label, n in record["to_refine"].items()),
        )
        jobs, outcomes, _, _ = maker._refinement_jobs(
            [reference, *hosts],
            tuned,
            screen_reference_bulk,
            screened,
            names=new,
            prepared=(bulks, in_dft_cells),
            dft_before=dft,
        )
        merged = merge_refined(dft, outcomes)
        following = learn_round(
            number + 1,
            maker,
            reference,
            hosts,
            merged.output,
            base_results,
            [*history, record],
            run_id,
        )
        flow = Flow([*jobs, merged, following], output=following.output, name="more DFT")
        return Response(replace=flow)
    if any(new):
        record["note"] = (
            "the last fine-tuned screen puts lowest a defect DFT has not refined; "
            "more --learn-rounds would refine it"
        )
    summary = summarize_results(
        maker.system, maker.refine.describe(), maker.settings, dft[0], dft[1:]
    )
    final = maker._tagged(
        learned_results(
            summary.output,
            base_results,
            screen_results,
            [*history, record],
            maker.refine_settings,
            maker.learn,
        ),
        maker.label,
        run_id,
    )
    return Response(replace=Flow([summary, final], output=final.output, name="learned results"))


@job
def merge_refined(previous: list[HostOutcome], new: list[HostOutcome | None]) -> list[HostOutcome]:
    """Every phase's DFT defects of all rounds together (one perfect cell and one mu: the
    DFT bulk and perfect supercell of a later round are the stored ones)."""
    merged = []
    for old, extra in zip(previous, new, strict=True):
        if extra is None:
            merged.append(old)
            continue
        if abs(old.perfect_energy_eV - extra.perfect_energy_eV) > 1e-6:
            raise ValueError(f"{old.label}: the DFT perfect supercell changed between rounds")
        host = old.model_copy(deep=True)
        host.defects = [*old.defects, *extra.defects]
        mark_shared_final_states(host.defects)
        merged.append(host)
    return merged


@job
def learned_results(
    results: Results,
    base_results: Results,
    screen_results: Results,
    history: list[dict],
    refine: RefineSettings,
    learn: LearnSettings,
) -> Results:
    """The results of a learning run: the DFT verdicts, the base screen's (``refined_from``),
    and what learning did (``learned``): each round's model and verdicts, and every DFT defect
    beside the last fine-tuned screen's E_f."""
    results = add_screen_verdicts.original(results, base_results, refine)
    defects = []
    for phase, screened in zip(
        [results.reference, *results.hosts],
        [screen_results.reference, *screen_results.hosts],
        strict=True,
    ):
        by_name = {d.name: d for d in screened.defects}
        for defect in phase.defects:
            tuned = by_name.get(defect.name)
            defects.append(
                LearnedDefect(
                    phase=phase.formula,
                    name=defect.name,
                    kind=defect.kind,
                    dft_eV=defect.formation_energy_eV,
                    dft_supercell_atoms=phase.supercell.natoms,
                    fine_tuned_eV=tuned.formation_energy_eV if tuned else None,
                    fine_tuned_supercell_atoms=screened.supercell.natoms,
                    difference_eV=(
                        tuned.formation_energy_eV - defect.formation_energy_eV if tuned else None
                    ),
                )
            )
    results.learned = Learned(
        settings=learn.model_dump(),
        rounds=history,
        model=history[-1]["model"],
        calculator=screen_results.calculator,
        verdicts=verdicts(screen_results),
        defects=defects,
        # Why the lattices are named: measured on Li-In with 7net-li-in, whose hosts are 1.3
        # and 1.9 % smaller in volume than GPAW's fast preset's, the lowest interstitials in
        # DFT's supercells were 0.08 and 0.13 eV higher on the model's lattice than on GPAW's
        # (the vacancies within 0.02): most of the 0.1 eV by which they stood above DFT, each
        # on its own host (on a common lattice, model and DFT were within 0.03 eV).
        note="difference = the fine-tuned screen in its supercell, on the host it relaxed, "
        "minus DFT in the DFT supercell, on DFT's host: the model's error, the finite-size "
        "effect and the two lattices' difference together (an interstitial's E_f can move by "
        "0.1 eV between lattices 1-3 % apart in volume), in-sample (the model trained on these "
        "DFT calculations)",
    )
    return results
