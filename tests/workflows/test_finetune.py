"""Fine-tuning with SevenNet's own trainer on DFT frames shipped in fixtures/dft."""

import json
from importlib.resources import files
from pathlib import Path

import pytest
import yaml
from ase.io import read, write
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from carrierflow.workflows.calculators import Calculator, file_sha256
from carrierflow.workflows.cli import main
from carrierflow.workflows.engine import load_calculator
from carrierflow.workflows.finetune import (
    FineTuneError,
    FineTuneSettings,
    defect_energies,
    element_offsets,
    fine_tune,
    split_by_phase,
)

DATA = files("carrierflow.fixtures").joinpath("dft/li-in-gpaw-fast.extxyz")
ORDERINGS_OF_TWO_COMPOSITIONS = [
    str(files("carrierflow.fixtures").joinpath(name)) for name in ("Li5In4.json", "Li3In2.json")
]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory) -> dict:
    """7net-0 (the cheaper base) fine-tuned for 3 epochs on the cell relaxations of bcc Li and
    Li5In4 (one DFT setting), Li3In2's held out."""
    frames = [f for f in read(str(DATA), ":") if f.info["run"] == "bulk relax"]
    train, valid = split_by_phase(frames, ["Li3In2"])
    # one frame with an info key the others lack (GPAW's steps record their cost since
    # 2026-12-03): SevenNet's trainer failed on it (KeyError) until only common keys were written
    train[0].info["scf_iterations"] = 12
    settings = FineTuneSettings(base_model="7net-0", epochs=3, batch_size=2)
    workdir = tmp_path_factory.mktemp("finetune")
    # a folder an earlier training left behind: its curve and checkpoint must not be read back
    (workdir / "lc.csv").write_text("epoch,lr\n1,0.1\n")
    (workdir / "checkpoint_3.pth").write_bytes(b"stale")
    result = fine_tune(train, valid, settings, workdir)
    return {"result": result, "train": train, "valid": valid, "workdir": workdir}


def test_held_out_phases_never_reach_the_training_set():
    frames = read(str(DATA), ":")
    train, valid = split_by_phase(frames, ["Li3In2"])
    assert valid and train and len(train) + len(valid) == len(frames)
    assert all(f.info["label"].startswith("Li3In2 ") for f in valid)
    assert not any(f.info["label"].startswith("Li3In2 ") for f in train)
    # "Li" is its own phase, not a prefix of Li5In4 or Li3In2
    _, li = split_by_phase(frames, ["Li"])
    assert li and all(f.info["label"].split()[0] == "Li" for f in li)


def test_holding_out_a_hosts_defects_trains_its_perfect_crystal_and_validates_the_rest():
    frames = read(str(DATA), ":")
    train, valid = split_by_phase(frames, ["Li3In2"], host_trains=True)
    assert len(train) + len(valid) == len(frames)
    kept = {f.info["label"] for f in train if f.info["label"].startswith("Li3In2 ")}
    assert kept == {"Li3In2 bulk [DFT]", "Li3In2 perfect supercell [DFT]"}
    # the relaxations and the search's distorted starts of its two defects
    held = {f.info["label"] for f in valid}
    assert {label.split(" [")[0] for label in held} == {"Li3In2 v_Li_2c", "Li3In2 Li_i1"}
    assert "Li3In2 v_Li_2c [DFT]" in held and "Li3In2 Li_i1 [DFT]" in held
    # the defects' E_f are what it validates: each found with the trained perfect supercell
    assert {r["name"] for r in defect_energies(valid, frames)} == {"v_Li_2c", "Li_i1"}


def test_cross_validation_also_holds_out_only_the_defects_of_each_host_that_has_them(monkeypatch):
    import carrierflow.workflows.finetune as finetune

    splits = []

    def recorded(train, valid, settings, root):
        splits.append(({f.info["label"] for f in train}, {f.info["label"] for f in valid}))
        return "model"

    monkeypatch.setattr(finetune, "fine_tuned_model", recorded)
    monkeypatch.setattr(finetune, "CrossValidatedModel", lambda **kwargs: kwargs)
    frames = read(str(DATA), ":")
    result = finetune.cross_validated(frames, ["Li3In2"], FineTuneSettings(), Path("unused"))
    assert set(result["cross_validation"]) == set(result["defects_held_out"]) == {"Li3In2"}
    (host_out, host_valid), (defects_out, defects_valid), (every, none) = splits
    assert all(label.startswith("Li3In2 ") for label in host_valid)
    assert "Li3In2 perfect supercell [DFT]" in host_valid - host_out
    assert "Li3In2 perfect supercell [DFT]" in defects_out
    assert defects_valid == host_valid - {"Li3In2 bulk [DFT]", "Li3In2 perfect supercell [DFT]"}
    assert none == set() and every >= host_valid
    # cell relaxations alone have no defect to hold out: only the host-held-out training
    splits.clear()
    bulk = [f for f in frames if f.info["run"] == "bulk relax"]
    result = finetune.cross_validated(bulk, ["Li3In2"], FineTuneSettings(), Path("unused"))
    assert result["defects_held_out"] == {} and len(splits) == 2


