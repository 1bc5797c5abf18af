"""Stand-ins for codes that cannot run here: VASP (``vasp_std.py``) and its POTCARs."""

from __future__ import annotations

from pathlib import Path

STANDIN = Path(__file__).parent / "vasp_std.py"
FAKE_POTCARS = {"Li": "Li_sv", "In": "In_d", "Cu": "Cu_pv", "Au": "Au"}


def write_fake_potcars(directory: Path) -> Path:
    """POTCAR files with a valid header and no physics: enough for pymatgen to write POTCARs
    and for the stand-in VASP to read their species. FAKE, for tests only."""
    for element, symbol in FAKE_POTCARS.items():
        folder = directory / "POT_GGA_PAW_PBE" / symbol
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "POTCAR").write_text(
            f"  PAW_PBE {symbol} FAKE\n 1.0\n parameters from PSCTR are:\n"
            f"   VRHFIN ={element}: FAKE POTCAR for carrierflow tests\n   LEXCH  = PE\n"
            f"   TITEL  = PAW_PBE {symbol} FAKE\n"
            "   POMASS =    1.000; ZVAL   =    1.000    mass and valenz\n"
            "   ENMAX  =  400.000; ENMIN  =  300.000 eV\n"
            " END of PSCTR-controll parameters\n local part\n  0.1 0.2 0.3\n"
            " End of Dataset\n"
        )
    return directory
