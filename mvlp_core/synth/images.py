"""Render a scene of the synthetic world to a small JPEG.

The picture shows exactly what the caption says (colour, shape, size band, count, relation) on a
plain background, so a tiny model can learn the grounding and tests can check it from pixels.
Drawing is aliased and JPEG settings are fixed, so the same scene and RNG state give the same bytes.
"""

from __future__ import annotations

import io
import math
import random

from PIL import Image, ImageDraw

from mvlp_core.synth.grammar import Obj, Scene

IMAGE_SIZE = 96
JPEG_QUALITY = 90
BACKGROUND = (236, 236, 236)
PALETTE = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 210, 20),
    "black": (20, 20, 20),
    "purple": (140, 40, 170),
}
# radius bands in pixels on the 96-px canvas, well apart so "small" and "big" are clear-cut
RADIUS = {"small": (8, 10), "medium": (13, 15), "big": (22, 25)}


_STAR = [
    (radius * math.cos(angle), -radius * math.sin(angle))
    for radius, angle in ((1 if k % 2 == 0 else 0.45, math.pi / 2 + k * math.pi / 5) for k in range(10))
]
_SHAPES = {
    "square": [(-0.85, -0.85), (0.85, -0.85), (0.85, 0.85), (-0.85, 0.85)],
    "triangle": [(0, -1), (0.95, 0.75), (-0.95, 0.75)],
    "star": _STAR,
    "cross": [
        (-0.3, -1),
        (0.3, -1),
        (0.3, -0.3),
        (1, -0.3),
        (1, 0.3),
        (0.3, 0.3),
        (0.3, 1),
        (-0.3, 1),
        (-0.3, 0.3),
        (-1, 0.3),
        (-1, -0.3),
        (-0.3, -0.3),
    ],
    "diamond": [(0, -1), (0.75, 0), (0, 1), (-0.75, 0)],
}


def _draw(draw: ImageDraw.ImageDraw, obj: Obj, cx: float, cy: float, r: float) -> None:
    fill = PALETTE[obj.colour]
    if obj.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon([(cx + x * r, cy + y * r) for x, y in _SHAPES[obj.shape]], fill=fill)


def layout(scene: Scene, rng: random.Random, size: int = IMAGE_SIZE) -> list[tuple[float, ...]]:
    """(cx, cy, r) per object.

    Count copies sit in distinct cells of a 3x3 grid; a relation puts objects[0] clearly
    above/below/left/right of objects[1], their other coordinate differing by at most 4 px.
    """
    radii = [rng.randint(*RADIUS[obj.size]) for obj in scene.objects]
    if scene.kind == "single":
        r = radii[0]
        return [(rng.randint(r + 3, size - r - 3), rng.randint(r + 3, size - r - 3), r)]
    if scene.kind == "count":
        cell = size / 3
        cells = rng.sample(range(9), scene.count)
        jitter = [(rng.randint(-1, 1), rng.randint(-1, 1)) for _ in cells]
        return [
            ((c % 3 + 0.5) * cell + dx, (c // 3 + 0.5) * cell + dy, r)
            for c, r, (dx, dy) in zip(cells, radii, jitter)
        ]
    r = max(radii)
    near = rng.randint(r + 2, size - 3 * r - 6)  # the first object along the relation's axis
    far = rng.randint(near + 2 * r + 4, size - r - 2)
    across = rng.randint(r + 6, size - r - 6)
    first, second = (near, far) if scene.relation in ("above", "left") else (far, near)
    offsets = (rng.randint(-2, 2), rng.randint(-2, 2))
    if scene.relation in ("above", "below"):
        return [(across + offsets[0], first, radii[0]), (across + offsets[1], second, radii[1])]
    return [(first, across + offsets[0], radii[0]), (second, across + offsets[1], radii[1])]


def render(scene: Scene, rng: random.Random, size: int = IMAGE_SIZE) -> Image.Image:
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for obj, (cx, cy, r) in zip(scene.objects, layout(scene, rng, size)):
        _draw(draw, obj, cx, cy, r)
    return image


def to_jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=False)
    return buf.getvalue()


def render_jpeg(scene: Scene, rng: random.Random, size: int = IMAGE_SIZE) -> bytes:
    return to_jpeg(render(scene, rng, size))