def test_a_folder_trained_in_before_gives_this_trainings_curve_and_checkpoint(tuned):
    assert not (tuned["workdir"] / "lc0.csv").exists()
    assert tuned["result"].epoch == 3 and tuned["result"].errors["train"]["loss"] > 0
    assert (tuned["workdir"] / "checkpoint_3.pth").read_bytes() != b"stale"


def test_fine_tuning_lowers_the_force_error_on_a_host_it_never_saw(tuned):
    held_out = tuned["result"].held_out
    assert held_out["fine_tuned"]["force_rmse_eV_A"] < held_out["base"]["force_rmse_eV_A"]
    assert tuned["result"].valid_frames == len(tuned["valid"])
    assert tuned["result"].train_frames == len(tuned["train"])


def test_the_checkpoint_loads_and_its_calculator_is_labelled_by_its_content(tuned):
    result = tuned["result"]
    calculator = Calculator("sevennet", model=result.checkpoint)
    assert calculator.model_sha256 == result.checkpoint_sha256
    assert calculator.label not in (Calculator("sevennet", model="7net-0").label,)
    assert result.checkpoint_sha256[:8] in calculator.label
    atoms = AseAtomsAdaptor.get_atoms(
        Structure(Lattice.cubic(3.44), ["Li", "Li"], [[0] * 3, [0.5] * 3])
    )
    atoms.calc = load_calculator(calculator.makers("static")[0])
    assert -5 < atoms.get_potential_energy() / len(atoms) < 0


def test_element_offsets_recover_a_constant_per_element():
    frames = read(str(DATA), ":")
    shift = {"Li": 0.25, "In": -1.5}
    model = [
        f.get_potential_energy() - sum(shift[s] for s in f.get_chemical_symbols()) for f in frames
    ]
    offsets = element_offsets(frames, model)
    assert offsets == pytest.approx(shift, abs=1e-9)


def test_fine_tuning_without_frames_or_with_an_unknown_phase_is_one_line(tmp_path, capsys):
    with pytest.raises(FineTuneError, match="needs training frames"):
        fine_tune([], read(str(DATA), ":1"), FineTuneSettings(), tmp_path)
    out = ["--output", str(tmp_path / "t")]
    # a phase not in the data, alone or beside one that is (a typo, l for I)
    for names in (["LiX"], ["Li3In2", "Li3ln2"]):
        assert main(["finetune", str(DATA), "--hold-out", *names, *out]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"carrierflow: error: --hold-out {' '.join(names)}: no frame of ")
        assert names[-1] in err and "\n" not in err
    # data that is no data set of DFT frames, and an output that is a file: before any training
    empty, notes = tmp_path / "empty.extxyz", tmp_path / "notes.txt"
    empty.write_text("")
    notes.write_text("my notes")
    for data, options, message in [
        (empty, out, f"finetune: '{empty}' is not a data set of DFT frames"),
        (notes, out, f"finetune: '{notes}' is no extended XYZ"),
        (tmp_path / "missing.extxyz", out, "finetune: no such file"),
        (DATA, ["--output", str(notes)], "cannot write --output"),
    ]:
        assert main(["finetune", str(data), *options]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"carrierflow: error: {message}") and "\n" not in err, err
    assert not (tmp_path / "t").exists() and notes.read_text() == "my notes"


