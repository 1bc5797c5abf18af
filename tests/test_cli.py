"""Bad input ends in one clear line and exit code 2; nothing finished is lost."""

import argparse
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import cu_au
from pymatgen.core import Lattice, Structure

from carrierflow.structures.sources import load_fixture, load_structure
from carrierflow.workflows.cli import build_parser, main


def _error(capsys, *args) -> str:
    capsys.readouterr()
    code = main(list(args))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("carrierflow: error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def paths(tmp_path):
    return ["--store", str(tmp_path / "store"), "--output", str(tmp_path / "out")]


PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--species", "Li", "--hosts", "NaCl", "--reference", "Li"], "no fixture for 'NaCl'"),
        (["--species", "Li", "--hosts", "mp-1234", "--reference", "Li"], "no MP_API_KEY is set"),
        (
            ["--species", "Li", "--hosts", "Cu3Au", "--reference", "Li"],
            "species Li is not in host Cu3Au",
        ),
        (
            ["--species", "Cu", "--hosts", "Cu3Au", "--reference", "Cu3Au", "--calculator", "emt"],
            "reference 'Cu3Au' is Cu3Au, not the pure Cu phase",
        ),
        (["--system", "Li-In", "--calculator", "emt"], "EMT cannot treat In, Li"),
        (["--system", "Li-In", "--model", "7net-foo"], "unknown SevenNet model '7net-foo'"),
        (["--system", "Li-In", "--calculator", "mace"], "calculator 'mace' needs a model file"),
        (
            ["--system", "Li-In", "--calculator", "mace", "--model", "missing.model"],
            "MACE model file 'missing.model' does not exist",
        ),
        (
            ["--system", "Li-In", "--calculator", "gpaw", "--dft-preset", "fast", "--cores", "0"],
            "--cores must be at least 1, got 0",
        ),
        (
            ["--system", "Li-In", "--calculator", "chgnet", "--refine", "gpaw", "--refine-k", "0"],
            "--refine-k: input should be greater than or equal to 1",
        ),
        (
            ["--system", "Li-In", "--calculator", "gpaw", "--refine", "gpaw"],
            "--refine gpaw refines a stand-in screen; 'gpaw' is DFT already",
        ),
        (
            ["--system", "Cu-Au", "--calculator", "emt", "--encut", "400"],
            "calculator 'emt' takes no DFT settings (got --encut)",
        ),
        (
            ["--system", "Cu-Au", "--calculator", "emt", "--vasp-cmd", "vasp_std"],
            "calculator 'emt' runs in-process: it takes no command",
        ),
        (
            ["--system", "Cu-Au", "--calculator", "emt", "--workdir", "w"],
            "calculator 'emt' runs in-process: --workdir is where DFT calculations run",
        ),
        (["--system", "Li-In", "--calculator", "lammps"], "unknown calculator 'lammps'"),
        (
            ["--system", "Li-In", "--refine", "gpaw", "--vasp-cmd", "vasp_std"],
            "--vasp-cmd is VASP's command; GPAW runs under the first Python that imports it",
        ),
        # the DFT cell is checked before the screen runs, by its own options
        (
            ["--system", "Li-In", "--refine", "gpaw", "--dft-min-image-distance", "15"],
            "Li: no supercell of at most 64 atoms reaches a minimum image distance of 15 A "
            "(raise --dft-max-atoms or lower --dft-min-image-distance)",
        ),
        # a phase is named by its formula: two of one would share their jobs and results
        (
            ["--species", "Cu", "--hosts", "Cu3Au", "Cu3Au", "--calculator", "emt"],
            "--hosts Cu3Au: Cu3Au twice (as 'Cu3Au'); one phase per formula in a run",
        ),
        (
            ["--species", "Cu", "--hosts", "Cu", "--calculator", "emt"],
            "--hosts Cu: Cu twice (as the reference 'Cu')",
        ),
        # a DFT code relaxes with its own optimizer: an ASE one asked for would be ignored
        (
            ["--system", "Li-In", "--calculator", "gpaw", "--optimizer", "FIRE"],
            "calculator 'gpaw' relaxes with ASE BFGS (maxstep 0.05 A; ",
        ),
        (["--system", "Cu-Au", "--calculator", "emt", "--model", "x"], "takes no --model"),
        (
            ["--system", "Cu-Au", "--calculator", "emt", "--max-atoms", "20"],
            "no supercell of at most 20 atoms reaches a minimum image distance of 10 A",
        ),
        (
            ["--system", "Cu-Au", "--calculator", "emt", "--temperature", "-5"],
            "--temperature: input should be greater than 0",
        ),
        # non-finite numbers never reach a calculation (--fmax inf relaxed nothing and called
        # it converged, nan ran every relaxation to its step limit)
        (
            ["--system", "Cu-Au", "--calculator", "emt", "--fmax", "inf"],
            "--fmax must be a finite number > 0, got inf",
        ),
        (
            ["--system", "Cu-Au", "--calculator", "emt", "--fmax", "nan"],
            "--fmax must be a finite number > 0, got nan",
        ),
        (
            ["--system", "Cu-Au", "--calculator", "emt", "--uncertainty", "-0.1"],
            "--uncertainty must be a finite number >= 0, got -0.1",
        ),
        (
            ["--system", "Cu-Au", "--calculator", "emt", "--uncertainty", "inf"],
            "--uncertainty must be a finite number >= 0, got inf",
        ),
        (
            ["--system", "Cu-Au", "--calculator", "emt", "--uncertainty", "nan"],
            "--uncertainty must be a finite number >= 0, got nan",
        ),
        (
            ["--system", "Cu-Au", "--calculator", "emt", "--min-image-distance", "inf"],
            "--min-image-distance: input should be a finite number",
        ),
        (
            ["--system", "Cu-Au", "--calculator", "emt", "--min-image-distance", "0.1"],
            "--min-image-distance: input should be greater than or equal to 3",
        ),
        (
            ["--system", "Cu-Au", "--calculator", "emt", "--migration", "--max-hop", "nan"],
            "--max-hop: input should be a finite number",
        ),
        # a bad value is an error even where its switch is off, not only "ignored" with a warning
        (
            ["--system", "Cu-Au", "--calculator", "emt", "--defect-weight", "inf"],
            "--defect-weight: input should be a finite number",
        ),
        (
            ["--system", "Cu-Au", "--calculator", "emt", "--max-hop", "nan"],
            "--max-hop: input should be a finite number",
        ),
        (
            ["--system", "Cu-Au", "--calculator", "emt", "--starts", "0"],
            "--starts: input should be greater than or equal to 1",
        ),
        (
            ["--system", "Cu-Au", "--calculator", "emt", "--keep", "0"],
            "--keep: input should be greater than or equal to 1",
        ),
        (
            ["--system", "Cu-Au", "--calculator", "emt", "--screen-image-distance", "12"],
            "--screen-image-distance (12) must not exceed --min-image-distance (10)",
        ),
        (
            ["--system", "Cu-Au", "--calculator", "emt", "--resume-from", "README.md"],
            "--resume-from continues GPAW relaxations; calculator 'emt' cannot",
        ),
        (
            ["--system", "Li-In", "--learn", "gpaw", "--resume-from", "missing.extxyz"],
            "--resume-from: no such file 'missing.extxyz'",
        ),
        (
            ["--system", "Li-In", "--learn", "gpaw", "--resume-from", str(PYPROJECT)],
            f"--resume-from: '{PYPROJECT}' is no extended XYZ",
        ),
        (["--system", "Xx-Yy"], "unknown system 'Xx-Yy'"),
        (
            ["--species", "Qq", "--hosts", "Cu3Au", "--calculator", "emt"],
            "species 'Qq' is not an element",
        ),
        (["--hosts", "Cu3Au"], "give --system, or --species and --hosts"),
    ],
)
def test_bad_input_is_one_clear_line(capsys, paths, args, message):
    assert message in _error(capsys, "run", *args, *paths)


