"""A/B arm assignment: a stable hash of the client's key splits requests between guarded and raw."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

from guard.errors import InvalidArgumentError
from guard.params import Mode

MAX_AB_KEY_CHARS = 256


class Arm(enum.Enum):
    # The guarded answer is returned.
    GUARD = "guard"
    # One raw sample is returned (the A/B baseline).
    RAW = "raw"
    # The raw answer is returned at raw latency; the guard runs on the same request in the
    # background and both outcomes go to the decision log.
    SHADOW = "shadow"

    @property
    def mode(self) -> Mode:
        """What the caller-facing pipeline run does in this arm."""
        return Mode.GUARD if self is Arm.GUARD else Mode.RAW


class Assignment(enum.Enum):
    SPLIT = "split"        # by hash of the A/B key
    OVERRIDE = "override"  # the request named its arm (or mode)


@dataclass(frozen=True)
class ArmSplitter:
    """`guard_fraction` of the keys go to the guarded arm; the rest to raw, or shadow if enabled.

    The same key always lands in the same arm (for a given fraction), so a user's requests stay
    in one arm for the whole experiment; raising the fraction only moves keys from raw to guard.
    """

    guard_fraction: float = 1.0
    shadow: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.guard_fraction <= 1.0:
            raise ValueError(f"guard_fraction must be in [0, 1], got {self.guard_fraction}")

    @property
    def other_arm(self) -> Arm:
        return Arm.SHADOW if self.shadow else Arm.RAW

    def assign(self, key: str, override: Arm | None = None) -> tuple[Arm, Assignment]:
        if override is not None:
            return override, Assignment.OVERRIDE
        return (Arm.GUARD if bucket(key) < self.guard_fraction else self.other_arm), Assignment.SPLIT


def bucket(key: str) -> float:
    """A uniform number in [0, 1) fixed by the key."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def check_ab_key(key: str) -> str:
    if len(key) > MAX_AB_KEY_CHARS:
        raise InvalidArgumentError("ab_key", f"is longer than {MAX_AB_KEY_CHARS} characters")
    if not key.isprintable():
        raise InvalidArgumentError("ab_key", "must be printable")
    return key