def test_held_out_defects_get_their_dft_and_model_formation_energies():
    from carrierflow.workflows.finetune import base_checkpoint, formation_energy_errors

    frames = read(str(DATA), ":")
    _, held = split_by_phase(frames, ["Li"])
    rows = formation_energy_errors(held, frames, {"base": base_checkpoint("7net-0")})
    by_name = {row["name"]: row for row in rows}
    assert {r["kind"] for r in rows} == {"vacancy", "interstitial"}
    assert set(by_name) == {"v_Li_1a", "Li_i1"}
    # bcc Li's vacancy from the frames: E(defect) - E(perfect) + mu, the GPAW refinement's 0.51 eV
    assert by_name["v_Li_1a"]["dft_eV"] == pytest.approx(0.51, abs=0.03)
    for row in rows:
        assert row["base_error_eV"] == pytest.approx(row["base_eV"] - row["dft_eV"])
    # held-out frames without a defect calculation (Li3In2's bulk and perfect cell) give none
    _, li3in2 = split_by_phase(frames, ["Li3In2"])
    bulk_only = [a for a in li3in2 if "v_" not in a.info["label"] and "_i" not in a.info["label"]]
    assert bulk_only and len(bulk_only) < len(li3in2)
    assert formation_energy_errors(bulk_only, frames, {}) == []


def test_a_defect_two_merged_data_sets_relaxed_counts_at_its_lower_dft_state():
    from carrierflow.workflows.finetune import defect_energies

    # the refinement and the --learn loop relaxed one bcc Li interstitial in the same cell from
    # two starts; merged (as the shipped model's frames are), its DFT state is the lower end
    refinement = read(str(DATA), ":")
    loop = read(
        str(files("carrierflow.fixtures").joinpath("dft/li-in-learn-gpaw-fast.extxyz")), ":"
    )
    label = "Li Li_i1 [DFT]"
    ends = [
        [a for a in frames if a.info["label"] == label][-1].get_potential_energy()
        for frames in (refinement, loop)
    ]
    assert abs(ends[0] - ends[1]) > 1e-4  # two states, not one frame twice
    for merged in (refinement + loop, loop + refinement):
        [interstitial] = [
            d for d in defect_energies(merged, merged) if (d["phase"], d["name"]) == ("Li", "Li_i1")
        ]
        assert interstitial["frames"][0].get_potential_energy() == pytest.approx(
            min(ends), abs=1e-9
        )


def _cell_relaxations(tmp_path):
    """The cell relaxations' frames (one DFT setting, 13 small frames) as a data set file."""
    frames = [f for f in read(str(DATA), ":") if f.info["run"] == "bulk relax"]
    subset = tmp_path / "bulk.extxyz"
    write(subset, frames)
    return frames, subset