def test_submitting_a_learning_loop_is_refused_before_anything_is_submitted(capsys, tmp_path):
    # its rounds read the store and --workdir of the process that runs them, which cluster jobs
    # do not share: refused before the project is even looked up (this one does not exist)
    line = _error(
        capsys,
        "submit",
        "--system",
        "Cu-Au",
        "--learn",
        "gpaw",
        "--project",
        "no-such-project",
        "--workdir",
        str(tmp_path / "calc"),
    )
    assert line.startswith("carrierflow: error: --learn runs with `carrierflow run` only")
    assert not (tmp_path / "calc").exists()


README = Path(__file__).resolve().parents[1] / "README.md"
# options the README names on other programs' command lines: setup.sh, jobflow-remote's `jf`,
# SLURM's sbatch, and the benchmark script (read from its parser below)
_NOT_CARRIERFLOWS = {"--gpaw", "--errors", "--export"}


def _cli_options() -> dict[str, set[str]]:
    """Every option of every carrierflow command: option -> the commands that take it."""
    parser = build_parser()
    options: dict[str, set[str]] = {o: {""} for a in parser._actions for o in a.option_strings}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command, sub in action.choices.items():
                for option in (o for a in sub._actions for o in a.option_strings):
                    options.setdefault(option, set()).add(command)
    return options


