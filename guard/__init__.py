"""trace-guard core: a pure, protobuf-free pipeline that guards a model's reasoning answers."""

__version__ = "0.1.0"

from guard.errors import (
    DeadlineExceededError,
    EngineError,
    EngineNotReadyError,
    GuardError,
    InvalidArgumentError,
    ResourceExhaustedError,
)
from guard.params import Defaults, GuardParams, ImageInput, Limits, Mode

__all__ = [
    "DeadlineExceededError",
    "Defaults",
    "EngineError",
    "EngineNotReadyError",
    "GuardError",
    "GuardParams",
    "ImageInput",
    "InvalidArgumentError",
    "Limits",
    "Mode",
    "ResourceExhaustedError",
    "__version__",
]