def test_a_model_trained_on_every_frame_is_its_last_epoch_with_in_sample_errors_only(
    tmp_path, capsys
):
    """What a shipped model is made by: no frame held out, so nothing may be called validation;
    and a rerun of the same command reads the model back instead of training it again."""
    frames, subset = _cell_relaxations(tmp_path)
    args = ["finetune", str(subset), "--base-model", "7net-0", "--epochs", "2"]
    args += ["--batch-size", "4", "--output", str(tmp_path / "t")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "trained on all" in out and "in-sample" in out
    [path] = (tmp_path / "t").glob("*/finetune.json")
    record = json.loads(path.read_text())
    assert record["checkpoint"].endswith("checkpoint_2.pth") and record["epoch"] == 2
    assert set(record["errors"]) == {"train"} and record["held_out"] == {}
    assert record["valid_frames"] == 0 and record["train_frames"] == len(frames)
    assert record["held_out_defects"] == []
    assert record["dataset_sha256"] == file_sha256(subset)
    stamp = Path(record["checkpoint"]).stat().st_mtime
    assert main(args) == 0
    assert record["checkpoint"] in capsys.readouterr().out
    assert Path(record["checkpoint"]).stat().st_mtime == stamp


def test_cross_validation_trains_one_model_per_held_out_host_and_one_on_every_frame(
    tmp_path, capsys, monkeypatch
):
    frames, subset = _cell_relaxations(tmp_path)
    args = ["finetune", str(subset), "--base-model", "7net-0", "--epochs", "1"]
    # a relative --output, as typed: SevenNet's trainer runs inside each model's folder
    monkeypatch.chdir(tmp_path)
    out_dir = Path("cv")
    assert main([*args, "--cross-validate", "Li3In2", "--output", str(out_dir)]) == 0
    record = json.loads((out_dir / "cross-validation.json").read_text())
    held = record["cross_validation"]["Li3In2"]
    assert held["valid_frames"] == sum(f.info["label"].startswith("Li3In2") for f in frames)
    assert held["train_frames"] + held["valid_frames"] == len(frames)
    assert record["model"]["train_frames"] == len(frames) and record["model"]["valid_frames"] == 0
    assert "without Li3In2" in capsys.readouterr().out
    # a rerun trains nothing: both models are read back by their frames and settings
    stamps = {p: p.stat().st_mtime for p in out_dir.glob("*/checkpoint*.pth")}
    assert main([*args, "--cross-validate", "Li3In2", "--output", str(out_dir)]) == 0
    assert {p: p.stat().st_mtime for p in out_dir.glob("*/checkpoint*.pth")} == stamps


@pytest.mark.parametrize(
    "options, message",
    [
        (["--cross-validate", "LiX"], "--cross-validate LiX: no frame of LiX"),
        (["--cross-validate", "Li", "Li5In4", "Li3In2"], "every phase"),
        (["--cross-validate", "Li3In2", "--hold-out", "Li"], "give one of them"),
        # the same fold would train twice, about 17 min each here
        (["--cross-validate", "Li3In2", "Li3In2"], "--cross-validate names Li3In2 twice"),
        (["--orderings", "a.json", "b.json"], "--orderings compares the models"),
        (["--device", "cuda:99"], "--device cuda:99"),
        (
            ["--cross-validate", "Li3In2", "--orderings", *ORDERINGS_OF_TWO_COMPOSITIONS],
            "--orderings: orderings of one composition, got Li5In4 and Li3In2",
        ),
    ],
)
def test_bad_cross_validation_options_are_one_line(tmp_path, capsys, options, message):
    args = ["finetune", str(DATA), *options, "--output", str(tmp_path / "t")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "t").exists()


def test_the_orderings_of_li5in4_come_out_as_the_base_models_rank_them():
    """7net-0 ranks the two Li5In4 orderings against PBE (-9 meV/atom), 7net-l3i5 with it."""
    from carrierflow.workflows.finetune import base_checkpoint, ordering_energy

    fixtures = files("carrierflow.fixtures")
    ground = Structure.from_file(str(fixtures.joinpath("Li5In4.json")))
    other = Structure.from_file(str(fixtures.joinpath("Li5In4_In13_alternative.json")))
    assert ordering_energy(base_checkpoint("7net-0"), ground, other) == pytest.approx(-9, abs=1.5)
    with pytest.raises(FineTuneError, match="one composition"):
        ordering_energy(base_checkpoint("7net-0"), ground, other.copy().remove_species(["In"]))


def test_two_orderings_that_relax_into_one_structure_give_no_ordering_energy():
    """A model without a barrier between two orderings relaxes one into the other: its energy
    difference (a fine-tuned model's +0.001 meV/atom) is no ordering energy, and says so."""
    from carrierflow.workflows.finetune import base_checkpoint, ordering_energy

    ground = Structure.from_file(str(files("carrierflow.fixtures").joinpath("Li5In4.json")))
    moved = ground.copy()
    moved.translate_sites(range(len(moved)), [0.1, 0.2, 0.3])  # the same crystal, other numbers
    assert ordering_energy(base_checkpoint("7net-0"), ground, moved) is None


def test_only_frames_of_one_dft_setting_are_trained_on_together():
    """The GPAW cell relaxations run at 1.3x the cut-off: their energies do not compare with the
    400 eV frames (56-64 meV/atom apart in Li-In after the per-element offsets)."""
    from carrierflow.workflows.finetune import one_dft_setting

    frames = read(str(DATA), ":")
    settings = {json.loads(f.info["dft_settings"])["encut_eV"] for f in frames}
    assert settings == {400.0, 520.0}
    train, valid = split_by_phase(frames, ["Li3In2"])
    setting, (kept_train, kept_valid), left_out = one_dft_setting(train, valid)
    assert json.loads(setting)["encut_eV"] == 400.0  # most frames
    kept = [*kept_train, *kept_valid]
    assert {f.info["dft_settings"] for f in kept} == {setting}
    assert left_out == len(frames) - len(kept) > 0
    assert all(f.info["run"] == "bulk relax" for f in frames if f not in kept)
    with pytest.raises(FineTuneError, match="no held-out frame has the DFT settings"):
        bulk = [f for f in frames if f.info["run"] == "bulk relax"]
        fine_tune([f for f in frames if f not in bulk], bulk, FineTuneSettings(), Path("unused"))


def _supercell_frames():
    """The refinement's 400 eV frames: bulk cells, perfect supercells and defect cells."""
    return [
        f for f in read(str(DATA), ":") if json.loads(f.info["dft_settings"])["encut_eV"] == 400
    ]


def test_a_host_whose_perfect_supercell_is_there_trains_without_its_bulk_cell():
    """A local model gives a crystal one energy per atom in any cell; the DFT frames do not (one
    k-spacing, two meshes), so only the cell the defect energies are differences against stays."""
    from carrierflow.workflows.finetune import comparable_frames, is_perfect_supercell, phase_of

    frames = _supercell_frames()
    per_atom = {
        (phase_of(f), f.info["task"]): f.get_potential_energy() / len(f)
        for f in frames
        if f.info["task"] == "bulk_relax" or is_perfect_supercell(f)
    }
    # the contradiction itself: Li5In4's bulk cell 11 meV/atom above its supercell
    assert per_atom[("Li5In4", "bulk_relax")] - per_atom[("Li5In4", "static")] > 0.008
    train, valid = split_by_phase(frames, ["Li3In2"])
    _, (kept_train, kept_valid), left_out = comparable_frames(train, valid)
    kept = [*kept_train, *kept_valid]
    assert not any(f.info["task"] == "bulk_relax" for f in kept)
    assert {phase_of(f) for f in kept_valid if is_perfect_supercell(f)} == {"Li3In2"}
    assert (
        left_out == len(frames) - len(kept) == sum(f.info["task"] == "bulk_relax" for f in frames)
    )
    # without its supercell, a host's bulk cell is all there is of the crystal, and it stays
    no_supercell = [f for f in frames if not (is_perfect_supercell(f) and phase_of(f) == "Li3In2")]
    _, (kept,), _ = comparable_frames(no_supercell)
    assert {phase_of(f) for f in kept if f.info["task"] == "bulk_relax"} == {"Li3In2"}


def test_the_perfect_supercells_and_relaxation_ends_train_as_their_own_weighted_data_sets(
    tmp_path,
):
    """bcc Li's perfect supercell, its bulk cell and defect cells: the supercell trains in a data
    set of its own whose energy carries the reference weight in SevenNet's loss, the defect
    relaxation's last frame in one with the defect weight; the bulk cell trains no more, yet
    still gives a held-out vacancy its mu."""
    from carrierflow.workflows.finetune import is_perfect_supercell, phase_of
    from carrierflow.workflows.validation import frame_key

    frames = [f for f in _supercell_frames() if phase_of(f) == "Li"]
    perfect = [f for f in frames if is_perfect_supercell(f)][:1]
    bulk = [f for f in frames if f.info["task"] == "bulk_relax"]
    interstitial = [f for f in frames if f.info["label"] == "Li Li_i1 [DFT]"][:4]
    vacancy = [f for f in frames if f.info["label"] == "Li v_Li_1a [DFT]"][-1:]
    settings = FineTuneSettings(
        base_model="7net-0", epochs=1, batch_size=2, reference_weight=10, defect_weight=5
    )
    result = fine_tune(perfect + bulk + interstitial, vacancy, settings, tmp_path)
    assert bulk and result.left_out_frames == len(bulk)
    assert result.train_frames == len(perfect) + len(interstitial)
    written = {
        name: [frame_key(a) for a in read(str(tmp_path / f"{name}.extxyz"), ":")]
        for name in ("train", "references", "ends")
    }
    # positions, cell and settings identify a frame (the written energies are shifted)
    assert written["references"] == [frame_key(a) for a in perfect]
    assert written["ends"] == [frame_key(interstitial[-1])]
    assert written["train"] == [frame_key(a) for a in interstitial[:-1]]
    config = yaml.safe_load((tmp_path / "input.yaml").read_text())
    assert config["train"]["use_weight"] is True
    weighted = [d for d in config["data"]["load_trainset_path"] if "data_weight" in d]
    assert [d["data_weight"] for d in weighted] == [{"energy": 10.0}, {"energy": 5.0}]
    assert weighted[0]["file_list"][0]["file"].endswith("references.extxyz")
    assert weighted[1]["file_list"][0]["file"].endswith("ends.extxyz")
    # E(defect) - E(perfect) + mu of the bulk cell: the GPAW refinement's 0.51 eV
    [held] = result.held_out_defects
    assert held["name"] == "v_Li_1a" and held["dft_eV"] == pytest.approx(0.51, abs=0.03)


def test_the_relaxation_ends_are_the_last_steps_of_defect_relaxations_and_weigh_only_when_asked():
    """The frames an E_f is read from: each ion relaxation's last step, never a single point or a
    bulk cell. At the default weight (1) SevenNet gets no data set of them, so that the models
    trained before the option are the ones the same settings train today."""
    from carrierflow.workflows.finetune import base_checkpoint, relaxation_ends, sevenn_input

    frames = _supercell_frames()
    ends = relaxation_ends(frames)
    assert ends and {a.info["task"] for a in ends} == {"ion_relax"}
    for end in ends:
        steps = [a for a in frames if a.info["label"] == end.info["label"]]
        assert end.info["step"] == max(
            a.info["step"] for a in steps if a.info["run"] == end.info["run"]
        )
    assert relaxation_ends([a for a in frames if a.info["task"] != "ion_relax"]) == []
    config = sevenn_input(
        FineTuneSettings(base_model="7net-0"), base_checkpoint("7net-0"), "t", "v", "r"
    )
    assert [d.get("data_weight") for d in config["data"]["load_trainset_path"]] == [
        None,
        {"energy": 10.0},
    ]


def test_a_model_is_read_back_only_if_todays_settings_and_sevenn_would_train_it(
    tmp_path, monkeypatch
):
    # the folder's key leaves settings at their defaults out, and SevenNet's preset sets some of
    # them: a model trained under another sevenn or another default is trained again, beside
    # it, and the first is kept
    import carrierflow.workflows.finetune as finetune

    frames = [f for f in read(str(DATA), ":") if f.info["run"] == "bulk relax"][:2]
    settings = FineTuneSettings(base_model="7net-0", epochs=3)
    trained = []

    def trainer(train, valid, settings, directory, dataset_sha256=None, identity=None):
        directory.mkdir(parents=True)
        checkpoint = directory / "checkpoint_3.pth"
        checkpoint.write_bytes(str(directory).encode())
        result = finetune.FineTuneResult(
            checkpoint=str(checkpoint),
            checkpoint_sha256=file_sha256(checkpoint),
            base_model="7net-0",
            base_sha256="0",
            settings=settings,
            train_frames=len(train),
            valid_frames=0,
            train_sha256="0",
            valid_sha256="0",
            element_offsets_eV={},
            errors={},
            held_out={},
            epoch=settings.epochs,
            first_epoch_errors={},
            sevenn_version=finetune.version("sevenn"),
            elapsed_s=1.0,
        )
        (directory / "finetune.json").write_text(result.model_dump_json())
        trained.append(directory)
        return result

    monkeypatch.setattr(finetune, "fine_tune", trainer)
    first = finetune.fine_tuned_model(frames, [], settings, tmp_path)
    assert finetune.fine_tuned_model(frames, [], settings, tmp_path) == first
    assert len(trained) == 1
    real = finetune.version
    monkeypatch.setattr(
        finetune, "version", lambda name: "99.0" if name == "sevenn" else real(name)
    )
    upgraded = finetune.fine_tuned_model(frames, [], settings, tmp_path)
    assert len(trained) == 2 and upgraded.checkpoint != first.checkpoint
    assert trained[1].name.startswith(trained[0].name + "-")
    assert finetune.fine_tuned_model(frames, [], settings, tmp_path) == upgraded
    monkeypatch.setattr(finetune, "version", real)
    assert Path(first.checkpoint).is_file()
    assert finetune.fine_tuned_model(frames, [], settings, tmp_path) == first
    # the first model as if SevenNet's preset had had another rate then: trained again
    record = trained[0] / "finetune.json"
    old = json.loads(record.read_text())
    old["settings"]["learning_rate"] = settings.learning_rate / 2
    record.write_text(json.dumps(old))
    finetune.fine_tuned_model(frames, [], settings, tmp_path)
    assert len(trained) == 3 and trained[2] not in trained[:2]  # (the trainer never overwrites)


def test_a_fold_that_could_not_be_validated_stops_cross_validation_before_any_training(
    monkeypatch, tmp_path
):
    import carrierflow.workflows.finetune as finetune

    frames = read(str(DATA), ":")
    for atoms in frames:
        if finetune.phase_of(atoms) == "Li3In2":
            atoms.info["dft_settings"] = "another setting"
    monkeypatch.setattr(finetune, "fine_tuned_model", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(FineTuneError, match="--cross-validate Li3In2: none of its frames"):
        finetune.cross_validated(frames, ["Li3In2"], FineTuneSettings(), tmp_path)
