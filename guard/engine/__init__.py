"""Engines: the protocol the guard talks to, its value types, and the vLLM versions it supports."""

from guard.engine.base import (
    Completion,
    Engine,
    GenerationResult,
    ModelInfo,
    PathUpdate,
    Prompt,
    SampleSpec,
    ScoreItem,
    ScoreResult,
)
from guard.engine.versions import SUPPORTED_VLLM
from guard.errors import EngineError

__all__ = [
    "SUPPORTED_VLLM",
    "Completion",
    "Engine",
    "EngineError",
    "GenerationResult",
    "ModelInfo",
    "PathUpdate",
    "Prompt",
    "SampleSpec",
    "ScoreItem",
    "ScoreResult",
]
