"""A stand-in ``vasp_std`` for tests: SYNTHETIC output, not VASP.

It reads INCAR, POSCAR, KPOINTS and POTCAR as VASP would, relaxes or evaluates the structure
with a cheap ASE calculator as the INCAR asks (NSW, IBRION, ISIF, EDIFFG, selective dynamics),
and writes vasprun.xml, OUTCAR, OSZICAR and CONTCAR in the formats that pymatgen, custodian and
atomate2 parse. Every file it writes says it is synthetic. Energies are those of the ASE
calculator; eigenvalues and the density of states are placeholders.

NEB mode (IMAGES = N > 0), as VASP with VTST: the head folder holds INCAR, KPOINTS and POTCAR,
and folders 00 ... N+1 hold the POSCARs of the path. ASE's NEB (improved tangent, climbing image
when LCLIMB, spring constant |SPRING| eV/A^2) relaxes the N intermediate images with FIRE to
max |F| <= -EDIFFG in at most NSW ionic steps; the fixed endpoints are evaluated for the tangent
but, as in VASP, get no output files. Each of 01 ... 0N gets vasprun.xml, OUTCAR, OSZICAR and
CONTCAR, whose forces are the NEB forces (VTST writes those to OUTCAR). A converged NEB writes
fewer than NSW ionic steps and an unconverged one exactly NSW, so pymatgen's ``converged_ionic``
reads the outcome as it does for VASP.

Environment
-----------
STANDIN_VASP_CALCULATOR
    ``emt`` (default) or ``chgnet``.
STANDIN_VASP_FAIL_FORMULA
    Fail, like a crashed VASP, for a POSCAR of this formula (e.g. ``Au8Cu23``).
STANDIN_VASP_LOG
    Append one line per run (formula, NSW, ISIF, and IMAGES in NEB mode) to this file.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from ase.constraints import FixSymmetry
from ase.filters import FrechetCellFilter
from ase.mep import NEB
from ase.optimize import BFGS, FIRE
from ase.units import GPa
from pymatgen.io.ase import AseAtomsAdaptor
from pymatgen.io.vasp import Incar, Kpoints, Poscar, Potcar

warnings.filterwarnings("ignore")  # stderr carries errors only, as custodian reads it

VERSION = "6.4.2 (SYNTHETIC: carrierflow test stand-in, not VASP)"
EV_A3_TO_KBAR = 1 / (0.1 * GPa)


def calculator():
    name = os.environ.get("STANDIN_VASP_CALCULATOR", "emt")
    if name == "chgnet":
        from chgnet.model.dynamics import CHGNetCalculator

        return CHGNetCalculator()
    from ase.calculators.emt import EMT

    return EMT()


def fail(message: str) -> None:
    print(message, file=sys.stderr)
    print(f" SYNTHETIC stand-in stopped: {message}")
    sys.exit(1)


def read_inputs():
    """INCAR, KPOINTS and POTCAR, and the POSCARs: the folder's, or in NEB mode (IMAGES = N)
    those of the image folders 00 ... N+1."""
    if not Path("INCAR").is_file():
        fail("no INCAR")
    incar = Incar.from_file("INCAR")
    images = int(incar.get("IMAGES", 0))
    folders = [Path(f"{i:02d}") for i in range(images + 2)] if images > 0 else [Path()]
    for required in [*(str(folder / "POSCAR") for folder in folders), "KPOINTS"]:
        if not Path(required).is_file():
            fail(f"no {required}")
    if not Path("POTCAR").is_file():
        fail("no POTCAR (the stand-in, like VASP, needs one POTCAR per species)")
    kpoints = Kpoints.from_file("KPOINTS")
    potcar = Potcar.from_file("POTCAR")
    elements = [symbol.split("_")[0] for symbol in potcar.symbols]
    poscars = [Poscar.from_file(f / "POSCAR", check_for_potcar=False) for f in folders]
    for poscar in poscars:
        if elements != poscar.site_symbols:
            fail(f"POTCAR species {elements} do not match POSCAR species {poscar.site_symbols}")
    return incar, poscars, kpoints, potcar


def ionic_step(atoms, forces) -> dict:
    """One ionic step of ``atoms`` as the writers take it."""
    stress = atoms.get_stress(voigt=False, apply_constraint=False)
    return {
        "energy": float(atoms.get_potential_energy()),
        "forces": forces,
        "stress": -stress * EV_A3_TO_KBAR,
        "cell": atoms.cell.array.copy(),
        "frac": atoms.get_scaled_positions(wrap=False).copy(),
    }


def run(incar, poscar):
    structure = poscar.structure
    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.calc = calculator()
    nsw = int(incar.get("NSW", 0))
    ibrion = int(incar.get("IBRION", -1 if nsw == 0 else 0))
    isif = int(incar.get("ISIF", 2))
    ediffg = float(incar.get("EDIFFG", -0.05))
    fmax = -ediffg if ediffg < 0 else 0.05
    steps = []

    def record():
        steps.append(ionic_step(atoms, atoms.get_forces()))

    if nsw == 0 or ibrion < 0:
        record()
        return atoms, steps, True
    if ibrion not in (1, 2, 3):
        fail(f"the stand-in relaxes with IBRION = 1, 2 or 3, got {ibrion}")
    target = atoms
    if isif == 3:
        atoms.set_constraint([*atoms.constraints, FixSymmetry(atoms)])
        target = FrechetCellFilter(atoms)
    elif isif != 2:
        fail(f"the stand-in supports ISIF = 2 or 3, got {isif}")
    optimizer = BFGS(target, logfile=None)
    optimizer.attach(record)
    converged = optimizer.run(fmax=fmax, steps=nsw - 1)
    return atoms, steps[:nsw], bool(converged)


def run_neb(incar, poscars):
    """The images of the path (endpoints included) after an NEB of the intermediate ones, the
    ionic steps of each intermediate image, and whether the NEB converged within NSW steps."""
    images = []
    for poscar in poscars:
        atoms = AseAtomsAdaptor.get_atoms(poscar.structure)
        atoms.calc = calculator()  # the endpoints too: their energies shape the tangents
        images.append(atoms)
    nsw = int(incar.get("NSW", 0))
    ibrion = int(incar.get("IBRION", -1 if nsw == 0 else 0))
    ediffg = float(incar.get("EDIFFG", -0.05))
    fmax = -ediffg if ediffg < 0 else 0.05
    if int(incar.get("ISIF", 2)) != 2:
        fail(f"the stand-in's NEB moves ions only (ISIF = 2), got {incar.get('ISIF')}")
    neb = NEB(
        images,
        k=abs(float(incar.get("SPRING", -5.0))),
        climb=bool(incar.get("LCLIMB", False)),
        method="improvedtangent",
    )
    inner = images[1:-1]
    steps = [[] for _ in inner]

    def record():
        forces = neb.get_forces().reshape(len(inner), -1, 3)
        for atoms, image_steps, image_forces in zip(inner, steps, forces, strict=True):
            image_steps.append(ionic_step(atoms, image_forces))

    if nsw == 0 or ibrion < 0:
        record()
        return images, steps, True
    if ibrion not in (1, 2, 3):
        fail(f"the stand-in relaxes with IBRION = 1, 2 or 3, got {ibrion}")
    optimizer = FIRE(neb, logfile=None)
    optimizer.attach(record)
    converged = optimizer.run(fmax=fmax, steps=nsw - 1)
    # NSW steps count as unconverged, as pymatgen reads a VASP run that used them all
    return images, steps, bool(converged) and len(steps[0]) < nsw


def band_count(nelect: float, natoms: int) -> int:
    return max(8, int(nelect / 2 + natoms / 2))


def varray(name: str, rows) -> str:
    body = "".join(f"   <v>{' '.join(f'{x:16.8f}' for x in row)} </v>\n" for row in rows)
    return f'  <varray name="{name}" >\n{body}  </varray>\n'


def structure_xml(cell, frac, name: str | None = None, selective=None) -> str:
    volume = abs(np.linalg.det(cell))
    rec = np.linalg.inv(cell).T
    head = f'<structure name="{name}" >' if name else "<structure>"
    out = f" {head}\n  <crystal>\n" + varray("basis", cell).replace("  <", "   <", 1)
    out += f'   <i name="volume">{volume:16.8f} </i>\n' + varray("rec_basis", rec)
    out += "  </crystal>\n" + varray("positions", frac)
    if selective is not None:
        rows = "".join(
            f'   <v type="logical">{" ".join("T" if f else "F" for f in row)} </v>\n'
            for row in selective
        )
        out += f'  <varray type="logical" name="selective" >\n{rows}  </varray>\n'
    return out + " </structure>\n"


def incar_value(value) -> tuple[str, str | None]:
    if isinstance(value, bool):
        return ("T" if value else "F", "logical")
    if isinstance(value, int):
        return (str(value), "int")
    if isinstance(value, float):
        return (f"{value:.8g}", None)
    return (str(value), "string")


def parameters_xml(incar, nelect: float, natoms: int) -> str:
    params = {
        "NELECT": float(nelect),
        "NBANDS": band_count(nelect, natoms),
        "NELM": int(incar.get("NELM", 60)),
        "ISPIN": int(incar.get("ISPIN", 1)),
        "NSW": int(incar.get("NSW", 0)),
        "IBRION": int(incar.get("IBRION", -1)),
        "ISIF": int(incar.get("ISIF", 2)),
        "EDIFF": float(incar.get("EDIFF", 1e-4)),
        "EDIFFG": float(incar.get("EDIFFG", -0.05)),
        "ENCUT": float(incar.get("ENCUT", 400.0)),
        "ISMEAR": int(incar.get("ISMEAR", 1)),
        "SIGMA": float(incar.get("SIGMA", 0.2)),
        "GGA": str(incar.get("GGA", "--")).upper(),
        "LHFCALC": False,
        "LUSE_VDW": False,
        "LDAU": False,
        "METAGGA": "--",
        "LREAL": bool(incar.get("LREAL", False)),
        "LORBIT": int(incar.get("LORBIT", 0)),
        "NEDOS": 301,
        "PREC": str(incar.get("PREC", "Normal")),
        "ALGO": str(incar.get("ALGO", "Normal")),
        "LASPH": bool(incar.get("LASPH", False)),
        "NKRED": 1,
        "LSORBIT": False,
        "LNONCOLLINEAR": False,
        "ENMAX": float(incar.get("ENCUT", 400.0)),
    }
    rows = []
    for key, value in params.items():
        text, kind = incar_value(value)
        type_attr = f' type="{kind}"' if kind else ""
        rows.append(f'  <i{type_attr} name="{key}">{text} </i>')
    return (
        ' <parameters>\n <separator name="synthetic" >\n'
        + "\n".join(rows)
        + ("\n </separator>\n </parameters>\n")
    )


def write_vasprun(incar, poscar, kpoints, potcar, steps, selective):
    structure = poscar.structure
    species = poscar.site_symbols
    counts = poscar.natoms
    zvals = [p.zval for p in potcar]
    nelect = sum(z * n for z, n in zip(zvals, counts, strict=True))
    natoms = len(structure)
    incar_rows = []
    for key, value in incar.items():
        text, kind = incar_value(
            value if not isinstance(value, list) else " ".join(map(str, value))
        )
        type_attr = f' type="{kind}"' if kind else ""
        incar_rows.append(f'  <i{type_attr} name="{key}">{text} </i>')
    atom_rows = "".join(
        f"    <rc><c>{el}</c><c>{i + 1}</c></rc>\n"
        for i, (el, n) in enumerate(zip(species, counts, strict=True))
        for _ in range(n)
    )
    type_rows = "".join(
        f"    <rc><c>{n}</c><c>{el}</c><c>1.0</c><c>{z:.8f}</c><c>  {p.header}</c></rc>\n"
        for el, n, z, p in zip(species, counts, zvals, potcar, strict=True)
    )
    mesh = kpoints.kpts[0]
    start = steps[0]
    out = ['<?xml version="1.0" encoding="ISO-8859-1"?>\n<modeling>\n']
    out.append(
        "<!-- SYNTHETIC: written by the carrierflow test stand-in for vasp_std; energies from "
        f"{os.environ.get('STANDIN_VASP_CALCULATOR', 'emt')}, eigenvalues and DOS placeholders "
        "-->\n"
    )
    out.append(
        " <generator>\n"
        '  <i name="program" type="string">vasp </i>\n'
        f'  <i name="version" type="string">{VERSION} </i>\n'
        '  <i name="subversion" type="string">synthetic </i>\n'
        '  <i name="platform" type="string">stand-in </i>\n'
        f'  <i name="date" type="string">{time.strftime("%Y %m %d")} </i>\n'
        f'  <i name="time" type="string">{time.strftime("%H:%M:%S")} </i>\n'
        " </generator>\n"
    )
    out.append(" <incar>\n" + "\n".join(incar_rows) + "\n </incar>\n")
    out.append(
        " <kpoints>\n"
        '  <generation param="Gamma">\n'
        f'   <v type="int" name="divisions">{" ".join(str(int(n)) for n in mesh)} </v>\n'
        '   <v name="usershift">0 0 0 </v>\n'
        "  </generation>\n"
        + varray("kpointlist", [[0.0, 0.0, 0.0]])
        + varray("weights", [[1.0]])
        + " </kpoints>\n"
    )
    out.append(parameters_xml(incar, nelect, natoms))
    out.append(
        " <atominfo>\n"
        f"  <atoms>{natoms} </atoms>\n  <types>{len(species)} </types>\n"
        '  <array name="atoms" >\n   <dimension dim="1">ion</dimension>\n'
        '   <field type="string">element</field>\n   <field type="int">atomtype</field>\n'
        f"   <set>\n{atom_rows}   </set>\n  </array>\n"
        '  <array name="atomtypes" >\n   <dimension dim="1">type</dimension>\n'
        '   <field type="int">atomspertype</field>\n   <field type="string">element</field>\n'
        "   <field>mass</field>\n   <field>valence</field>\n"
        '   <field type="string">pseudopotential</field>\n'
        f"   <set>\n{type_rows}   </set>\n  </array>\n"
        " </atominfo>\n"
    )
    out.append(structure_xml(start["cell"], start["frac"], "initialpos", selective))
    for step in steps:
        energy = step["energy"]
        energies = (
            "   <energy>\n"
            f'    <i name="e_fr_energy">{energy:16.8f} </i>\n'
            f'    <i name="e_wo_entrp">{energy:16.8f} </i>\n'
            f'    <i name="e_0_energy">{energy:16.8f} </i>\n'
            "   </energy>\n"
        )
        out.append(" <calculation>\n  <scstep>\n" + energies + "  </scstep>\n")
        out.append(structure_xml(step["cell"], step["frac"]))
        out.append(varray("forces", step["forces"]) + varray("stress", step["stress"]))
        out.append(energies.replace("   <", "  <"))
        out.append(" </calculation>\n")
    # placeholder eigenvalues and DOS: a half-filled free-electron-like band at Gamma
    nbands = band_count(nelect, natoms)
    efermi = 0.0
    bands = np.linspace(-5.0, 5.0, nbands)
    eig_rows = "".join(
        f"       <r>{e:12.4f} {1.0 if e < efermi else 0.0:8.4f} </r>\n" for e in bands
    )
    dos_grid = np.linspace(-10, 10, 21)
    dos_rows = "".join(
        f"       <r>{e:10.4f} {1.0:10.4f} {(e + 10) / 20 * nelect:10.4f} </r>\n" for e in dos_grid
    )
    out.insert(
        -1,
        "  <eigenvalues>\n   <array>\n"
        '    <dimension dim="1">band</dimension>\n    <dimension dim="2">kpoint</dimension>\n'
        '    <dimension dim="3">spin</dimension>\n    <field>eigene</field>\n'
        '    <field>occ</field>\n    <set>\n     <set comment="spin 1">\n'
        f'      <set comment="kpoint 1">\n{eig_rows}      </set>\n'
        "     </set>\n    </set>\n   </array>\n  </eigenvalues>\n"
        f'  <dos>\n   <i name="efermi">{efermi:12.8f} </i>\n   <total>\n    <array>\n'
        '     <dimension dim="1">gridpoints</dimension>\n'
        '     <dimension dim="2">spin</dimension>\n'
        "     <field>energy</field>\n     <field>total</field>\n     <field>integrated</field>\n"
        f'     <set>\n      <set comment="spin 1">\n{dos_rows}      </set>\n     </set>\n'
        "    </array>\n   </total>\n  </dos>\n",
    )
    last = steps[-1]
    out.append(structure_xml(last["cell"], last["frac"], "finalpos", selective))
    out.append("</modeling>\n")
    Path("vasprun.xml").write_text("".join(out))


def write_outcar(incar, poscar, steps, nbands: int, elapsed: float):
    lines = [
        f" vasp.{VERSION}",
        " SYNTHETIC OUTCAR written by the carrierflow test stand-in; not VASP output",
        f"   NIONS = {len(poscar.structure)}",
        f"   k-points           NKPTS =      1   k-points in BZ     NKDIM =      1"
        f"   number of bands    NBANDS= {nbands:6d}",
        "   total plane-waves  NPLWV =   1000",
        f"   IBRION = {int(incar.get('IBRION', -1)):6d}    ionic relax",
        f"   ISPIN  = {int(incar.get('ISPIN', 1)):6d}    spin polarized calculation?",
        " E-fermi :   0.0000     XC(G=0):  -1.0000     alpha+bet : -1.0000",
    ]
    for step in steps:
        energy = step["energy"]
        lines += [
            "  FREE ENERGIE OF THE ION-ELECTRON SYSTEM (eV)",
            "  ---------------------------------------------------",
            f"  free  energy   TOTEN  = {energy:18.8f} eV",
            "",
            f"  energy  without entropy={energy:18.8f}  energy(sigma->0) ={energy:18.8f}",
            "  EENTRO =         0.00000000",
            "  total drift:                                0.000000      0.000000      0.000000",
        ]
    lines += [
        "",
        " General timing and accounting informations for this job:",
        " ========================================================",
        "",
        f"                  Total CPU time used (sec):    {elapsed:10.3f}",
        f"                            User time (sec):    {elapsed:10.3f}",
        "                          System time (sec):        0.000",
        f"                         Elapsed time (sec):    {elapsed:10.3f}",
        "",
        "                   Maximum memory used (kb):       1000.",
        "                   Average memory used (kb):          N/A",
        "",
        "                          Minor page faults:            0",
        "                          Major page faults:            0",
        "                 Voluntary context switches:            0",
    ]
    Path("OUTCAR").write_text("\n".join(lines) + "\n")


def write_oszicar(steps):
    lines = []
    for number, step in enumerate(steps, start=1):
        e = step["energy"]
        lines.append(f"DAV:   1    {e:.8E}    {e:.5E}   -0.10000E-06    10   0.100E-06")
        lines.append(f"{number:4d} F= {e:.8E} E0= {e:.8E}  d E =0.000000E+00")
    Path("OSZICAR").write_text("\n".join(lines) + "\n")


def write_outputs(incar, poscar, kpoints, potcar, atoms, steps, started: float) -> None:
    """CONTCAR, vasprun.xml, OUTCAR and OSZICAR of one calculation, in the current folder."""
    formula = poscar.structure.composition.formula.replace(" ", "")
    selective = poscar.selective_dynamics
    structure = AseAtomsAdaptor.get_structure(atoms)
    final = Poscar(structure, comment=f"{formula} SYNTHETIC", selective_dynamics=selective)
    final.write_file("CONTCAR")
    write_vasprun(incar, poscar, kpoints, potcar, steps, selective)
    nelect = sum(p.zval * n for p, n in zip(potcar, poscar.natoms, strict=True))
    nbands = band_count(nelect, len(poscar.structure))
    write_outcar(incar, poscar, steps, nbands, time.perf_counter() - started)
    write_oszicar(steps)


def main() -> None:
    started = time.perf_counter()
    print(f" running SYNTHETIC vasp stand-in {VERSION}")
    incar, poscars, kpoints, potcar = read_inputs()
    formula = poscars[0].structure.composition.formula.replace(" ", "")
    images = int(incar.get("IMAGES", 0))
    log = os.environ.get("STANDIN_VASP_LOG")
    if log:
        line = f"{formula} NSW={incar.get('NSW', 0)} ISIF={incar.get('ISIF', 2)}"
        with open(log, "a") as handle:
            handle.write(line + (f" IMAGES={images}\n" if images > 0 else "\n"))
    if formula == os.environ.get("STANDIN_VASP_FAIL_FORMULA"):
        fail(f"synthetic failure requested for {formula}")
    if images <= 0:
        [poscar] = poscars
        atoms, steps, _ = run(incar, poscar)
        write_outputs(incar, poscar, kpoints, potcar, atoms, steps, started)
        energy = steps[-1]["energy"]
        print(f" SYNTHETIC run finished: {len(steps)} ionic steps, E = {energy:.6f} eV")
        return
    path, steps, converged = run_neb(incar, poscars)
    for number, (poscar, atoms, image_steps) in enumerate(
        zip(poscars[1:-1], path[1:-1], steps, strict=True), start=1
    ):
        with contextlib.chdir(f"{number:02d}"):
            write_outputs(incar, poscar, kpoints, potcar, atoms, image_steps, started)
    start = path[0].get_potential_energy()
    relative = ", ".join(f"{s[-1]['energy'] - start:.4f}" for s in steps)
    print(
        f" SYNTHETIC NEB finished: {images} images, {len(steps[0])} ionic steps, "
        f"{'converged' if converged else 'not converged'}, E - E(00) = {relative} eV"
    )


if __name__ == "__main__":
    main()
