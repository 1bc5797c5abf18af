"""CHGNet with its shipped weights."""

from __future__ import annotations

from carrierflow.workflows.codes.ase import ForceFieldCode
from carrierflow.workflows.codes.base import register


@register
class Chgnet(ForceFieldCode):
    name = "chgnet"
    package = "chgnet"
    module = "chgnet"
    force_field = "CHGNet"