def test_the_readme_names_every_option_of_run_and_no_option_that_does_not_exist():
    text = README.read_text()
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text))
    benchmarks = (Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py")
    foreign = _NOT_CARRIERFLOWS | {
        option
        for script in benchmarks
        for option in re.findall(r'add_argument\(\s*"(--[a-z-]+)"', script.read_text())
    }
    options = _cli_options()
    assert named - foreign <= set(options), sorted(named - foreign - set(options))
    run = {o for o, commands in options.items() if "run" in commands and o.startswith("--")}
    assert run <= named, sorted(run - named)


@pytest.mark.parametrize(
    ("args", "quoted"),
    [
        (["--fmax", "inf"], "--fmax must be a finite number > 0, got inf"),
        (["--min-image-distance", "0.1"], "--min-image-distance: input should be"),
    ],
)
def test_the_error_messages_the_readme_quotes_are_the_ones_the_cli_prints(
    capsys, paths, args, quoted
):
    line = _error(capsys, "run", "--system", "Cu-Au", "--calculator", "emt", *args, *paths)
    shown = line.removeprefix("carrierflow: error: ")
    assert shown.startswith(quoted)
    assert f"`{shown}`" in " ".join(README.read_text().split())


def test_unwritable_output_and_store(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    common = ["run", "--system", "Cu-Au", "--calculator", "emt"]
    line = _error(
        capsys, *common, "--output", str(blocker / "out"), "--store", str(tmp_path / "store")
    )
    assert "cannot write the output directory" in line
    line = _error(
        capsys, *common, "--output", str(tmp_path / "out"), "--store", str(blocker / "store")
    )
    assert "cannot write the store" in line
    line = _error(
        capsys,
        *common,
        "--output",
        str(tmp_path / "out"),
        "--store",
        str(tmp_path / "missing.yaml"),
    )
    assert "store configuration" in line and "does not exist" in line


def test_failed_run_keeps_finished_results(capsys, emt_run, tmp_path):
    store = str(emt_run["store"])
    _error(
        capsys,
        "run",
        "--system",
        "Cu-Au",
        "--calculator",
        "emt",
        "--max-atoms",
        "20",
        "--store",
        store,
        "--output",
        str(tmp_path / "bad"),
    )
    assert main(cu_au("report", store, str(tmp_path / "report"))) == 0
    assert (tmp_path / "report" / "results.json").exists()


def test_report_without_results_says_so(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    line = _error(capsys, *cu_au("report", tmp_path / "empty", tmp_path / "out"))
    assert "no stored results for Cu-Au with emt and these options (run " in line
    assert "'carrierflow runs' lists the runs it holds" in line


def test_reading_a_store_that_is_not_there_creates_nothing(capsys, tmp_path):
    typo = tmp_path / "stroe"
    line = _error(capsys, *cu_au("report", typo, tmp_path / "out"))
    assert (
        line == f"carrierflow: error: no store at '{typo}' (give --store or set CARRIERFLOW_STORE)"
    )
    assert "no store at" in _error(capsys, "runs", "--store", str(typo))
    assert not typo.exists()


def test_dataset_of_a_store_without_dft_is_one_line_and_exit_2(tmp_path, capsys):
    out = tmp_path / "frames.extxyz"
    (tmp_path / "store").mkdir()
    assert main(["dataset", str(out), "--store", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "carrierflow: error: no DFT frames to export (no DFT calculation, or its folders are gone)"
    )
    assert not out.exists()
    assert main(["dataset", str(tmp_path / "frames.xyz"), "--store", str(tmp_path / "s")]) == 2
    assert "must end in .extxyz" in capsys.readouterr().err


def test_an_export_never_replaces_a_data_set_by_one_that_lacks_its_frames(tmp_path, capsys):
    from importlib.resources import files

    from ase.io import read

    from carrierflow.workflows.dataset import DatasetError, check_overwrite, write_dataset

    frames = read(str(files("carrierflow.fixtures").joinpath("dft/li-in-gpaw-fast.extxyz")), ":")
    path = tmp_path / "li.extxyz"
    write_dataset(frames[:5], path, made_by="test")
    check_overwrite(path, frames[:5])  # the same frames again, or more: a data set that grew
    check_overwrite(path, frames[:8])
    check_overwrite(tmp_path / "new.extxyz", frames[:1])
    # a store whose calculation folders were cleaned up, or another store
    with pytest.raises(DatasetError, match="holds 2 of its 5 frames that this store does not"):
        check_overwrite(path, frames[2:8])
    other = tmp_path / "notes.extxyz"
    other.write_text("my notes")
    with pytest.raises(DatasetError, match="exists and is not a data set of DFT frames"):
        check_overwrite(other, frames)
    folder = tmp_path / "frames.extxyz"
    folder.mkdir()
    assert main(["dataset", str(folder), "--store", str(tmp_path / "s")]) == 2
    assert capsys.readouterr().err.strip().endswith("is a folder, not a file")
    # a folder that is no run's --workdir (a typo for a sibling, the results folder)
    out = ["dataset", str(tmp_path / "d.extxyz"), "--store", str(tmp_path / "s")]
    assert main([*out, "--unfinished", str(tmp_path)]) == 2
    assert "--unfinished: no calculation folder in" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def _host_file(tmp_path, name: str, structure) -> str:
    path = tmp_path / name
    path.write_text(structure.to(fmt="poscar") if "POSCAR" in name else structure.to(fmt="cif"))
    return str(path)


def _cu3au():
    return load_fixture("Cu3Au")[0].copy()


def _disordered():
    host = _cu3au()
    host.replace_species({"Au": {"Au": 0.5, "Cu": 0.5}})
    return host


def _doubled_atom():
    host = _cu3au()
    host.append("Cu", host[0].frac_coords + np.array([0.01, 0, 0]))
    return host


def _molecule_in_a_box():
    return Structure(Lattice.cubic(15.0), ["Cu", "Cu"], [[0, 0, 0], [0.15, 0, 0]])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_disordered, "is disordered (partial occupancies): give an ordered structure"),
        (_doubled_atom, "has atoms 0.04 A apart (closer than 0.5 A: an atom given twice?)"),
        (
            _molecule_in_a_box,
            "has 15.0 A of vacuum along lattice vector 3: a molecule or slab in a box, not a bulk "
            "crystal",
        ),
        # far more atoms than any supercell may have, refused before any symmetry analysis
        (lambda: _cu3au() * (6, 6, 6), "has 864 atoms, more than --max-atoms 250"),
    ],
)
def test_a_host_that_is_no_ordered_bulk_crystal_is_refused_before_anything_runs(
    capsys, paths, tmp_path, make, message
):
    host = _host_file(tmp_path, "host.cif", make())
    line = _error(capsys, "run", "--species", "Cu", "--hosts", host, "--calculator", "emt", *paths)
    assert message in line


def test_structure_files_are_read_by_content_and_a_missing_one_says_so(capsys, paths, tmp_path):
    poscar = _host_file(tmp_path, "POSCAR", _cu3au())
    structure, source = load_structure(poscar)
    assert structure.composition.reduced_formula == "Cu3Au" and source.kind == "file"
    renamed = tmp_path / "my-host"
    renamed.write_text(_cu3au().to(fmt="poscar"))
    assert load_structure(str(renamed))[0].composition.reduced_formula == "Cu3Au"
    missing = str(tmp_path / "nowhere" / "Cu3Au.cif")
    line = _error(
        capsys, "run", "--species", "Cu", "--hosts", missing, "--calculator", "emt", *paths
    )
    assert line == f"carrierflow: error: structure file '{missing}' not found"


def test_a_model_that_does_not_know_an_element_or_does_not_load_is_refused(capsys, paths, tmp_path):
    host = _cu3au()
    host.replace_species({"Au": "Fr"})
    francium = _host_file(tmp_path, "CuFr.cif", host)
    line = _error(capsys, "run", "--species", "Cu", "--hosts", francium, *paths)
    assert "SevenNet model '7net-l3i5' does not know Fr" in line
    corrupt = tmp_path / "model.pth"
    corrupt.write_bytes(b"not a checkpoint")
    line = _error(capsys, "run", "--system", "Li-In", "--model", str(corrupt), *paths)
    assert f"cannot load SevenNet model '{corrupt}'" in line


def test_version_is_one_line(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == "carrierflow 0.1.0"


def test_ctrl_c_while_starting_up_is_one_line(capsys, monkeypatch, paths):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("carrierflow.structures.sources.load_structure", interrupted)
    assert main(["run", "--system", "Cu-Au", "--calculator", "emt", *paths]) == 130
    assert capsys.readouterr().err.strip() == "carrierflow: interrupted"


def test_a_config_file_holds_any_option_and_the_command_line_wins(tmp_path, monkeypatch):
    from carrierflow.workflows import cli

    config = tmp_path / "run.yaml"
    config.write_text("fmax: 0.02\nmin-image-distance: 7.5\nhosts: [Cu3Au]\ncalculator: emt\n")
    seen = {}
    monkeypatch.setattr(cli, "command_run", lambda args: seen.update(vars(args)) or 0)
    assert main(["run", "--config", str(config), "--species", "Cu", "--fmax", "0.03"]) == 0
    assert seen["fmax"] == 0.03 and seen["min_image_distance"] == 7.5
    assert seen["hosts"] == ["Cu3Au"] and seen["calculator"] == "emt"
    # an option of several values given one value is a list of one, typed like the option's
    config.write_text("hosts: Cu3Au\ncalculator: emt\n")
    assert main(["run", "--config", str(config), "--species", "Cu"]) == 0
    assert seen["hosts"] == ["Cu3Au"]
    # an on/off option from the file, and numbers given where the option takes text
    config.write_text("hosts: [123]\ncalculator: emt\nmigration: true\n")
    assert main(["run", "--config", str(config), "--species", "Cu"]) == 0
    assert seen["hosts"] == ["123"] and seen["migration"] is True
    finetune = tmp_path / "finetune.yaml"
    finetune.write_text("hold-out: Li3In2\norderings: [a.json, b.json]\n")
    monkeypatch.setattr(cli, "command_finetune", lambda args: seen.update(vars(args)) or 0)
    assert main(["finetune", "data.extxyz", "--output", "o", "--config", str(finetune)]) == 0
    assert seen["hold_out"] == ["Li3In2"] and seen["orderings"] == [Path("a.json"), Path("b.json")]
    finetune.write_text("orderings: a.json\n")
    assert main(["finetune", "data.extxyz", "--output", "o", "--config", str(finetune)]) == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("fmax: .inf\n", "--fmax must be a finite number > 0"),
        ("fmx: 0.02\n", "has no option --fmx"),
        ("[1, 2]\n", "give options as 'name: value' lines"),
        ("fmax: [0.02\n", "not YAML"),
        # argparse checks neither the choices nor the type of a default: a stand-in ran as
        # the "DFT" of a refinement, a list ended in a TypeError
        ("refine: emt\n", "--config {config}: --refine: 'emt' is not one of gpaw, vasp"),
        ("fmax: [0.02]\n", "--fmax takes one value, got [0.02]"),
        ("defects: [vacancy, vacancies]\n", "--defects: 'vacancies' is not one of"),
        ("migration: 3\n", "--migration is on or off: give true or false, got 3"),
    ],
)
def test_a_bad_config_file_is_one_line_and_exit_2(capsys, paths, tmp_path, text, message):
    config = tmp_path / "run.yaml"
    config.write_text(text)
    line = _error(
        capsys,
        "run",
        "--species",
        "Cu",
        "--hosts",
        "Cu3Au",
        "--calculator",
        "emt",
        "--config",
        str(config),
        *paths,
    )
    assert message.format(config=config) in line


