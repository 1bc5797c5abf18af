"""VASP through atomate2's Makers and input-set generators, with the study's settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from atomate2.vasp.jobs.core import RelaxMaker, StaticMaker
from atomate2.vasp.jobs.neb import NebFromImagesMaker
from atomate2.vasp.run import JobType
from atomate2.vasp.sets.core import NebSetGenerator, RelaxSetGenerator, StaticSetGenerator
from pymatgen.io.vasp import Kpoints
from pymatgen.io.vasp.sets import MPRelaxSet

from carrierflow.workflows.dft import DftSettings, kpoint_mesh

# PBE POTCARs with the Materials Project's choice per element (Li_sv, In_d, ...)
MP_PBE_CONFIG = MPRelaxSet.CONFIG

# how often custodian looks at a running VASP, s (custodian's default)
CUSTODIAN_POLLING_S = 10


def study_incar(settings: DftSettings, fmax: float) -> dict:
    """INCAR tags shared by every VASP calculation of a flow."""
    return {
        "GGA": "PE",
        "PREC": "Accurate",
        "ENCUT": settings.encut_eV,
        "EDIFF": settings.ediff_eV,
        "EDIFF_PER_ATOM": None,
        "EDIFFG": -fmax,
        "ISMEAR": int(settings.smearing[-1]),
        "SIGMA": settings.sigma_eV,
        "ISPIN": 1,
        "MAGMOM": None,
        # reciprocal-space projection: no real-space projection error, which would not cancel
        # between a defect cell and a perfect supercell of a few hundred atoms
        "LREAL": False,
        "LASPH": True,
        "LDAU": False,
        "ALGO": "Normal",
        "NELM": 200,
        "LWAVE": False,
        "LCHARG": False,
        "LORBIT": None,
        "KSPACING": None,
        **settings.incar,
    }


@dataclass
class _StudyMesh:
    """Explicit Gamma-centred KPOINTS from :func:`kpoint_mesh` for every structure."""

    kspacing: float = 0.03

    @property
    def kpoints_updates(self) -> Kpoints:
        mesh = kpoint_mesh(self.structure, self.kspacing)
        return Kpoints.gamma_automatic(mesh)


@dataclass
class StudyRelaxSetGenerator(_StudyMesh, RelaxSetGenerator):
    """atomate2's relaxation inputs on the study's k-point rule."""


@dataclass
class StudyStaticSetGenerator(_StudyMesh, StaticSetGenerator):
    """atomate2's static inputs on the study's k-point rule."""


@dataclass
class StudyNebSetGenerator(_StudyMesh, NebSetGenerator):
    """atomate2's climbing-image NEB inputs (VTST: IBRION = 3, IOPT = 1, LCLIMB) on the study's
    k-point rule."""


def _generator_kwargs(settings: DftSettings, fmax: float, incar: dict) -> dict:
    return {
        "kspacing": settings.kspacing,
        "config_dict": MP_PBE_CONFIG,
        "user_incar_settings": {**study_incar(settings, fmax), **incar},
        "user_potcar_settings": dict(settings.potcars),
        # keep the site order: defect analysis matches sites by index
        "sort_structure": False,
        "auto_ismear": False,
        "auto_metal_kpoints": False,
    }


@dataclass
class VaspMakers:
    """The atomate2 VASP Makers of each role in the carrier flow.

    Parameters
    ----------
    settings
        The DFT settings (study defaults unless overridden).
    fmax
        Force convergence of relaxations, eV/A (EDIFFG = -fmax).
    command
        The VASP command (``vasp_std``, ``mpirun -np 4 vasp_std``, ...).
    potcar_spec
        Write ``POTCAR.spec`` instead of POTCAR files.
    """

    settings: DftSettings = field(default_factory=DftSettings)
    fmax: float = 0.01
    command: str = "vasp_std"
    potcar_spec: bool = False

    def _relax(self, name: str, isif: int) -> RelaxMaker:
        incar = {"ISIF": isif, "IBRION": 2, "NSW": 99}
        return RelaxMaker(
            name=name,
            input_set_generator=StudyRelaxSetGenerator(
                **_generator_kwargs(self.settings, self.fmax, incar)
            ),
            write_input_set_kwargs={"potcar_spec": self.potcar_spec},
            run_vasp_kwargs=self._run_kwargs(),
        )

    def _run_kwargs(self) -> dict:
        return {
            "vasp_cmd": self.command,
            "custodian_kwargs": {"polling_time_step": CUSTODIAN_POLLING_S},
        }

    def bulk_relax(self) -> list[RelaxMaker | StaticMaker]:
        """Cell and ions (ISIF = 3) twice, as atomate2's DoubleRelaxMaker does against Pulay
        stress, then a static: after a change of cell the basis no longer matches the plane-wave
        cut-off sphere, so only a fresh single point gives the reliable energy."""
        return [
            self._relax("bulk relax 1", isif=3),
            self._relax("bulk relax 2", isif=3),
            self.static("bulk static"),
        ]

    def ion_relax(self) -> list[RelaxMaker]:
        """Ions only (ISIF = 2) at the supercell's fixed cell. The basis does not change, so the
        last ionic step's energy is reliable and no static follows; custodian restarts a
        relaxation that ends unconverged."""
        return [self._relax("ion relax", isif=2)]

    def neb(self, steps: int) -> NebFromImagesMaker:
        """Climbing-image NEB of a path's images (ions only, EDIFFG = -fmax, NSW = ``steps``)
        with VTST's optimizer, as atomate2 sets it up. VASP computes the intermediate images
        only: the endpoint energies are those of their relaxations, at the same settings."""
        return NebFromImagesMaker(
            name="NEB",
            input_set_generator=StudyNebSetGenerator(
                **_generator_kwargs(self.settings, self.fmax, {"NSW": steps})
            ),
            write_input_set_kwargs={"potcar_spec": self.potcar_spec},
            # an unconverged band is a result (flagged), not an error
            stop_children_kwargs={"handle_unsuccessful": False},
            run_vasp_kwargs={
                **self._run_kwargs(),
                "job_type": JobType.NEB,
                "vasp_job_kwargs": {"output_file": "vasp.out", "stderr_file": "std_err.txt"},
            },
        )

    def static(self, name: str = "static") -> StaticMaker:
        """A single point (NSW = 0), with the same smearing as the relaxations."""
        return StaticMaker(
            name=name,
            input_set_generator=StudyStaticSetGenerator(
                **_generator_kwargs(self.settings, self.fmax, {"NSW": 0, "IBRION": -1})
            ),
            write_input_set_kwargs={"potcar_spec": self.potcar_spec},
            run_vasp_kwargs=self._run_kwargs(),
        )
