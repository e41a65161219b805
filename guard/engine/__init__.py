"""Engines: the protocol the guard talks to, and its implementations."""

from guard.engine.base import (
    Completion,
    Engine,
    EngineError,
    GenerationResult,
    ModelInfo,
    Prompt,
    SampleSpec,
    ScoreItem,
    ScoreResult,
)

__all__ = [
    "Completion",
    "Engine",
    "EngineError",
    "GenerationResult",
    "ModelInfo",
    "Prompt",
    "SampleSpec",
    "ScoreItem",
    "ScoreResult",
]
