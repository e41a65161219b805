"""Seeded Pillow scenes for the visual benchmark: shapes and number cards, their layout and rendering."""

from __future__ import annotations

import functools
import io
import random
from dataclasses import dataclass

IMAGE_SIZE_PX = 320
GAP_PX = 6  # least space between two objects, and between an object and the border
BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)
CARD_OUTLINE = (150, 150, 150)
# Flat colours, drawn without anti-aliasing: every pixel of a shape is exactly its colour.
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 160, 60),
    "blue": (30, 70, 220),
    "yellow": (235, 190, 0),
    "purple": (140, 50, 180),
}
SHAPES = ("square", "circle", "triangle")
# Half the side of the square box a shape fills.
HALF_SIDE_PX = {"small": 12, "medium": 16, "large": 24}
SCENE_SIZES = ("small", "large")  # counting tasks use medium only
NUMBER_HALF_SIDE_PX = 32
NUMBER_FONT_PX = 40
_MAX_PLACEMENT_TRIES = 5000


@dataclass(frozen=True)
class Shape:
    shape: str
    colour: str
    size: str
    x: int  # centre, pixels
    y: int
    half_px: int  # the shape fills (square) or is inscribed in (circle, triangle) this box

    @property
    def box(self) -> tuple[int, int, int, int]:
        """Pixels [x0, x1) x [y0, y1) the shape may cover."""
        return (self.x - self.half_px, self.y - self.half_px, self.x + self.half_px, self.y + self.half_px)


@dataclass(frozen=True)
class Number:
    value: int
    x: int
    y: int
    half_px: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        return (self.x - self.half_px, self.y - self.half_px, self.x + self.half_px, self.y + self.half_px)


@dataclass(frozen=True)
class Scene:
    size_px: int
    shapes: tuple[Shape, ...] = ()
    numbers: tuple[Number, ...] = ()


class Layout:
    """Places square boxes at random, apart from each other and never across a blocked column."""

    def __init__(self, rng: random.Random, size_px: int = IMAGE_SIZE_PX, split_midline: bool = True) -> None:
        self.rng, self.size_px = rng, size_px
        self.boxes: list[tuple[int, int, int, int]] = []
        mid = size_px // 2
        # Nothing straddles the midline, so "in the left half" is never a judgement call.
        self.blocked = [(mid - GAP_PX // 2, mid + GAP_PX // 2)] if split_midline else []

    def place(self, half_px: int, x_range: tuple[int, int] | None = None) -> tuple[int, int]:
        """Centre of a free box; `x_range` (pixels) bounds the centre's x."""
        low, high = GAP_PX + half_px, self.size_px - GAP_PX - half_px
        x_low, x_high = (low, high) if x_range is None else (max(low, x_range[0]), min(high, x_range[1]))
        for _ in range(_MAX_PLACEMENT_TRIES):
            x, y = self.rng.randint(x_low, x_high), self.rng.randint(low, high)
            x0, y0, x1, y1 = x - half_px, y - half_px, x + half_px, y + half_px
            if any(x0 < c1 and c0 < x1 for c0, c1 in self.blocked):
                continue
            if any(
                x0 < b[2] + GAP_PX and b[0] < x1 + GAP_PX and y0 < b[3] + GAP_PX and b[1] < y1 + GAP_PX
                for b in self.boxes
            ):
                continue
            self.boxes.append((x0, y0, x1, y1))
            return x, y
        raise RuntimeError(f"no room for a {2 * half_px} px object among {len(self.boxes)}")

    def shape(self, shape: str, colour: str, size: str, x_range: tuple[int, int] | None = None) -> Shape:
        half = HALF_SIDE_PX[size]
        return Shape(shape, colour, size, *self.place(half, x_range), half)

    def block_column_of(self, box: tuple[int, int, int, int]) -> None:
        """Keep later objects out of `box`'s columns, so each is clearly left or right of it."""
        self.blocked.append((box[0] - GAP_PX, box[2] + GAP_PX))


def count_shapes(scene: Scene, colour: str | None = None, shape: str | None = None, size: str | None = None,
                 half: str | None = None) -> int:
    """Shapes matching every given attribute; `half` is "left" or "right" of the image's midline."""
    mid = scene.size_px // 2
    return sum(
        (colour is None or s.colour == colour)
        and (shape is None or s.shape == shape)
        and (size is None or s.size == size)
        and (half is None or (s.box[2] <= mid if half == "left" else s.box[0] >= mid))
        for s in scene.shapes
    )


@functools.lru_cache(maxsize=1)
def _font():
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=NUMBER_FONT_PX)
    except TypeError:  # Pillow < 10.1 has only the small bitmap font
        return ImageFont.load_default()


def render(scene: Scene) -> bytes:
    """PNG bytes of the scene; shapes are flat colour on white, numbers black on outlined cards."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (scene.size_px, scene.size_px), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for s in scene.shapes:
        x0, y0, x1, y1 = s.box[0], s.box[1], s.box[2] - 1, s.box[3] - 1  # Pillow's corners are inclusive
        fill = COLOURS[s.colour]
        if s.shape == "square":
            draw.rectangle((x0, y0, x1, y1), fill=fill)
        elif s.shape == "circle":
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        else:
            draw.polygon([(s.x, y0), (x1, y1), (x0, y1)], fill=fill)
    for n in scene.numbers:
        x0, y0, x1, y1 = n.box
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=CARD_OUTLINE, width=2)
        draw.text((n.x, n.y), str(n.value), fill=INK, font=_font(), anchor="mm")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
