"""Fine-tuning with SevenNet's own trainer on DFT frames shipped in fixtures/dft."""

from importlib.resources import files

import pytest
from ase.io import read
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from carrierflow.workflows.calculators import Calculator
from carrierflow.workflows.cli import main
from carrierflow.workflows.engine import load_calculator
from carrierflow.workflows.finetune import (
    FineTuneError,
    FineTuneSettings,
    element_offsets,
    fine_tune,
    split_by_phase,
)

DATA = files("carrierflow.fixtures").joinpath("dft/li-in-gpaw-fast.extxyz")


@pytest.fixture(scope="module")
def tuned(tmp_path_factory) -> dict:
    """7net-0 (the cheaper base) fine-tuned for 3 epochs on the bulk frames of bcc Li and Li5In4,
    Li3In2's held out."""
    frames = [f for f in read(str(DATA), ":") if f.info["task"] == "bulk_relax"]
    train, valid = split_by_phase(frames, ["Li3In2"])
    settings = FineTuneSettings(base_model="7net-0", epochs=3, batch_size=2)
    result = fine_tune(train, valid, settings, tmp_path_factory.mktemp("finetune"))
    return {"result": result, "train": train, "valid": valid}


def test_held_out_phases_never_reach_the_training_set():
    frames = read(str(DATA), ":")
    train, valid = split_by_phase(frames, ["Li3In2"])
    assert valid and train and len(train) + len(valid) == len(frames)
    assert all(f.info["label"].startswith("Li3In2 ") for f in valid)
    assert not any(f.info["label"].startswith("Li3In2 ") for f in train)
    # "Li" is its own phase, not a prefix of Li5In4 or Li3In2
    _, li = split_by_phase(frames, ["Li"])
    assert li and all(f.info["label"].split()[0] == "Li" for f in li)


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


def test_fine_tuning_without_held_out_frames_is_one_line(tmp_path, capsys):
    frames = read(str(DATA), ":")
    with pytest.raises(FineTuneError, match="needs training and validation frames"):
        fine_tune(frames, [], FineTuneSettings(), tmp_path)
    args = ["finetune", str(DATA), "--hold-out", "LiX", "--output", str(tmp_path / "t")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("carrierflow: error: --hold-out LiX: no frame of these phases")
    assert "\n" not in err


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
    # held-out frames with no defect calculation among them (Li3In2's bulk and perfect cell) give none
    _, li3in2 = split_by_phase(frames, ["Li3In2"])
    bulk_only = [a for a in li3in2 if "v_" not in a.info["label"] and "_i" not in a.info["label"]]
    assert bulk_only and len(bulk_only) < len(li3in2)
    assert formation_energy_errors(bulk_only, frames, {}) == []
