"""The SevenNet model carrierflow ships for Li-In: its checkpoint, the DFT frames it was trained
on and its card agree, and the Li-In preset screens with it unless --model says otherwise."""

import importlib.util
import json
from collections import Counter
from importlib.resources import files
from pathlib import Path

import pytest
from ase.io import read
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from carrierflow.structures.presets import SYSTEMS
from carrierflow.workflows.calculators import Calculator, file_sha256
from carrierflow.workflows.cli import _calculators, build_parser
from carrierflow.workflows.codes.sevennet import FINE_TUNED_MODELS, sevennet_elements
from carrierflow.workflows.engine import load_calculator
from carrierflow.workflows.finetune import comparable_frames
from carrierflow.workflows.validation import frame_key

MODELS = files("carrierflow.fixtures").joinpath("models")
ROOT = Path(__file__).resolve().parents[2]  # the card names its sources from the repository root
CARD = json.loads(MODELS.joinpath("7net-li-in.card.json").read_text())


def test_the_checkpoint_and_the_frames_it_learnt_from_match_their_card():
    assert FINE_TUNED_MODELS["7net-li-in"] == f"models/{CARD['file']}"
    assert file_sha256(MODELS.joinpath(CARD["file"])) == CARD["sha256"]
    data = MODELS.joinpath(CARD["data"])
    assert file_sha256(data) == CARD["data_sha256"]
    frames = read(str(data), ":")
    # every frame of one DFT setting trained (the cell relaxations at 1.3x the cut-off did not),
    # one cell per crystal (the hosts' supercells, not their bulk cells)
    _, (kept,), left_out = comparable_frames(frames)
    assert {f.info["dft_settings"] for f in kept} == {CARD["dft_settings"]}
    assert not any(f.info["task"] == "bulk_relax" for f in kept)
    assert len(kept) == CARD["train_frames"] == len(frames) - CARD["left_out_frames"]
    assert left_out == CARD["left_out_frames"]
    assert CARD["settings"]["reference_weight"] > 1
    # made from its sources as the card says: each frame once, at most frames_per_calculation of
    # a relaxation (the loop's longest has 45), every calculation of every source present
    assert len({frame_key(f) for f in frames}) == len(frames)
    runs = Counter((f.info["fingerprint"], f.info["run"]) for f in frames)
    assert max(runs.values()) == CARD["frames_per_calculation"]
    for source in CARD["data_from"]:
        labels = {a.info["label"] for a in read(str(ROOT / source), ":")}
        assert labels <= {f.info["label"] for f in frames}
    # every number of the card was measured: errors of the model and of its held-out recipe
    assert CARD["in_sample_errors"]["force_rmse_eV_A"] > 0
    assert set(CARD["defects_held_out"]) == set(CARD["host_held_out"])
    for held in [*CARD["host_held_out"].values(), *CARD["defects_held_out"].values()]:
        assert held["valid_frames"] > 0 and held["defects"]


def test_the_shipped_model_was_made_by_the_recipe_make_py_holds():
    """A recipe changed in make.py without the model remade (or the reverse) fails here: the
    card's command and settings are the recipe's."""
    spec = importlib.util.spec_from_file_location("make", ROOT / "fixtures" / "models" / "make.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    recipe = make.RECIPES[CARD["name"]]
    options = recipe["options"]
    assert CARD["made_by"] == " ".join(
        ["carrierflow finetune", f"fixtures/models/{CARD['data']}", *options]
    )
    assert CARD["data_from"] == recipe["data"]
    assert CARD["frames_per_calculation"] == recipe["frames_per_calculation"]
    settings = CARD["settings"]
    assert str(settings["epochs"]) == options[options.index("--epochs") + 1]
    assert str(settings["lr_decay"]) == options[options.index("--lr-decay") + 1]


def test_the_li_in_preset_screens_with_the_shipped_model_and_model_gives_the_base_one():
    assert SYSTEMS["Li-In"].model == "7net-li-in"
    parser = build_parser()
    screen, _ = _calculators(parser.parse_args(["run", "--system", "Li-In"]))
    assert screen.model == "7net-li-in" and screen.model_sha256 == CARD["sha256"]
    assert CARD["sha256"][:8] in screen.label
    base, _ = _calculators(parser.parse_args(["run", "--system", "Li-In", "--model", "7net-l3i5"]))
    assert base.model == "7net-l3i5" and base.model_sha256 is None
    # another system keeps the calculator's default
    other, _ = _calculators(parser.parse_args(["run", "--system", "Cu-Au"]))
    assert other.model == "7net-l3i5"


def test_the_shipped_model_loads_and_knows_li_and_in():
    assert {"Li", "In"} <= sevennet_elements("7net-li-in")
    calculator = Calculator("sevennet", model="7net-li-in")
    atoms = AseAtomsAdaptor.get_atoms(
        Structure(Lattice.cubic(3.44), ["Li", "Li"], [[0] * 3, [0.5] * 3])
    )
    atoms.calc = load_calculator(calculator.makers("static")[0])
    assert -5 < atoms.get_potential_energy() / len(atoms) < 0
    assert abs(atoms.get_forces()).max() == pytest.approx(0, abs=1e-4)


@pytest.mark.parametrize(
    "card_file",
    sorted(
        p.name
        for p in files("carrierflow.fixtures").joinpath("dft").iterdir()
        if p.name.endswith(".card.json")
    ),
)
def test_every_shipped_dft_data_set_matches_its_card(card_file):
    """The frames committed as the DFT runs go on: the file is the one its card describes
    (a re-export without its card, or a card of another file, fails here)."""
    folder = files("carrierflow.fixtures").joinpath("dft")
    card = json.loads(folder.joinpath(card_file).read_text())
    data = folder.joinpath(card["file"])
    assert file_sha256(data) == card["sha256"]
    frames = read(str(data), ":")
    assert len(frames) == card["frames"] and sum(map(len, frames)) == card["atoms"]
    per_calculation: dict[str, int] = {}
    for atoms in frames:
        per_calculation[atoms.info["label"]] = per_calculation.get(atoms.info["label"], 0) + 1
        assert atoms.get_forces().shape == (len(atoms), 3)
    assert per_calculation == card["frames_per_calculation"]
