"""The ``carrierflow`` command: a thin layer over workflows/ and analysis/."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import os
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Literal, get_args, get_origin

from pydantic import BaseModel, ValidationError

from carrierflow.structures.presets import SYSTEMS, preset_model
from carrierflow.structures.sources import StructureError
from carrierflow.workflows.calculators import (
    ASE_OPTIMIZERS,
    DFT_CALCULATORS,
    FAST_PRESET_UNCERTAINTY_EV,
    FMAX_EV_A,
    Calculator,
    CalculatorError,
)
from carrierflow.workflows.cluster import ClusterError
from carrierflow.workflows.codes import CODES, DEFAULT_CODE, Code
from carrierflow.workflows.codes.dft import DftCode
from carrierflow.workflows.dataset import DatasetError, read_frames_file
from carrierflow.workflows.dft import PRESETS, DftSettings
from carrierflow.workflows.finetune import FineTuneError
from carrierflow.workflows.schemas import DefectSettings, FineTuneSettings, LearnSettings
from carrierflow.workflows.store import StoreError, check_writable_directory

logger = logging.getLogger("carrierflow")

EXPECTED_ERRORS = (
    StructureError,
    CalculatorError,
    StoreError,
    ClusterError,
    DatasetError,
    FineTuneError,
)


# the Calculator's own defaults, shown and used by its options
_CALCULATOR_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Calculator)}


class UsageError(ValueError):
    """A command line that cannot be run."""


def _add_selection(parser: argparse.ArgumentParser, runs: bool = True) -> None:
    """What to study, with which calculator and DFT settings; with ``runs`` False (write-inputs)
    none of the options that only matter when the calculations run here (--refine, --learn,
    --cores, --workdir, --store, ...): given there, argparse names them unknown."""
    group = parser.add_argument_group("what to study")
    group.add_argument("--system", help=f"a preset: {', '.join(SYSTEMS)}")
    group.add_argument("--species", help="the mobile species (e.g. Li)")
    group.add_argument("--hosts", nargs="+", help="formulas, mp-ids or structure files")
    group.add_argument("--reference", help="the pure phase of the species (formula, mp-id or file)")
    calc = parser.add_argument_group("calculator")
    calc.add_argument(
        "--calculator",
        default=DEFAULT_CODE,
        help=f"one of {', '.join(CODES)} ({DEFAULT_CODE})",
    )
    calc.add_argument(
        "--model",
        help="SevenNet model (7net-l3i5 default; a --system preset may name its own, Li-In: "
        "7net-li-in, fine-tuned on carrierflow's GPAW frames; 7net-0, 7net-mf-0) or a model "
        "file (required for mace)",
    )
    calc.add_argument(
        "--fmax",
        type=float,
        help="force convergence of every relaxation, the screen's and DFT's, eV/A ("
        + ", ".join(f"{preset} {fmax:g}" for preset, fmax in FMAX_EV_A.items())
        + " with --dft-preset)",
    )
    calc.add_argument(
        "--optimizer",
        default=_CALCULATOR_DEFAULTS["optimizer"],
        help=f"ASE optimizer of the ionic relaxations: {', '.join(ASE_OPTIMIZERS)} "
        f"({_CALCULATOR_DEFAULTS['optimizer']})",
    )
    if runs:
        calc.add_argument(
            "--refine",
            choices=sorted(DFT_CALCULATORS),
            help="recompute the lowest defects of every phase with this DFT code; the verdict "
            "then comes from DFT",
        )
        calc.add_argument(
            "--learn",
            choices=sorted(DFT_CALCULATORS),
            help="refine with this DFT code, fine-tune the SevenNet stand-in on every DFT frame, "
            "screen again with it and refine what it then puts lowest (--learn-rounds times); "
            "the verdict comes from DFT",
        )
        calc.add_argument(
            "--uncertainty",
            type=float,
            help="energy uncertainty for the verdict, eV (stand-ins "
            f"{Code.uncertainty_eV:g}, DFT {DftCode.uncertainty_eV:g}, DFT with --dft-preset fast "
            f"{FAST_PRESET_UNCERTAINTY_EV:g})",
        )
    dft = parser.add_argument_group("DFT settings (vasp, gpaw; defaults are the study's)")
    dft.add_argument(
        "--dft-preset",
        choices=list(PRESETS),
        default=_CALCULATOR_DEFAULTS["preset"],
        help="study: the study's settings; fast: coarser cut-off, k-points and forces (each "
        "option's help gives both)",
    )
    _add_dft_settings(dft)
    if not runs:
        _add_flags(parser)
        return
    dft.add_argument(
        "--vasp-cmd", help="the VASP command (default: $CARRIERFLOW_VASP_CMD or atomate2's)"
    )
    dft.add_argument(
        "--cores",
        type=int,
        default=_CALCULATOR_DEFAULTS["cores"],
        help=f"MPI ranks of each GPAW calculation ({_CALCULATOR_DEFAULTS['cores']})",
    )
    dft.add_argument(
        "--workdir",
        default=_CALCULATOR_DEFAULTS["workdir"],
        help=f"where DFT calculations run, one folder each (./{_CALCULATOR_DEFAULTS['workdir']})",
    )
    dft.add_argument(
        "--resume-from",
        metavar="FRAMES.extxyz",
        help="DFT frames of an earlier run (carrierflow dataset's, e.g. fixtures/dft/): each GPAW "
        "calculation that starts where a recorded one did goes on from its last frame",
    )
    parser.add_argument(
        "--output", help="output directory (default: carrierflow-results/<system>-<calculator>)"
    )
    _add_store(parser)


def _add_store(parser: argparse.ArgumentParser) -> None:
    """The store, and the options every command has."""
    parser.add_argument(
        "--store",
        help="store directory or JobStore file "
        "(default: $CARRIERFLOW_STORE or ./carrierflow-store)",
    )
    _add_flags(parser)


def _add_flags(parser: argparse.ArgumentParser) -> None:
    """The options every command has."""
    parser.add_argument(
        "--config",
        type=Path,
        help="a YAML file of this command's options (fmax: 0.02, min-image-distance: 8, "
        "hosts: [Li5In4]); the command line wins",
    )
    parser.add_argument("--verbose", action="store_true", help="show library warnings and logs")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def _add_settings(group, model: type[BaseModel], exclude: tuple[str, ...] = ()) -> None:
    """One option per setting of ``model`` that names one (``schemas.option``), but those in
    ``exclude``: its flag, help, default and choices come from the model's ``Field``, so they
    exist once."""
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra or {}
        if "option" not in extra or name in exclude:
            continue
        default = info.get_default(call_default_factory=True)
        flag, shown = extra["option"], f"{default:g}" if isinstance(default, float) else default
        if info.annotation is bool:
            group.add_argument(flag, action="store_false" if default else "store_true")
            group._group_actions[-1].help = info.description
            continue
        kinds = get_args(info.annotation)
        kwargs: dict = {"default": default}
        if get_origin(info.annotation) is list:
            kwargs |= {"nargs": "+", "choices": get_args(kinds[0])}
            shown = " ".join(default)
        elif get_origin(info.annotation) is Literal:
            kwargs["choices"] = kinds
        else:
            kwargs["type"] = next((k for k in kinds if k is not type(None)), info.annotation)
        # a setting without a default says in its description what none means
        shown = "" if default is None else f" ({shown})"
        group.add_argument(flag, help=f"{info.description}{shown}", **kwargs)


def _dest(flag: str) -> str:
    """The argparse attribute of an option: ``--min-image-distance`` -> ``min_image_distance``."""
    return flag.lstrip("-").replace("-", "_")


def _dft_options() -> dict[str, str]:
    """The numeric DftSettings that have an option: setting name -> flag (the others, given as
    assignments, have a metavar)."""
    return {
        name: info.json_schema_extra["option"]
        for name, info in DftSettings.model_fields.items()
        if "option" in (info.json_schema_extra or {}) and "metavar" not in info.json_schema_extra
    }


def _add_dft_settings(group) -> None:
    """The DFT options from DftSettings: no default of their own (a setting given overrides
    the --dft-preset's), their help shows each preset's value."""
    for name, flag in _dft_options().items():
        info = DftSettings.model_fields[name]
        values = ", ".join(
            f"{preset} {PRESETS[preset].get(name, info.default):g}" for preset in PRESETS
        )
        group.add_argument(flag, type=float, help=f"{info.description} ({values})")
    for info in DftSettings.model_fields.values():  # given as EL=SYMBOL or TAG=VALUE
        extra = info.json_schema_extra or {}
        if "metavar" in extra:
            group.add_argument(
                extra["option"], nargs="+", metavar=extra["metavar"], help=info.description
            )


def _settings(model: type[BaseModel], args: argparse.Namespace, **given):
    """The settings of ``model`` from the command line (a setting the command has no option
    for keeps its default); an invalid one is a one-line error that names its option
    (``--fmax: input should be a finite number``)."""
    values = dict(given)
    for name, info in model.model_fields.items():
        flag = (info.json_schema_extra or {}).get("option")
        dest = _dest(flag) if flag else None
        if dest is not None and name not in given and hasattr(args, dest):
            values[name] = getattr(args, dest)
    try:
        return model(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        if not first["loc"]:  # a check of several settings names its options itself
            raise UsageError(first["msg"].removeprefix("Value error, ")) from exc
        info = model.model_fields.get(str(first["loc"][0]))
        flag = (info.json_schema_extra or {}).get("option") if info else None
        raise UsageError(f"{flag or first['loc'][0]}: {first['msg'].lower()}") from exc


def _add_cell_options(parser: argparse.ArgumentParser) -> None:
    from carrierflow.workflows.schemas import DefectSettings, MigrationSettings, RefineSettings

    _add_settings(parser.add_argument_group("defects and supercells"), DefectSettings)
    _add_settings(parser.add_argument_group("DFT refinement (--refine)"), RefineSettings)
    learning = parser.add_argument_group("learning from DFT (--learn)")
    _add_settings(learning, LearnSettings)
    _add_settings(learning, FineTuneSettings, exclude=("base_model",))
    hops = parser.add_argument_group("migration barriers and diffusion (--migration)")
    hops.add_argument(
        "--migration",
        action="store_true",
        help="climbing-image NEB of the nearest-neighbour hops of each phase's lowest vacancy "
        "and interstitial, activation energies and diffusion coefficients",
    )
    _add_settings(hops, MigrationSettings)


def _add_project(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--project",
        help="jobflow-remote project: its queue and JobStore (default for submit: "
        "jobflow-remote's default project)",
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("carrierflow")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


# defect settings that change no input folder of write-inputs
_RUN_ONLY_DEFECT_OPTIONS = {
    "--starts",
    "--screen-image-distance",
    "--keep",
    "--reconstruction-radius",
    "--reconstruction-threshold",
    "--temperature",
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``carrierflow``."""
    parser = argparse.ArgumentParser(
        prog="carrierflow",
        description="Which point defect carries the mobile species: vacancies or interstitials?",
    )
    parser.add_argument("--version", action="version", version=f"carrierflow {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="compute formation energies and the dominant carrier")
    _add_selection(run)
    _add_cell_options(run)
    submit = sub.add_parser(
        "submit",
        help="submit the flow of `run` to a cluster through jobflow-remote",
        description="Build the flow of `carrierflow run` with the same options and add it to a "
        "jobflow-remote project's queue; the project's runner submits each job to SLURM.",
    )
    _add_selection(submit)
    _add_cell_options(submit)
    _add_project(submit)
    submit.add_argument("--worker", help="the project's worker (default: its first)")
    report = sub.add_parser(
        "report",
        aliases=["results"],
        help="re-render stored results without recomputing (results: also from a cluster)",
    )
    _add_selection(report)
    _add_cell_options(report)
    _add_project(report)
    report.add_argument(
        "--flow-id", help="with --project: the submitted flow to read (default: the newest)"
    )
    inputs = sub.add_parser(
        "write-inputs",
        help="write every calculation's input folder (VASP) for running by hand",
        description="Write the input folder of every calculation of the flow, named after the "
        "job. Supercells and defect cells are built from the structures as given: pass relaxed "
        "structures with --hosts/--reference to build them on your relaxed bulk.",
    )
    inputs.add_argument("directory", help="where to write the folders")
    _add_selection(inputs, runs=False)
    # the folders hold each defect's first start in the final cell; the starts, the screen's
    # cells and what the results make of the energies are a run's
    _add_settings(
        inputs.add_argument_group("defects and supercells"),
        DefectSettings,
        exclude=tuple(
            name
            for name, info in DefectSettings.model_fields.items()
            if (info.json_schema_extra or {}).get("option") in _RUN_ONLY_DEFECT_OPTIONS
        ),
    )
    # what the shared readers of a command line ask of the options write-inputs has not
    inputs.set_defaults(
        refine=None,
        learn=None,
        uncertainty=None,
        vasp_cmd=None,
        cores=_CALCULATOR_DEFAULTS["cores"],
        workdir=_CALCULATOR_DEFAULTS["workdir"],
        resume_from=None,
    )
    runs = sub.add_parser("runs", help="list the finished runs in a store")
    _add_store(runs)
    dataset = sub.add_parser(
        "dataset",
        help="export every ionic step of the store's DFT calculations as extended XYZ",
        description="Write every ionic step of every DFT calculation in the store (energy, "
        "forces, stress where the cell relaxed, and where it came from) as extended XYZ, with a "
        "JSON card beside it; SevenNet's trainer and ase.io.read read it.",
    )
    dataset.add_argument("path", type=Path, help="the .extxyz file to write")
    dataset.add_argument(
        "--unfinished",
        type=Path,
        metavar="WORKDIR",
        help="also the ionic steps of the GPAW calculations in WORKDIR (a run's --workdir) that "
        "have not finished, so that another machine continues them (--resume-from)",
    )
    _add_store(dataset)
    finetune = _data_command(
        sub,
        "finetune",
        help="fine-tune a SevenNet model on DFT frames with SevenNet's own trainer",
        description="Fine-tune a shipped SevenNet model on the frames of a data set with "
        "SevenNet's own trainer and fine-tuning preset, validating on the frames of held-out "
        "phases (never trained on); without --hold-out it trains on every frame (a model to "
        "ship: the last epoch, in-sample errors only). Writes the checkpoint and finetune.json "
        "(hashes, settings, errors before and after on the held-out frames and defects).",
    )
    finetune.add_argument(
        "--hold-out",
        nargs="+",
        default=[],
        metavar="PHASE",
        help="phases whose frames validate and are never trained on (e.g. Li3In2); none: "
        "train on every frame",
    )
    finetune.add_argument(
        "--cross-validate",
        nargs="+",
        default=[],
        metavar="PHASE",
        help="train on every frame (the model to use), and once without each PHASE, validated "
        "on it: how well the settings carry to a host the model never saw; and once without "
        "its defects only, its perfect crystal trained: to defects the model never saw",
    )
    finetune.add_argument(
        "--orderings",
        nargs=2,
        type=Path,
        metavar=("GROUND", "OTHER"),
        help="with --cross-validate: two structure files of one composition; each model's "
        "energy of OTHER above GROUND (cell and ions relaxed), beside the base model's",
    )
    finetune.add_argument("--output", type=Path, required=True, help="the training folder")
    _add_settings(finetune, FineTuneSettings)
    _add_flags(finetune)
    validate = _data_command(
        sub,
        "validate",
        help="SevenNet models against DFT frames, the frames each trained on counted apart",
        description="Single points of each model on every frame of a data set: force errors, "
        "energy errors along each DFT calculation (from its last frame) and each DFT defect's "
        "E_f at its DFT geometry; frames a model trained on are counted as seen and its E_f "
        "marked in-sample. Writes validation.json, validation.md and validation.png.",
    )
    validate.add_argument(
        "--model",
        nargs="+",
        required=True,
        help="SevenNet models: shipped names (7net-0, 7net-l3i5, 7net-li-in, ...) or checkpoint "
        "files (a fine-tuning's train.extxyz beside it says what it saw)",
    )
    validate.add_argument(
        "--output",
        type=Path,
        help="the folder of the results (default: carrierflow-results/validation-<data>-<hash "
        "of the models named>, so that a validation of other models never overwrites it)",
    )
    _add_flags(validate)
    # the command parsers by name, for --config
    parser.set_defaults(commands=dict(sub.choices))
    return parser


def _data_command(sub, name: str, **texts: str) -> argparse.ArgumentParser:
    """A command that reads a data set of DFT frames (its first argument)."""
    command = sub.add_parser(name, **texts)
    command.add_argument("data", type=Path, help="an .extxyz data set (carrierflow dataset)")
    return command


def _apply_config(parser: argparse.ArgumentParser, args, argv) -> argparse.Namespace:
    """The command line with the options of its ``--config`` file as defaults: one name per
    option (without the dashes), checked like the option itself; the command line wins."""
    import yaml

    path = args.config
    if not path.is_file():
        raise UsageError(f"--config: file '{path}' not found")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UsageError(f"--config {path}: not YAML ({' '.join(str(exc).split())[:120]})") from exc
    if not isinstance(values, dict):
        raise UsageError(f"--config {path}: give options as 'name: value' lines")
    command = args.commands[args.command]
    actions = {
        flag.lstrip("-"): action
        for action in command._actions
        for flag in action.option_strings
        if flag.startswith("--") and flag not in ("--config", "--help")
    }
    unknown = [str(k) for k in values if str(k).lstrip("-") not in actions]
    if unknown:
        raise UsageError(
            f"--config {path}: `carrierflow {args.command}` has no option "
            f"{', '.join('--' + k.lstrip('-') for k in unknown)}"
        )
    defaults = {}
    for key, value in values.items():
        action = actions[str(key).lstrip("-")]
        defaults[action.dest] = _config_value(action, value, f"--config {path}")
    command.set_defaults(**defaults)
    return parser.parse_args(argv)


def _config_value(action: argparse.Action, value, where: str):
    """A --config value checked and converted as the command line would be (argparse checks
    neither the type nor the choices of a default): an on/off option takes true or false; an
    option of several values gets a list (a single value too: `hosts: Cu3Au` is one host, not
    five letters); every value converted by the option's type and among its choices."""
    flag = action.option_strings[0]
    if action.nargs == 0:  # store_true
        if not isinstance(value, bool):
            raise UsageError(f"{where}: {flag} is on or off: give true or false, got {value!r}")
        return value
    several = action.nargs in ("+", "*") or isinstance(action.nargs, int)
    if isinstance(value, dict) or (isinstance(value, list) and not several):
        raise UsageError(f"{where}: {flag} takes one value, got {value!r}")
    items = value if isinstance(value, list) else [value]
    if isinstance(action.nargs, int) and len(items) != action.nargs:
        raise UsageError(f"{where}: {flag} takes {action.nargs} values, got {len(items)}")
    converted = []
    for item in items:
        if isinstance(item, list | dict) or item is None:
            raise UsageError(f"{where}: {flag}: {item!r} is not a value")
        try:
            item = action.type(str(item)) if action.type is not None else str(item)
        except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
            raise UsageError(f"{where}: {flag}: {exc}") from exc
        if action.choices is not None and item not in action.choices:
            choices = ", ".join(map(str, action.choices))
            raise UsageError(f"{where}: {flag}: '{item}' is not one of {choices}")
        converted.append(item)
    return converted if several else converted[0]


def _selection(args: argparse.Namespace) -> tuple[str, str, str, list[str]]:
    preset = None
    if args.system:
        if args.system not in SYSTEMS:
            raise UsageError(f"unknown system '{args.system}' (presets: {', '.join(SYSTEMS)})")
        preset = SYSTEMS[args.system]
    species = args.species or (preset.species if preset else None)
    hosts = args.hosts or (preset.hosts if preset else None)
    if not species or not hosts:
        raise UsageError("give --system, or --species and --hosts")
    reference = args.reference or (preset.reference if preset else species)
    system = args.system or f"{species} in {'+'.join(Path(h).stem for h in hosts)}"
    return system, species, reference, hosts


def _calculators(args: argparse.Namespace):
    """The calculator, and the DFT calculator that refines it (None without --refine). DFT
    settings, preset, cores and the verdict's uncertainty go to the DFT one when refining."""
    from carrierflow.workflows.calculators import Calculator

    given = {name: getattr(args, _dest(flag)) for name, flag in _dft_options().items()}
    given |= {
        "potcars": _assignments(args.potcar, DftSettings.option("potcars")),
        "incar": _incar_tags(args.incar),
    }
    dft = {name: value for name, value in given.items() if value is not None}
    code = {
        "dft": dft,
        "preset": args.dft_preset,
        "command": args.vasp_cmd,
        "cores": args.cores,
        "workdir": args.workdir,
        "uncertainty_eV": args.uncertainty,
        "resume_from": args.resume_from,
    }
    dft_code = getattr(args, "learn", None) or getattr(args, "refine", None) or args.calculator
    if args.vasp_cmd and dft_code == "gpaw":
        # GPAW's "command" is the Python that runs its worker: a VASP command there was tried
        # as one, failed, and another Python was used without a word
        raise UsageError(
            "--vasp-cmd is VASP's command; GPAW runs under the first Python that imports it "
            "($CARRIERFLOW_GPAW_PYTHON, this one, the system's)"
        )
    model = preset_model(args.system, args.calculator, args.model)
    if model is not None and args.model is None:
        logger.info(
            "%s preset: screening with %s (%s); --model 7net-l3i5 screens with the base model",
            args.system,
            model,
            SYSTEMS[args.system].model_note,
        )
    screen_options = {"model": model, "fmax": args.fmax, "optimizer": args.optimizer}
    refine = getattr(args, "refine", None)
    learn = getattr(args, "learn", None)
    if learn is not None:
        if refine is not None and refine != learn:
            raise UsageError(f"--learn {learn} refines with {learn}: drop --refine {refine}")
        refine = learn
    if refine is None:
        return Calculator(args.calculator, **screen_options, **code), None
    screen = Calculator(args.calculator, **screen_options)
    if screen.name in DFT_CALCULATORS:
        raise UsageError(
            f"--{'learn' if learn else 'refine'} {refine} refines a stand-in screen; "
            f"'{screen.name}' is DFT already"
        )
    # --fmax is every relaxation's: the screen's and DFT's (it reached the screen only)
    return screen, Calculator(refine, fmax=args.fmax, **code)


def _assignments(items: list[str] | None, option: str) -> dict[str, str] | None:
    if not items:
        return None
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise UsageError(f"{option} takes KEY=VALUE pairs, got '{item}'")
        pairs[key.strip()] = value.strip()
    return pairs


def _incar_tags(items: list[str] | None) -> dict | None:
    from pymatgen.io.vasp import Incar

    tags = _assignments(items, DftSettings.option("incar"))
    if tags is None:
        return None
    return {key.upper(): Incar.proc_val(key.upper(), value) for key, value in tags.items()}


def _output_dir(args: argparse.Namespace, system: str, label: str, run_id: str) -> Path:
    """``--output``, or a folder named by the run (``carrierflow-results/<system>-<calculator>-
    <run id>``) so that runs with other settings never overwrite each other."""
    if args.output:
        return Path(args.output)
    return Path("carrierflow-results") / f"{_readable(system, label)}-{run_id[:8]}"


def _readable(system: str, label: str) -> str:
    return f"{system.replace(' ', '_')}-{label}"


def _link_alias(output: Path, system: str, label: str) -> None:
    """``carrierflow-results/<system>-<calculator>``: a link to the newest run's folder (not made
    where a folder of that name exists, or with ``--output``)."""
    alias = output.parent / _readable(system, label)
    if alias.is_symlink():
        alias.unlink()
    if not alias.exists():
        alias.symlink_to(output.name)


def _load_phases(species: str, reference: str, hosts: list[str], calculator, args):
    from pymatgen.core import Element

    from carrierflow.structures.defects import check_species
    from carrierflow.structures.sources import check_bulk, load_structure
    from carrierflow.structures.supercells import choose_supercell
    from carrierflow.workflows.flows import Phase
    from carrierflow.workflows.refine import DFT_CELL_OPTIONS

    try:
        Element(species)
    except ValueError as exc:
        raise UsageError(f"species '{species}' is not an element") from exc
    phases, specs = [], [reference, *hosts]
    for spec in specs:
        structure, source = load_structure(spec)
        # before any symmetry analysis: a 6912-atom file held get_primitive_structure for minutes
        if len(structure) > args.max_atoms:
            raise UsageError(
                f"{spec} has {len(structure)} atoms, more than --max-atoms {args.max_atoms}: "
                "give its primitive or conventional cell"
            )
        check_bulk(structure, spec)
        structure = structure.get_primitive_structure()
        label = structure.composition.reduced_formula
        check_species(structure, species)
        # fail now, not after the bulk relaxation, when no supercell fits under the cap; the
        # DFT cell's too, not after hours of screening (on the structure as given: the DFT
        # relaxation changes its lattice by a few per cent at most)
        choose_supercell(structure, args.min_image_distance, args.max_atoms)
        if getattr(args, "refine", None) or getattr(args, "learn", None):
            cap, distance = args.dft_max_atoms, args.dft_min_image_distance
            choose_supercell(structure, distance, cap, DFT_CELL_OPTIONS)
        phases.append(Phase(label=label, structure=structure, source=source))
    calculator.check_elements(
        {el.symbol for phase in phases for el in phase.structure.composition.elements}
    )
    if {el.symbol for el in phases[0].structure.composition.elements} != {species}:
        raise UsageError(
            f"reference '{reference}' is {phases[0].label}, not the pure {species} phase"
        )
    # a phase is named by its formula (its jobs, results, DFT frames, --hold-out): two of one
    # formula, the same file twice or two orderings, would share every name
    labels = [phase.label for phase in phases]
    for index, (spec, label) in enumerate(zip(specs, labels, strict=True)):
        if label in labels[:index]:
            first = labels.index(label)
            role = "the reference " if first == 0 else ""
            raise UsageError(
                f"--hosts {spec}: {label} twice (as {role}'{specs[first]}'); "
                "one phase per formula in a run"
            )
    return phases[0], phases[1:]


def _defect_settings(args: argparse.Namespace, species: str):
    from carrierflow.workflows.schemas import DefectSettings

    return _settings(DefectSettings, args, species=species)


def _flags_given(args: argparse.Namespace, model: type[BaseModel], exclude=()) -> list[str]:
    """The options of a settings model that the command line set to something else than their
    default."""
    given = []
    for name, info in model.model_fields.items():
        flag = (info.json_schema_extra or {}).get("option")
        if flag is None or name in exclude:
            continue
        value = getattr(args, _dest(flag), None)
        if value != info.get_default(call_default_factory=True):
            given.append(flag)
    return given


def _warn_unused(args: argparse.Namespace) -> None:
    """One warning line per group of options given without the option they belong to (they
    would change nothing): the same rule for every group."""
    from carrierflow.workflows.schemas import DefectSettings, MigrationSettings, RefineSettings

    learn, refine = getattr(args, "learn", None), getattr(args, "refine", None)
    groups = [
        (_flags_given(args, RefineSettings), refine or learn, "--refine or --learn"),
        (_flags_given(args, MigrationSettings), args.migration, "--migration"),
        (
            _flags_given(args, LearnSettings)
            + _flags_given(args, FineTuneSettings, ("base_model",)),
            learn,
            "--learn",
        ),
        (
            ["--keep"] if args.keep != DefectSettings.model_fields["keep"].default else [],
            args.screen_image_distance is not None,
            "--screen-image-distance",
        ),
    ]
    for flags, switched_on, switch in groups:
        if flags and not switched_on:
            verb = "applies" if len(flags) == 1 else "apply"
            logger.warning("%s %s only with %s: ignored", ", ".join(flags), verb, switch)


def _flow_maker(args: argparse.Namespace, check_runnable: bool = True):
    """What to study and the CarrierFlowMaker of a command line; with ``check_runnable`` the
    calculators must run here (not so when the flow is submitted to a cluster)."""
    from carrierflow.workflows.finetune import check_device
    from carrierflow.workflows.flows import CarrierFlowMaker
    from carrierflow.workflows.learn import LearningFlowMaker
    from carrierflow.workflows.schemas import MigrationSettings, RefineSettings

    system, species, reference_spec, host_specs = _selection(args)
    # every group of options is checked, used or not: a bad value is an error even where the
    # switch it belongs to is off (--defect-weight inf without --learn), never only "ignored"
    refine_settings = _settings(RefineSettings, args)
    migration_settings = _settings(MigrationSettings, args)
    learn_settings = _settings(LearnSettings, args, fine_tune=_settings(FineTuneSettings, args))
    _warn_unused(args)
    calculator, refine = _calculators(args)
    migration = migration_settings if args.migration else None
    if migration is not None and refine is not None:
        used = "--learn" if getattr(args, "learn", None) else "--refine"
        raise UsageError(f"--migration with {used} is not available yet")
    if check_runnable:
        for code in filter(None, [calculator, refine]):
            code.check_installed()
            code.check_can_run()
    common = {
        "calculator": calculator,
        "settings": _defect_settings(args, species),
        "system": system,
        "refine": refine,
        "refine_settings": refine_settings,
        "migration": migration,
    }
    if getattr(args, "learn", None) is None:
        return system, species, reference_spec, host_specs, CarrierFlowMaker(**common)
    # the base model is the screen's: the maker sets it, and refuses one it cannot fine-tune
    try:
        maker = LearningFlowMaker(**common, learn=learn_settings)
        if check_runnable:
            check_device(learn_settings.fine_tune.device)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return system, species, reference_spec, host_specs, maker


def command_run(args: argparse.Namespace) -> int:
    """carrierflow run."""
    from jobflow import run_locally

    from carrierflow.analysis.documents import as_document
    from carrierflow.analysis.results import find_results
    from carrierflow.workflows import claims
    from carrierflow.workflows.schemas import CalculationDoc
    from carrierflow.workflows.store import flow_result, open_store, store_location

    system, species, reference_spec, host_specs, maker = _flow_maker(args)
    reference, hosts = _load_phases(species, reference_spec, host_specs, maker.calculator, args)
    run_id = maker.run_id(reference, hosts)
    output = _output_dir(args, system, maker.label, run_id)
    check_writable_directory(output, "the output directory")
    store = open_store(args.store)
    finished = find_results(store, system, maker.label, None, run_id)
    if finished is not None:
        # the same run finished before: serve it, and write nothing to the store
        logger.info(
            "%s with %s: this run (%s) is finished in the store %s; nothing to compute",
            system,
            maker.label,
            run_id[:8],
            store_location(args.store),
        )
        return _write_results(finished, output, args, system, maker.label)
    flow = maker.make(reference, hosts)
    logger.info(
        "%s: %s with %s; store %s",
        system,
        ", ".join(h.label for h in hosts),
        maker.label,
        store_location(args.store),
    )
    try:
        responses = run_locally(
            flow, store=store, create_folders=False, log=args.verbose, raise_immediately=True
        )
    except KeyboardInterrupt:
        logger.error(
            "interrupted: finished calculations are kept in the store %s; "
            "rerun the same command to resume",
            store_location(args.store),
        )
        return 130
    finally:
        claims.release(store.docs_store)
    failures = _failures(responses)
    if failures or flow.output.uuid not in responses:
        finished = sum(
            isinstance(r.output, CalculationDoc) for job in responses.values() for r in job.values()
        )
        print(
            f"carrierflow: error: {len(failures)} calculation(s) failed; {finished} finished ones "
            f"are stored in {store_location(args.store)} and a rerun reuses them:",
            file=sys.stderr,
        )
        for failure in failures:
            where = f" [{failure.directory}]" if failure.directory else ""
            print(f"  {failure.label} ({failure.task}): {failure.error}{where}", file=sys.stderr)
        return 1
    results = flow_result(responses, flow, store)
    return _write_results(
        {**as_document(results), "run_id": run_id}, output, args, system, maker.label
    )


def _write_results(
    results: dict, output: Path, args, system: str, label: str, link: bool = True
) -> int:
    """results.json, the table and the plot of a finished run, and its verdicts printed; the
    readable alias points at it when ``link`` and no --output was given."""
    from carrierflow.analysis.report import markdown_table, write_report

    paths = write_report(results, output)
    if link and not args.output:
        _link_alias(output, system, label)
    print(markdown_table(results).split("\n\n| phase | defect")[0])
    print(f"\nwritten: {', '.join(str(p) for p in paths.values())}")
    return 0


def _failures(responses: dict) -> list:
    from carrierflow.workflows.schemas import CalculationFailure

    return [
        r.output
        for job in responses.values()
        for r in job.values()
        if isinstance(r.output, CalculationFailure)
    ]


def _interrupt(signum, frame):
    """Treat SIGTERM (a scheduler's time limit, a kill) like Ctrl-C."""
    raise KeyboardInterrupt


def command_submit(args: argparse.Namespace) -> int:
    """carrierflow submit: the flow of ``run``, to a jobflow-remote project's queue."""
    from carrierflow.workflows.cluster import load_project, submit

    if getattr(args, "learn", None):
        # a learning round reads every DFT frame of the system from the run's store and the
        # calculation folders under --workdir, and writes its model there; a job on a cluster
        # node runs with a file store of its own (jobflow-remote moves outputs, not stores), so
        # the round would fail there after all of round 0's DFT
        raise UsageError(
            "--learn runs with `carrierflow run` only: its learning rounds read the DFT frames "
            "from the run's store and --workdir, which jobs submitted through jobflow-remote do "
            "not share; run the loop in one allocation (slurm/carrierflow-run.sbatch)"
        )
    project = load_project(args.project)
    system, species, reference_spec, host_specs, maker = _flow_maker(args, check_runnable=False)
    reference, hosts = _load_phases(species, reference_spec, host_specs, maker.calculator, args)
    flow = maker.make(reference, hosts)
    db_ids = submit(flow, project, args.worker)
    print(
        f"submitted {system} with {maker.label} to project '{project.name}': flow {flow.uuid}, "
        f"{len(db_ids)} jobs to start with (more are added as the flow runs)"
    )
    print(f"follow it with `jf flow list` and `jf job list -fid {flow.uuid}`; read it with")
    print(f"  carrierflow results --project {project.name} --flow-id {flow.uuid} <same options>")
    return 0


def command_report(args: argparse.Namespace) -> int:
    """carrierflow report: re-render stored results."""
    from carrierflow.analysis.report import (
        partial_table,
        strict_json,
    )
    from carrierflow.analysis.results import LEGACY, find_results, partial_results
    from carrierflow.workflows.cluster import load_project, project_store, queue_jobs
    from carrierflow.workflows.store import open_store, store_location

    system, species, reference_spec, host_specs, maker = _flow_maker(args, check_runnable=False)
    # the store first: a missing one is an error before any structure is loaded
    project = load_project(args.project) if args.project is not None else None
    if project is not None:
        store, where = project_store(project), f"project '{project.name}'"
    else:
        store, where = open_store(args.store, create=False), store_location(args.store)
    reference, hosts = _load_phases(species, reference_spec, host_specs, maker.calculator, args)
    run_id, label = maker.run_id(reference, hosts), maker.label
    results = find_results(store, system, label, args.flow_id, run_id)
    partial = None
    if results is None:
        jobs = queue_jobs(project, system, label, args.flow_id, run_id) if project else None
        partial = partial_results(store, system, label, args.flow_id, jobs, run_id)
    output = _output_dir(args, system, label, run_id)
    if partial:
        check_writable_directory(output, "the output directory")
        table = partial_table(partial)
        (output / "results.partial.json").write_text(strict_json(partial))
        (output / "results.partial.md").write_text(table)
        print(table)
        print(f"written: {output / 'results.partial.json'}, {output / 'results.partial.md'}")
        return 0
    if results is None:
        results = find_results(store, system, label, args.flow_id, LEGACY)
        if results is None:
            raise UsageError(
                f"no stored results for {system} with {label} and these options (run "
                f"{run_id[:8]}) in {where}; 'carrierflow runs' lists the runs it holds"
            )
        logger.warning(
            "%s with %s: results stored before runs had an identity; they may come from other "
            "options than these",
            system,
            label,
        )
    check_writable_directory(output, "the output directory")
    return _write_results(results, output, args, system, label, link=False)


def command_runs(args: argparse.Namespace) -> int:
    """carrierflow runs: the finished runs in a store."""
    from carrierflow.analysis.results import list_runs
    from carrierflow.workflows.store import open_store, store_location

    runs = list_runs(open_store(args.store, create=False))
    if not runs:
        print(f"no finished runs in {store_location(args.store)}")
        return 0
    print("| finished | system | calculator | run | min image distance (A) | fmax (eV/A) |")
    print("|---|---|---|---|---|---|")
    for run in runs:
        print(
            f"| {run['completed_at'] or '-'} | {run['system']} | {run['calculator']} | "
            f"{(run['run_id'] or 'before run ids')[:8]} | "
            f"{run['settings'].get('min_image_distance_A', '-')} | {run['fmax_eV_A']} |"
        )
    return 0


def command_write_inputs(args: argparse.Namespace) -> int:
    """carrierflow write-inputs: every calculation's input folder."""
    from carrierflow.workflows.inputs import write_inputs

    _, species, reference_spec, host_specs = _selection(args)
    calculator, _ = _calculators(args)
    if calculator.name != "vasp":
        raise UsageError(
            f"write-inputs writes VASP input folders; '{calculator.name}' needs none "
            "(use --calculator vasp)"
        )
    calculator.check_installed()
    settings = _defect_settings(args, species)
    reference, hosts = _load_phases(species, reference_spec, host_specs, calculator, args)
    directory = Path(args.directory)
    check_writable_directory(directory, "the input directory")
    written = write_inputs(calculator, settings, reference, hosts, directory)
    for entry in written:
        mesh = "x".join(map(str, entry["kpoints"]))
        print(f"{entry['folder']:<32} {entry['task']:<10} {entry['natoms']:>4} atoms  k {mesh}")
    potcar = written[0]["potcar"] if written else "POTCAR"
    note = "" if potcar == "POTCAR" else " (POTCAR.spec: set PMG_VASP_PSP_DIR to write POTCARs)"
    print(f"\n{len(written)} input folders in {directory}{note}; index: calculations.json")
    return 0


def _configure_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[carrierflow %(asctime)s] %(message)s", "%H:%M:%S"))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if not verbose:
        warnings.filterwarnings("ignore")
        logging.getLogger("jobflow").setLevel(logging.ERROR)
        # spglib's C library writes its own warnings to stderr ("get_bravais_exact_positions_
        # and_lattice failed." amid a Li-In screen, where a relaxed interstitial cell has no
        # symmetry to find, and the caller goes on without it); it reads this at every warning
        os.environ.setdefault("SPGLIB_WARNING", "OFF")


def command_dataset(args: argparse.Namespace) -> int:
    """carrierflow dataset: the store's DFT frames as extended XYZ, with a card."""
    from carrierflow.workflows.dataset import (
        CALCULATION_FILE,
        check_overwrite,
        dft_frames,
        unfinished_frames,
        write_dataset,
    )
    from carrierflow.workflows.store import open_store

    if args.path.suffix != ".extxyz":
        raise UsageError(f"dataset: the file must end in .extxyz, got '{args.path.name}'")
    if args.path.is_dir():
        raise UsageError(f"dataset: '{args.path}' is a folder, not a file")
    if args.unfinished is not None and not args.unfinished.is_dir():
        raise UsageError(f"--unfinished: no such folder '{args.unfinished}'")
    if args.unfinished is not None and not any(args.unfinished.glob(f"*/{CALCULATION_FILE}")):
        raise UsageError(
            f"--unfinished: no calculation folder in '{args.unfinished}' (give the run's --workdir)"
        )
    store = open_store(args.store, create=False)
    frames = dft_frames(store)
    if args.unfinished is not None:
        stored = store.query({"output.fingerprint": {"$exists": True}}, ["output.fingerprint"])
        finished = {d["output"]["fingerprint"] for d in stored}
        frames += unfinished_frames(args.unfinished, finished)
    check_overwrite(args.path, frames)
    card = write_dataset(frames, args.path, made_by=f"carrierflow dataset {args.path.name}")
    print(
        f"{card['frames']} frames ({card['atoms']} atoms, {card['with_stress']} with stress) "
        f"from {len(card['frames_per_calculation'])} calculations: {args.path}"
    )
    return 0


def command_finetune(args: argparse.Namespace) -> int:
    """carrierflow finetune: SevenNet's trainer on DFT frames, validated on held-out phases."""
    from carrierflow.workflows.calculators import file_sha256
    from carrierflow.workflows.finetune import (
        check_device,
        fine_tuned_model,
        split_by_phase,
    )

    settings = _settings(FineTuneSettings, args)
    check_device(settings.device)
    frames = read_frames_file(args.data, "finetune")
    if args.cross_validate:
        return _cross_validate(args, frames, settings)
    if args.orderings:
        raise UsageError("--orderings compares the models of --cross-validate: give it too")
    if args.hold_out:
        _check_phases("--hold-out", args.hold_out, frames, args.data)
    train, valid = split_by_phase(frames, args.hold_out)
    check_writable_directory(args.output, "--output")
    # in DIR/<hash of its frames, settings and base checkpoint>: a rerun reads it back
    result = fine_tuned_model(train, valid, settings, args.output, file_sha256(args.data))
    if not valid:
        errors = result.errors["train"]
        print(
            f"{result.checkpoint} (SHA-256 {result.checkpoint_sha256[:12]}...): trained on all "
            f"{result.train_frames} frames, in-sample energy RMSE "
            f"{errors['energy_rmse_eV_atom']:.4f} eV/atom, force RMSE "
            f"{errors['force_rmse_eV_A']:.3f} eV/A (no frame held out: validate with "
            f"--hold-out); use it with --model {result.checkpoint}"
        )
        return 0
    print(
        f"{result.checkpoint} (SHA-256 {result.checkpoint_sha256[:12]}...); use it with --model "
        f"{result.checkpoint}"
    )
    _print_held_out(result, f"held-out {', '.join(args.hold_out)}")
    return 0


def _check_once(option: str, names: list[str]) -> None:
    """An option of several names names each once."""
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise UsageError(f"{option} names {', '.join(twice)} twice")


def _check_phases(option: str, names: list[str], frames: list, data: Path) -> None:
    """The phases an option holds out: each among the frames, and not all of them."""
    from carrierflow.workflows.finetune import phase_of

    _check_once(option, names)  # --cross-validate: the same fold trained twice
    phases = sorted({phase_of(atoms) for atoms in frames})
    unknown = [name for name in names if name not in phases]
    if unknown or set(names) >= set(phases):
        raise UsageError(
            f"{option} {' '.join(names)}: "
            f"{'no frame of ' + ', '.join(unknown) if unknown else 'every phase'} in "
            f"{data} (phases: {', '.join(phases)}); hold out some phases, not all"
        )


def command_validate(args: argparse.Namespace) -> int:
    """carrierflow validate: models against DFT frames (workflows/validation.py)."""

    from carrierflow.analysis.report import strict_json
    from carrierflow.workflows.calculators import file_sha256, sevennet_elements
    from carrierflow.workflows.validation import markdown, plot, validate

    _check_once("--model", args.model)  # twice in the table, once in the JSON
    frames = read_frames_file(args.data, "validate")
    models = hashlib.sha256("\n".join(args.model).encode()).hexdigest()[:8]
    output = args.output or Path("carrierflow-results") / f"validation-{args.data.stem}-{models}"
    check_writable_directory(output, "the output directory")
    elements = {s for atoms in frames for s in atoms.get_chemical_symbols()}
    for model in args.model:
        missing = elements - sevennet_elements(model)  # loads it: a bad file fails here
        if missing:
            raise UsageError(f"--model {model} was not trained on {', '.join(sorted(missing))}")
    result = validate(frames, args.model)
    result["data"] = {"file": str(args.data), "sha256": file_sha256(args.data)}
    output.mkdir(parents=True, exist_ok=True)
    (output / "validation.json").write_text(strict_json(result))
    table = markdown(result, args.data.name)
    (output / "validation.md").write_text(table)
    figure = output / "validation.png"
    figure.unlink(missing_ok=True)  # an earlier validation's, of other models or data
    written = ["validation.json", "validation.md"]
    if plot(result, figure):
        written.append("validation.png")
    print(table, end="")
    print(f"written to {output}/ ({', '.join(written)})")
    return 0


def _print_held_out(result, label: str) -> None:
    """The held-out errors of a fine-tuning, base against fine-tuned, and every held-out
    defect's E_f at its DFT geometry."""
    base, tuned = result.held_out["base"], result.held_out["fine_tuned"]
    print(
        f"  {label}: energy RMSE {base['energy_rmse_eV_atom']:.4f} -> "
        f"{tuned['energy_rmse_eV_atom']:.4f} eV/atom, force RMSE {base['force_rmse_eV_A']:.3f} "
        f"-> {tuned['force_rmse_eV_A']:.3f} eV/A"
    )
    for row in result.held_out_defects:
        print(
            f"    {row['phase']} {row['name']} ({row['kind']}): E_f DFT {row['dft_eV']:.3f} eV, "
            f"base {row['base_eV']:.3f}, fine-tuned {row['fine_tuned_eV']:.3f} "
            "(at the DFT geometry)"
        )


def _cross_validate(args: argparse.Namespace, frames: list, settings: FineTuneSettings) -> int:
    """carrierflow finetune --cross-validate: the model of every frame, and per phase a
    host-held-out and a defects-held-out fine-tuning; cross-validation.json and a table of the
    held-out errors."""
    from carrierflow.structures.sources import StructureError, read_structure_file
    from carrierflow.workflows.calculators import file_sha256
    from carrierflow.workflows.finetune import (
        check_orderings,
        cross_validated,
        ordering_energies,
    )

    if args.hold_out:
        raise UsageError("--hold-out and --cross-validate: give one of them")
    _check_phases("--cross-validate", args.cross_validate, frames, args.data)
    orderings = []
    for path in args.orderings or []:
        try:
            orderings.append((path.stem, read_structure_file(path)))
        except (StructureError, OSError) as exc:
            raise UsageError(f"--orderings: {exc}") from exc
    if orderings:
        try:
            check_orderings(orderings[0][1], orderings[1][1])
        except FineTuneError as exc:
            raise UsageError(f"--orderings: {exc}") from exc
    check_writable_directory(args.output, "--output")
    result = cross_validated(frames, args.cross_validate, settings, args.output)
    result.model.dataset_sha256 = file_sha256(args.data)
    if orderings:
        result.orderings = ordering_energies(result, *orderings)
    (args.output / "cross-validation.json").write_text(result.model_dump_json(indent=2) + "\n")
    model = result.model
    print(
        f"{model.checkpoint} (SHA-256 {model.checkpoint_sha256[:12]}...): trained on all "
        f"{model.train_frames} frames; use it with --model {model.checkpoint}"
    )
    for phase, held in result.cross_validation.items():
        _print_held_out(held, f"without {phase}, on {phase}")
    for phase, held in result.defects_held_out.items():
        _print_held_out(held, f"without the defects of {phase} (its crystal trained), on them")
    for row in result.orderings:
        energies = ", ".join(
            f"{k.removesuffix('_meV_atom')} "
            + (f"{v:+.1f}" if v is not None else "relaxed into one structure")
            for k, v in row.items()
            if k.endswith("_atom")
        )
        print(f"  {row['other']} above {row['ground']} (meV/atom): {energies}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``carrierflow`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config is not None:
        try:
            args = _apply_config(parser, args, argv)
        except UsageError as exc:
            print(f"carrierflow: error: {exc}", file=sys.stderr)
            return 2
    _configure_logging(args.verbose)
    commands = {
        "run": command_run,
        "submit": command_submit,
        "report": command_report,
        "results": command_report,
        "write-inputs": command_write_inputs,
        "runs": command_runs,
        "dataset": command_dataset,
        "finetune": command_finetune,
        "validate": command_validate,
    }
    # a kill or a scheduler's time limit interrupts as Ctrl-C does: finished work is kept and
    # child processes (GPAW, SevenNet's trainer) are ended, not left running
    in_main_thread = threading.current_thread() is threading.main_thread()
    sigterm = signal.signal(signal.SIGTERM, _interrupt) if in_main_thread else None
    try:
        return commands[args.command](args)
    except (*EXPECTED_ERRORS, UsageError) as exc:
        if args.debug:
            raise
        print(f"carrierflow: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Ctrl-C or a kill outside a run's calculations (loading structures or models, a
        # fine-tuning, a validation): no traceback; a fine-tuning's finished trainings are kept
        if args.debug:
            raise
        print("carrierflow: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(
            f"carrierflow: error: {type(exc).__name__}: {exc} (rerun with --debug for the "
            "traceback; finished calculations are kept in the store)",
            file=sys.stderr,
        )
        return 1
    finally:
        if in_main_thread:  # None: a handler set outside Python, the default as far as we know
            signal.signal(signal.SIGTERM, signal.SIG_DFL if sigterm is None else sigterm)


if __name__ == "__main__":
    sys.exit(main())
