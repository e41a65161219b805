"""The plumbing VLM builder, on a tiny random text model: loadable processor, placeholders, caching, reproducibility."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server import vision_model
from server.model_store import MANIFEST_NAME


@pytest.fixture(scope="module")
def tiny_text_model(tmp_path_factory) -> Path:
    """A 2-layer Llama with a word-level ChatML tokenizer, saved like the converted SmolLM2."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny-text")
    words = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "system", "user", "assistant", "How", "many", "?", "\n"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", unk_token="<|endoftext|>",
        pad_token="<|im_end|>",
    )
    tokenizer.save_pretrained(out)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(words), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True,
                         bos_token_id=1, eos_token_id=2, pad_token_id=2)
    LlamaForCausalLM(config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def built(tiny_text_model, tmp_path_factory) -> Path:
    return vision_model.ensure_vision_model(tmp_path_factory.mktemp("vlm") / "m", text_model=tiny_text_model)


def test_the_build_is_an_idefics3_model_with_one_small_tile_per_image(built):
    config = json.loads((built / "config.json").read_text())
    assert config["architectures"] == ["Idefics3ForConditionalGeneration"]
    assert config["vision_config"]["image_size"] == vision_model.IMAGE_SIZE
    manifest = json.loads((built / MANIFEST_NAME).read_text())
    assert "plumbing" in manifest["note"] and manifest["recipe"]["seed"] == vision_model.SEED
    assert vision_model.is_built(built)


def test_processor_expands_the_chat_templates_image_part(built):
    from PIL import Image
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(built)
    tokenizer = processor.tokenizer
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many ?"}]}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert "<image>How many ?" in text and text.endswith("<|im_start|>assistant\n")
    # Special tokens are single tokens, so vLLM's placeholder expansion and prefix hashing line up.
    for token in (vision_model.IMAGE_TOKEN, vision_model.FAKE_IMAGE_TOKEN, vision_model.GLOBAL_IMAGE_TOKEN):
        assert len(tokenizer.encode(token, add_special_tokens=False)) == 1
    # Any size of image becomes one tile of 64 image tokens (no splitting).
    out = processor(text=text, images=[Image.new("RGB", (700, 90), "red")], return_tensors="pt")
    image_id = tokenizer.convert_tokens_to_ids(vision_model.IMAGE_TOKEN)
    assert int((out["input_ids"] == image_id).sum()) == 64
    assert tuple(out["pixel_values"].shape[-2:]) == (vision_model.IMAGE_SIZE, vision_model.IMAGE_SIZE)


def test_cached_build_is_reused_and_rebuilds_are_identical(built, tiny_text_model, tmp_path):
    before = (built / "model.safetensors").stat().st_mtime_ns
    assert vision_model.ensure_vision_model(built, text_model=tiny_text_model) == built
    assert (built / "model.safetensors").stat().st_mtime_ns == before
    again = vision_model.ensure_vision_model(tmp_path / "again", text_model=tiny_text_model)
    files = json.loads((built / MANIFEST_NAME).read_text())["files"]
    assert json.loads((again / MANIFEST_NAME).read_text())["files"] == files


def test_a_build_of_another_recipe_is_not_reused(built, monkeypatch):
    monkeypatch.setattr(vision_model, "RECIPE_VERSION", vision_model.RECIPE_VERSION + 1)
    assert not vision_model.is_built(built)


def test_cli_subcommand_is_wired():
    from server.cli import build_parser

    args = build_parser().parse_args(["build-vision-model", "--out", "/tmp/x", "--force"])
    assert args.out == "/tmp/x" and args.force
