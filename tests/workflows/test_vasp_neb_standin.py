"""The stand-in VASP's NEB mode (IMAGES > 0) through atomate2's NEB Maker and custodian: a
vacancy hop in Cu with SYNTHETIC output from EMT, against a direct ASE climbing-image NEB."""

from __future__ import annotations

from contextlib import chdir

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.geometry import get_distances
from ase.mep import NEB
from ase.optimize import BFGS, FIRE
from atomate2.vasp.jobs.neb import NebFromImagesMaker
from atomate2.vasp.run import JobType
from atomate2.vasp.sets.core import NebSetGenerator
from custodian.custodian import ValidationError
from emmet.core.neb import NebIntermediateImagesDoc
from pymatgen.io.ase import AseAtomsAdaptor
from pymatgen.io.vasp import Kpoints
from pymatgen.io.vasp.sets import MPRelaxSet

FMAX = 0.05  # eV/A: EDIFFG = -FMAX
SPRING = 5.0  # eV/A^2: atomate2's SPRING = -5
NSW = 200


def _emt_energy(atoms) -> float:
    atoms = atoms.copy()
    atoms.calc = EMT()
    return atoms.get_potential_energy()


def _relaxed(atoms):
    atoms.calc = EMT()
    BFGS(atoms, logfile=None).run(fmax=0.02)
    return atoms


@pytest.fixture(scope="module")
def hop() -> list:
    """A nearest neighbour of a vacancy in a 2x2x2 conventional fcc Cu cell moves into it:
    relaxed start and end (same atom order) and three IDPP images between them."""
    cell = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    vacancy = cell.positions[0].copy()
    del cell[0]
    _, distances = get_distances(cell.positions, [vacancy], cell=cell.cell, pbc=True)
    neighbour = int(np.argmin(distances[:, 0]))
    start = _relaxed(cell.copy())
    end = cell.copy()
    end.positions[neighbour] = vacancy
    end = _relaxed(end)
    images = [start.copy(), *(start.copy() for _ in range(3)), end.copy()]
    NEB(images, method="improvedtangent").interpolate(method="idpp", mic=True)
    return images


def _direct_image_energies(images) -> list[float]:
    """The same NEB as the stand-in's, run here with ASE."""
    path = [image.copy() for image in images]
    for image in path:
        image.calc = EMT()
    neb = NEB(path, k=SPRING, climb=True, method="improvedtangent")
    assert FIRE(neb, logfile=None).run(fmax=FMAX, steps=NSW - 1)
    return [image.get_potential_energy() for image in path[1:-1]]


def _maker(command: str, nsw: int = NSW) -> NebFromImagesMaker:
    incar = {"EDIFFG": -FMAX, "NSW": nsw, "ISMEAR": 1, "SIGMA": 0.2, "ENCUT": 400}
    return NebFromImagesMaker(
        input_set_generator=NebSetGenerator(
            user_incar_settings={**incar, "MAGMOM": None, "ISPIN": 1},
            user_kpoints_settings=Kpoints.gamma_automatic((2, 2, 2)),
            # PBE POTCARs with the Materials Project's choice (Cu_pv), as the fake ones are
            config_dict=MPRelaxSet.CONFIG,
        ),
        run_vasp_kwargs={
            "vasp_cmd": command,
            "job_type": JobType.NEB,
            "vasp_job_kwargs": {"output_file": "vasp.out", "stderr_file": "std_err.txt"},
            "custodian_kwargs": {"polling_time_step": 0.5},
        },
    )


def test_a_cu_vacancy_hop_through_atomate2s_neb_maker(tmp_path, standin_vasp, hop):
    structures = [AseAtomsAdaptor.get_structure(image) for image in hop]
    head = tmp_path / "neb"
    head.mkdir()
    with chdir(head):
        result = NebFromImagesMaker.make.original(_maker(standin_vasp["command"]), structures)
    doc = result.output
    assert isinstance(doc, NebIntermediateImagesDoc)
    assert doc.state == "successful"
    assert len(doc.energies) == 3 and len(doc.images) == 3
    assert standin_vasp["log"].read_text().splitlines() == ["Cu31 NSW=200 ISIF=2 IMAGES=3"]
    # converged: fewer ionic steps than NSW in every image
    assert all(0 < len(calc.output.ionic_steps) < NSW for calc in doc.calculations)

    folders = sorted(path.name for path in head.glob("[0-9][0-9]"))
    assert folders == ["00", "01", "02", "03", "04"]
    for image in ("01", "02", "03"):
        for name in ("OUTCAR", "CONTCAR", "OSZICAR"):
            assert list((head / image).glob(f"{name}*")), (image, name)
    # VASP computes no endpoint
    for endpoint in ("00", "04"):
        assert not list((head / endpoint).glob("OUTCAR*"))

    start = _emt_energy(hop[0])
    barrier = max(doc.energies) - start
    direct = max(_direct_image_energies(hop)) - start
    assert barrier == pytest.approx(direct, abs=0.05)
    assert 0.3 < barrier < 1.5


def test_an_unconverged_neb_uses_all_nsw_steps_and_fails(tmp_path, standin_vasp, hop):
    # atomate2 raises for an unsuccessful job by default; here it only stops the children
    maker = _maker(standin_vasp["command"], nsw=5)
    maker.stop_children_kwargs = {"handle_unsuccessful": True}
    structures = [AseAtomsAdaptor.get_structure(image) for image in hop]
    with chdir(tmp_path):
        result = NebFromImagesMaker.make.original(maker, structures)
    assert result.output.state == "failed" and result.stop_children
    assert [len(calc.output.ionic_steps) for calc in result.output.calculations] == [5, 5, 5]


def test_the_neb_mode_fails_on_request(tmp_path, standin_vasp, hop, monkeypatch):
    monkeypatch.setenv("STANDIN_VASP_FAIL_FORMULA", "Cu31")
    structures = [AseAtomsAdaptor.get_structure(image) for image in hop]
    # custodian validates before it looks at the return code: the images have no outputs
    with chdir(tmp_path), pytest.raises(ValidationError, match="VaspNebFilesValidator"):
        NebFromImagesMaker.make.original(_maker(standin_vasp["command"]), structures)
    assert (tmp_path / "std_err.txt").read_text().startswith("synthetic failure requested")
    assert standin_vasp["log"].read_text().splitlines() == ["Cu31 NSW=200 ISIF=2 IMAGES=3"]
