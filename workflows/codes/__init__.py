"""The codes carrierflow runs, one module each, in one registry (``CODES``, by name).

Adding a potential is one module: a :class:`~carrierflow.workflows.codes.base.Code` subclass
(for an atomate2 force field, a :class:`~carrierflow.workflows.codes.ase.ForceFieldCode` with its
name and calculator arguments) decorated with ``@register`` and imported below.
"""

from carrierflow.workflows.codes import chgnet, emt, gpaw, mace, sevennet, vasp  # noqa: F401
from carrierflow.workflows.codes.base import CODES, TASKS, CalculatorError, Code, register

DFT_CALCULATORS = frozenset(name for name, code in CODES.items() if code.is_dft)
# the screen's code when none is named
DEFAULT_CODE = sevennet.SevenNet.name

__all__ = [
    "CODES",
    "DEFAULT_CODE",
    "DFT_CALCULATORS",
    "TASKS",
    "CalculatorError",
    "Code",
    "register",
]