def test_a_missing_config_file_is_named(capsys, paths, tmp_path):
    line = _error(capsys, "run", "--config", str(tmp_path / "none.yaml"), *paths)
    assert "--config: file" in line and "not found" in line


def test_options_given_without_the_option_they_belong_to_are_named_in_one_warning_each(
    capsys, tmp_path
):
    from carrierflow.workflows import cli

    cli._configure_logging(verbose=False)
    capsys.readouterr()
    args = ["--system", "Cu-Au", "--calculator", "emt", "--store", str(tmp_path / "none")]
    extra = [
        "--refine-k",
        "2",
        "--images",
        "3",
        "--neb-fmax",
        "0.1",
        "--epochs",
        "5",
        "--keep",
        "3",
    ]
    assert main(["report", *args, *extra]) == 2  # no store there: nothing computes
    err = capsys.readouterr().err
    assert "--refine-k applies only with --refine or --learn: ignored" in err
    assert "--images, --neb-fmax apply only with --migration: ignored" in err
    assert "--epochs applies only with --learn: ignored" in err
    assert "--keep applies only with --screen-image-distance: ignored" in err
    capsys.readouterr()
    assert main(["report", *args, "--migration", "--images", "3"]) == 2
    assert "ignored" not in capsys.readouterr().err


def _noisy_cell() -> Structure:
    """A bcc Li cell with every atom moved 0.12 A at random: spglib's C library warns on stderr
    while it refines it at a loose tolerance."""
    rng = np.random.default_rng(7)
    cell = Structure(Lattice.cubic(3.5), ["Li"] * 2, [[0, 0, 0], [0.5, 0.5, 0.5]]) * (2, 2, 2)
    for site in cell:
        site.coords = site.coords + rng.normal(0, 0.12, 3)
    return cell


@pytest.mark.parametrize("verbose", [False, True])
def test_spglib_warnings_reach_the_output_only_with_verbose(capfd, monkeypatch, verbose):
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    from carrierflow.workflows import cli

    monkeypatch.setenv("SPGLIB_WARNING", "ON")
    monkeypatch.delenv("SPGLIB_WARNING")  # restored to what it was after the test
    cli._configure_logging(verbose=verbose)
    capfd.readouterr()
    for symprec in (0.1, 0.3, 0.5):
        SpacegroupAnalyzer(_noisy_cell(), symprec=symprec).get_refined_structure()
    assert ("spglib:" in capfd.readouterr().err) == verbose
