"""Image decoding and checks, and images reaching every engine call of a guarded request."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import pytest

from guard.engine import Completion, GenerationResult
from guard.errors import InvalidArgumentError
from guard.images import decode_images
from guard.params import GuardParams, ImageInput, Limits
from guard.pipeline import GuardPipeline
from guard.prompts import PROBE_INSTRUCTION
from tests.scripted_engine import ScriptedEngine, ars_json


def encode(fmt: str = "PNG", size: tuple[int, int] = (16, 8), mode: str = "RGB") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, size, "red" if mode != "L" else 128).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize(
    "data, mime",
    [
        (encode("PNG"), "image/png"),
        (encode("PNG", mode="RGBA"), "image/png"),
        (encode("PNG", mode="L"), " IMAGE/PNG "),
        (encode("JPEG"), "image/jpeg"),
        (encode("JPEG"), "image/jpg"),
        (encode("WEBP"), "image/webp"),
        (encode("GIF"), "image/gif"),
    ],
)
def test_supported_images_decode_to_rgb(data, mime):
    (img,) = decode_images([ImageInput(data, mime)], Limits())
    assert img.mode == "RGB" and img.size == (16, 8)


@pytest.mark.parametrize(
    "images, limits, field, says",
    [
        ([ImageInput(b"not an image", "image/png")], Limits(), "images[0].data", "cannot be decoded"),
        ([ImageInput(encode()[:40], "image/png")], Limits(), "images[0].data", "cannot be decoded"),
        ([ImageInput(encode(), "image/png"), ImageInput(encode()[:-20] + b"\0" * 20, "image/png")], Limits(),
         "images[1].data", "cannot be decoded"),
        ([ImageInput(encode(), "image/tiff")], Limits(), "images[0].mime_type", "unsupported"),
        ([ImageInput(encode(), "image/jpeg")], Limits(), "images[0].mime_type", "the data is PNG"),
        ([ImageInput(encode(size=(20, 20)), "image/png")], Limits(max_image_pixels=399), "images[0].data",
         "400 pixels, the limit is 399"),
    ],
    ids=["garbage", "header-only", "truncated-second", "unsupported-mime", "mime-mismatch", "too-many-pixels"],
)
def test_bad_images_name_the_field(images, limits, field, says):
    with pytest.raises(InvalidArgumentError) as err:
        decode_images(images, limits)
    assert err.value.field == field
    assert says in str(err.value)


def test_exif_rotation_is_applied():
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    Image.new("RGB", (40, 10), "red").save(buf, format="JPEG", exif=exif)
    (img,) = decode_images([ImageInput(buf.getvalue(), "image/jpeg")], Limits())
    assert img.size == (10, 40)


@pytest.mark.parametrize("fmt, mime", [("PNG", "image/png"), ("WEBP", "image/webp"), ("GIF", "image/gif")])
def test_transparent_pixels_become_white(fmt, mime):
    from PIL import Image

    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    img.putpixel((0, 0), (255, 0, 0, 255))
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    (rgb,) = decode_images([ImageInput(buf.getvalue(), mime)], Limits())
    assert rgb.mode == "RGB"
    assert rgb.getpixel((3, 3)) == (255, 255, 255)
    assert rgb.getpixel((0, 0)) == (255, 0, 0)


def test_pixel_limit_is_checked_before_decoding_the_pixels():
    """A decompression bomb (tiny file, huge canvas) is refused from its header, before Pillow loads it."""
    data = encode(size=(6000, 6000), mode="L")
    assert len(data) < 200_000
    with pytest.raises(InvalidArgumentError) as err:
        decode_images([ImageInput(data, "image/png")], Limits(max_image_pixels=4096 * 4096))
    assert err.value.field == "images[0].data" and "36000000 pixels" in str(err.value)


@pytest.mark.parametrize(
    "count, nbytes, field",
    [(5, 10, "images"), (1, 8 * 1024 * 1024 + 1, "images[0].data"), (1, 0, "images[0].data")],
)
def test_params_check_count_and_bytes(count, nbytes, field):
    with pytest.raises(InvalidArgumentError) as err:
        GuardParams(question="q?", images=tuple(ImageInput(b"x" * nbytes, "image/png") for _ in range(count)))
    assert err.value.field == field


@dataclass
class ImageRecordingEngine(ScriptedEngine):
    """A vision engine that records the images of every engine call; probes (chat-style prompts) are
    answered with the last word of the probed path, so paths disagree and scoring runs."""

    seen: list[tuple[str, tuple]] = field(default_factory=list)

    async def generate(self, prompt, spec, request_id):
        if spec.json_schema is None and PROBE_INSTRUCTION.split("{")[0] in prompt.text:
            self.seen.append(("probe", prompt.images))
            path = prompt.text.split("<assistant>")[1].split("\n<user>")[0]
            answer = path.split()[-1]
            return GenerationResult([Completion(answer, 1, "stop", [-0.1])], prompt_tokens=len(prompt.text.split()))
        self.seen.append(("ars" if spec.json_schema is not None else "sample", prompt.images))
        return await super().generate(prompt, spec, request_id)

    async def score(self, items, request_id):
        self.seen.extend(("score", item.context.images) for item in items)
        return await super().score(items, request_id)


@pytest.mark.parametrize("probe_format", ["legacy", "continue"])
async def test_images_reach_sampling_ars_probes_and_scoring(probe_format):
    from guard.pipeline import GuardConfig
    from guard.prompts import ProbeFormat

    engine = ImageRecordingEngine(
        paths=[" 2 + 1 = 3.\nAnswer: 3", " 2 + 1 = 3.\nAnswer: 3", " 2 + 2 = 4.\nAnswer: 4"],
        ars=ars_json("How many squares are there in all?"), accepts_images=True,
    )
    # Three paths against one: the sub-question has a mode, so full scoring has something to weigh.
    params = GuardParams(question="How many red squares?", images=(ImageInput(encode(), "image/png"),), num_paths=4,
                         score_mode="full")
    result = await GuardPipeline(engine, GuardConfig(probe_format=ProbeFormat(probe_format))).run(params)
    assert result.sub_questions and result.usage["score"].prompt_tokens > 0
    kinds = {kind for kind, _ in engine.seen}
    assert kinds == {"sample", "ars", "probe", "score"}
    # The request's image, decoded once: the same object in every call, so the engine's multimodal
    # prefix cache sees one image.
    first = engine.seen[0][1]
    assert len(first) == 1 and first[0].size == (16, 8)
    assert all(images == first and images[0] is first[0] for _, images in engine.seen)


def test_pillows_own_bomb_guard_is_reported_as_too_many_pixels(monkeypatch):
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow refuses > 2x this in open()
    with pytest.raises(InvalidArgumentError) as err:
        decode_images([ImageInput(encode(size=(100, 100)), "image/png")], Limits(max_image_pixels=10**9))
    assert err.value.field == "images[0].data" and "more pixels than the limit" in str(err.value)
