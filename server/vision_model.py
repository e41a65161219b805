"""Builds the tiny plumbing vision-language model (Idefics3 on SmolLM2 + a random vision tower) once, locally.

No vision-model weights can be downloaded where trace-guard is developed and tested, so this module
assembles one from what is here: the Idefics3 architecture (the one SmolVLM uses, which vLLM serves
on CPU) with the default SmolLM2-135M-Instruct weights as its text model and a small, randomly
initialised SigLIP-style vision tower and connector (seeded: every build gives the same weights).

**It is a plumbing model.** The vision tower has never seen an image, so its answers about images
are meaningless; it exists so tests and demos exercise the real multimodal code path (image
preprocessing, placeholder expansion, multimodal prefix caching, batching of requests with
different images). To guard a real VLM, point `trace-guard serve --model DIR` at a real checkpoint
(e.g. Qwen2.5-VL) on a GPU machine.

    python -m server.vision_model [--out DIR] [--text-model DIR] [--force]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

from server.model_store import MANIFEST_NAME, ensure_default_model, models_dir, publish_model

logger = logging.getLogger(__name__)

VISION_MODEL_NAME = "trace-guard-tiny-vlm"
# Bump when the recipe below changes: a cached build of another recipe is rebuilt.
RECIPE_VERSION = 2
SEED = 1234
# One 256x256 tile per image, no splitting: 16x16 patches of 16 px, pixel-shuffled by 2 -> 64 image
# tokens per image, cheap on CPU.
IMAGE_SIZE = 256
PATCH_SIZE = 16
SCALE_FACTOR = 2
VISION_HIDDEN_SIZE = 128
VISION_INTERMEDIATE_SIZE = 256
VISION_LAYERS = 2
VISION_HEADS = 2

IMAGE_TOKEN = "<image>"
FAKE_IMAGE_TOKEN = "<fake_token_around_image>"
GLOBAL_IMAGE_TOKEN = "<global-img>"
END_OF_UTTERANCE_TOKEN = "<end_of_utterance>"
# Tile-position tokens of Idefics3's image splitting; unused with one tile, added so the processor
# finds every token it looks up.
GRID_TOKENS = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]

# SmolLM2's ChatML template (the text model was tuned on it), with {"type": "image"} content parts
# rendered as the <image> placeholder that the processor expands.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if loop.first and messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for part in message['content'] %}"
    "{%- if part['type'] == 'image' %}{{- '<image>' }}"
    "{%- elif part['type'] == 'text' %}{{- part['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def default_vision_model_dir() -> Path:
    return models_dir() / VISION_MODEL_NAME


def _recipe() -> dict:
    return {
        "version": RECIPE_VERSION,
        "seed": SEED,
        "architecture": "Idefics3ForConditionalGeneration",
        "image_size": IMAGE_SIZE,
        "patch_size": PATCH_SIZE,
        "scale_factor": SCALE_FACTOR,
        "vision_hidden_size": VISION_HIDDEN_SIZE,
        "vision_intermediate_size": VISION_INTERMEDIATE_SIZE,
        "vision_layers": VISION_LAYERS,
        "vision_heads": VISION_HEADS,
    }


def is_built(model_dir: Path) -> bool:
    """True when `model_dir` holds a finished build of this recipe (the manifest is written last)."""
    manifest_path = model_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        return False
    try:
        manifest = json.loads(manifest_path.read_text())
    except ValueError:
        return False
    if manifest.get("recipe") != _recipe():
        return False
    return all((model_dir / name).is_file() for name in manifest.get("files", {}))


def _image_processor_class():
    try:
        # transformers >= 5: the NumPy/PIL image processor (the default one needs torchvision).
        from transformers import Idefics3ImageProcessorPil as ImageProcessor
    except ImportError:
        from transformers import Idefics3ImageProcessor as ImageProcessor
    return ImageProcessor


def _tokenizer(text_dir: Path):
    """SmolLM2's tokenizer plus Idefics3's image tokens, with the image-aware chat template."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(text_dir)
    tokenizer.add_special_tokens(
        {"additional_special_tokens": [FAKE_IMAGE_TOKEN, IMAGE_TOKEN, END_OF_UTTERANCE_TOKEN, GLOBAL_IMAGE_TOKEN,
                                       *GRID_TOKENS]}
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _model_config(text_dir: Path, tokenizer):
    """The Idefics3 config around SmolLM2's (its vocabulary grown by the added tokens); and the text vocab size."""
    from transformers import Idefics3Config, LlamaConfig

    text_config = LlamaConfig.from_pretrained(text_dir)
    text_vocab = text_config.vocab_size
    text_config.vocab_size = len(tokenizer)
    config = Idefics3Config(
        text_config=text_config.to_dict(),
        vision_config={
            "hidden_size": VISION_HIDDEN_SIZE,
            "intermediate_size": VISION_INTERMEDIATE_SIZE,
            "num_hidden_layers": VISION_LAYERS,
            "num_attention_heads": VISION_HEADS,
            "image_size": IMAGE_SIZE,
            "patch_size": PATCH_SIZE,
        },
        scale_factor=SCALE_FACTOR,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        tie_word_embeddings=text_config.tie_word_embeddings,
        pad_token_id=text_config.pad_token_id,
        bos_token_id=text_config.bos_token_id,
        eos_token_id=text_config.eos_token_id,
    )
    return config, text_vocab


def _load_text_weights(model, text_dir: Path, vocab_size: int, text_vocab: int):
    """SmolLM2's weights into the text model; returns its (grown) token embedding matrix.

    The embedding rows of the added tokens start at the mean embedding so they look like ordinary
    tokens to the layers above.
    """
    import torch
    from safetensors.torch import load_file

    state = {k.removeprefix("model."): v for k, v in load_file(text_dir / "model.safetensors").items()
             if k.startswith("model.")}
    embed = state["embed_tokens.weight"]
    extra = vocab_size - text_vocab
    state["embed_tokens.weight"] = torch.cat([embed, embed.mean(0, keepdim=True).repeat(extra, 1)])
    missing, unexpected = model.model.text_model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"text weights do not fit: missing={missing} unexpected={unexpected}")
    return embed


