"""carrierflow validate: models against DFT frames, the frames each trained on counted apart."""

import json
import shutil
from pathlib import Path

import pytest
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write

from carrierflow.workflows.cli import main

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


@pytest.fixture(scope="module")
def bcc_li_frames(tmp_path_factory) -> Path:
    """The bcc Li frames of the shipped refinement data (bulk, perfect cell, vacancy), all in the
    shipped 7net-li-in's data set; it trained on the perfect cell's and the vacancy's (the bulk
    cells' never train where the perfect supercell is there, and the cell relaxation is of
    another DFT setting)."""
    frames = [
        a
        for a in read(FIXTURES / "dft" / "li-in-gpaw-fast.extxyz", ":")
        if a.info["label"] in ("Li bulk [DFT]", "Li perfect supercell [DFT]", "Li v_Li_1a [DFT]")
    ]
    path = tmp_path_factory.mktemp("data") / "bcc-li.extxyz"
    write(path, frames, format="extxyz")
    return path


def test_a_model_is_validated_with_the_frames_it_trained_on_counted_as_seen(
    bcc_li_frames, tmp_path, capsys
):
    # a checkpoint without its training frames: what it saw is unknown, never assumed unseen
    elsewhere = tmp_path / "elsewhere.pth"
    shutil.copy(FIXTURES / "models" / "7net-li-in.pth", elsewhere)
    # a fine-tuning's folder: its train.extxyz holds energies shifted by per-element constants
    tuned = tmp_path / "fine-tuned" / "checkpoint_30.pth"
    tuned.parent.mkdir()
    shutil.copy(elsewhere, tuned)
    frames = read(bcc_li_frames, ":")
    trained = [a.copy() for a in frames[:2]]
    for atoms, frame in zip(trained, frames, strict=False):
        energy = frame.get_potential_energy() - 0.4 * len(frame)
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=frame.get_forces())
    write(tuned.with_name("train.extxyz"), trained, format="extxyz")
    models = ["7net-0", "7net-li-in", str(elsewhere), str(tuned)]
    out = tmp_path / "out"
    assert main(["validate", str(bcc_li_frames), "--model", *models, "--output", str(out)]) == 0
    result = json.loads((out / "validation.json").read_text())  # strict JSON
    seen = {m: result["models"][m]["seen_frames"] for m in models}
    trained_by_shipped = sum(a.info["label"] != "Li bulk [DFT]" for a in frames)
    assert 0 < trained_by_shipped < len(frames)
    assert seen == {
        "7net-0": 0,
        "7net-li-in": trained_by_shipped,
        str(elsewhere): None,
        str(tuned): 2,
    }
    [vacancy] = result["defects"]
    assert vacancy["seen_by"] == ["7net-li-in"]
    assert vacancy["unknown_training"] == [str(elsewhere)]  # the tuned one saw no defect frame
    # E_f = E(defect) - E(perfect) + mu, from the frames' DFT energies
    final = {a.info["label"]: a for a in frames}
    mu = final["Li bulk [DFT]"].get_potential_energy() / len(final["Li bulk [DFT]"])
    expected = (
        final["Li v_Li_1a [DFT]"].get_potential_energy()
        - final["Li perfect supercell [DFT]"].get_potential_energy()
        + mu
    )
    assert vacancy["dft_eV"] == pytest.approx(expected, abs=1e-6)
    # the same checkpoint gives the same numbers whatever it is called
    assert vacancy["7net-li-in_eV"] == pytest.approx(vacancy[f"{elsewhere}_eV"], abs=1e-6)
    table = (out / "validation.md").read_text()
    assert "in-sample" in table and "unknown" in table
    assert (out / "validation.png").stat().st_size > 0
    assert table in capsys.readouterr().out


def test_validating_a_model_file_that_does_not_load_is_one_line_and_exit_2(
    bcc_li_frames, tmp_path, capsys
):
    model = tmp_path / "broken.pth"
    model.write_text("not a checkpoint")
    code = main(["validate", str(bcc_li_frames), "--model", str(model), "--output", str(tmp_path)])
    assert code == 2
    assert capsys.readouterr().err.startswith("carrierflow: error: cannot load SevenNet model")


def test_a_model_named_twice_is_one_line_before_anything_loads(bcc_li_frames, tmp_path, capsys):
    out = tmp_path / "v"
    args = ["validate", str(bcc_li_frames), "--model", "7net-0", "x.pth", "7net-0"]
    assert main([*args, "--output", str(out)]) == 2
    assert capsys.readouterr().err.strip() == "carrierflow: error: --model names 7net-0 twice"
    assert not out.exists()


def test_validating_frames_without_dft_energies_is_one_line_before_any_model_loads(
    tmp_path, capsys
):
    from ase.build import bulk

    plain = tmp_path / "plain.extxyz"
    write(plain, [bulk("Li", "bcc", a=3.51)], format="extxyz")
    out = tmp_path / "v"
    assert main(["validate", str(plain), "--model", "no-such-model", "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"carrierflow: error: validate: '{plain}' is not a data set of DFT frames with energies "
        "and forces (carrierflow dataset's)"
    )
    assert not out.exists()


def test_a_fine_tunings_weighted_frames_count_as_frames_it_trained_on(tmp_path):
    """The perfect supercells and the defect relaxations' ends train in data sets of their own
    (weighted), beside train.extxyz: a validation counts them as seen, its E_f as in-sample."""
    from carrierflow.workflows.validation import frame_key, training_frames

    frames = read(FIXTURES / "dft" / "li-in-gpaw-fast.extxyz", ":4")
    model = tmp_path / "checkpoint_20.pth"
    model.write_bytes(b"a checkpoint")
    write(tmp_path / "train.extxyz", frames[:2], format="extxyz")
    write(tmp_path / "references.extxyz", frames[2:3], format="extxyz")
    write(tmp_path / "ends.extxyz", frames[3:], format="extxyz")
    assert [frame_key(a) for a in training_frames(str(model))] == [frame_key(a) for a in frames]
    (tmp_path / "references.extxyz").write_text("")  # no perfect supercell among the frames
    (tmp_path / "ends.extxyz").unlink()  # trained at the default --defect-weight
    assert len(training_frames(str(model))) == 2
