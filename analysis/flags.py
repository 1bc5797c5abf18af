"""Flags: what a calculation's result should not be read without, as a code and a sentence.

Decisions (which defect the refinement takes, whether a hop's barrier counts, whether two
candidates share a state) test the code; the text is for people and may be reworded freely.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class FlagCode(StrEnum):
    """Every kind of flag carrierflow raises."""

    # a relaxed defect
    NOT_CONVERGED = "not-converged"
    OFF_SITE = "off-site"  # the defect centre ended on no candidate site
    CHANGED_SITE = "changed-site"  # vacancy refilled, or interstitial relaxed into another site
    HOST_RECONSTRUCTION = "host-reconstruction"
    LOCAL_RANKING = "local-ranking"  # ranked by the relaxation with the far field fixed
    LOCAL_NOT_NEEDED = "local-not-needed"  # a reconstruction already above its kind's lowest
    SHARED_STATE = "shared-state"  # same final state as an earlier candidate
    COLLAPSED = "collapsed"  # atoms ran together: a hole in the model, not a state; never ranked
    # a hop
    END_NOT_CONVERGED = "end-not-converged"
    END_LEFT_SITE = "end-left-site"
    DELOCALIZED = "delocalized"
    NEB_NOT_CONVERGED = "neb-not-converged"
    ENDPOINT_MAXIMUM = "endpoint-maximum"
    ANOTHER_MINIMUM = "another-minimum"  # an image below both endpoints
    INTERMEDIATE_MINIMUM = "intermediate-minimum"
    ASYMMETRIC_ENDPOINTS = "asymmetric-endpoints"  # a symmetric hop's ends differ
    # a carrier's hops
    NO_HOPS = "no-hops"
    HOPS_FROM_ANOTHER = "hops-from-another"  # the lowest defect could not start hops
    HOPS_FROM_RELAXED_STATE = "hops-from-relaxed-state"
    NO_HOP_COUNTS = "no-hop-counts"


class Flag(BaseModel):
    """One flag: a code that decisions test and a sentence that people read."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: FlagCode
    text: str

    def __str__(self) -> str:
        return self.text


def has(flags: list[Flag], *codes: FlagCode) -> bool:
    """Whether any flag carries one of these codes."""
    return any(flag.code in codes for flag in flags)


# how results of schema 3 and before worded a flag that decisions read back
_LEGACY_OPENINGS = {FlagCode.SHARED_STATE: "same relaxed energy as"}


def codes(flags: list) -> set[FlagCode | None]:
    """The codes of flags as a results document holds them (dicts); in documents of schema 3
    and before, which held the sentences alone, a flag's code is read from its opening words
    where a decision needs it, else None."""
    out = set()
    for flag in flags:
        if isinstance(flag, dict):
            out.add(FlagCode(flag["code"]))
        else:
            legacy = [c for c, opening in _LEGACY_OPENINGS.items() if str(flag).startswith(opening)]
            out.add(legacy[0] if legacy else None)
    return out


def texts(flags: list) -> list[str]:
    """The sentences of flags, as a report prints them (results of schema 3 and before held the
    sentences alone)."""
    return [flag["text"] if isinstance(flag, dict) else str(flag) for flag in flags]