def _scale_connector(model, embed) -> None:
    """Scale the connector so image features have the per-element spread of SmolLM2's token
    embeddings (the vision tower ends in a LayerNorm, unit variance); bigger ones swamp the text."""
    import torch

    proj = model.model.connector.modality_projection.proj
    with torch.no_grad():
        proj.weight.normal_(0.0, float(embed.std()) / proj.in_features**0.5)


def _processor(image_processor_class, tokenizer):
    from transformers import Idefics3Processor

    image_processor = image_processor_class(
        do_image_splitting=False,
        size={"longest_edge": IMAGE_SIZE},
        max_image_size={"longest_edge": IMAGE_SIZE},
    )
    image_seq_len = (IMAGE_SIZE // PATCH_SIZE) ** 2 // SCALE_FACTOR**2
    return Idefics3Processor(image_processor, tokenizer, image_seq_len=image_seq_len, chat_template=CHAT_TEMPLATE)


def _name_pil_image_processor(out_dir: Path, image_processor_class) -> None:
    """Saved under the generic name, the processor loads the torchvision backend when it is installed
    and warns about falling back to PIL when it is not (the CPU install removes torchvision): name the
    PIL one, which works everywhere, so every engine start loads it quietly."""
    processor_config = out_dir / "processor_config.json"
    config_json = json.loads(processor_config.read_text())
    if config_json.get("image_processor", {}).get("image_processor_type") == "Idefics3ImageProcessor" and (
        image_processor_class.__name__ == "Idefics3ImageProcessorPil"
    ):
        config_json["image_processor"]["image_processor_type"] = image_processor_class.__name__
        processor_config.write_text(json.dumps(config_json, indent=2) + "\n")


def _build(text_dir: Path, out_dir: Path) -> None:
    # Imported here (and in the helpers): building is a one-off set-up step; the server never needs
    # these at run time.
    import torch
    from transformers import Idefics3ForConditionalGeneration

    image_processor_class = _image_processor_class()
    torch.manual_seed(SEED)
    tokenizer = _tokenizer(text_dir)
    config, text_vocab = _model_config(text_dir, tokenizer)
    model = Idefics3ForConditionalGeneration(config).eval()
    embed = _load_text_weights(model, text_dir, len(tokenizer), text_vocab)
    _scale_connector(model, embed)
    model.tie_weights()
    processor = _processor(image_processor_class, tokenizer)

    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    _name_pil_image_processor(out_dir, image_processor_class)
    gen = text_dir / "generation_config.json"
    if gen.is_file():
        shutil.copy(gen, out_dir / "generation_config.json")


def ensure_vision_model(target: Path | None = None, *, text_model: Path | None = None, force: bool = False) -> Path:
    """Return the built plumbing VLM directory, building it (about 15 s on 2 CPU cores) if missing or stale."""
    target = target or default_vision_model_dir()
    if not force and is_built(target):
        return target
    text_dir = text_model or ensure_default_model()
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info("building the plumbing vision model at %s from %s", target, text_dir)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        staged = Path(tmp) / "model"
        _build(Path(text_dir), staged)
        publish_model(staged, target, {
            "recipe": _recipe(),
            "text_model": Path(text_dir).name,
            "note": "plumbing model: random vision tower, answers about images are meaningless",
        })
    logger.info("vision model ready at %s", target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.vision_model", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help=f"target directory (default: models/{VISION_MODEL_NAME})")
    parser.add_argument("--text-model", help="text model directory (default: the converted SmolLM2)")
    parser.add_argument("--force", action="store_true", help="rebuild even if a build is cached")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = ensure_vision_model(
        Path(args.out) if args.out else None,
        text_model=Path(args.text_model) if args.text_model else None,
        force=args.force,
    )
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
