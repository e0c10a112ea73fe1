"""Task families of the synthetic generator: small PIL drawers in a registry by name.

Each family draws one image and a question about it at a difficulty 1..3 and
records the facts it drew (``Drawing.facts``) so the programmatic teacher can
explain the answer (``TaskFamily.explain``). The family name is also the
record's ``type`` label. Drawing is integer-pixel PIL without anti-aliasing and
with a few saturated colours: the tiny VLM sees a 56 px image as 4 tokens.
Text (labels, digits) uses Pillow's built-in bitmap font scaled by an integer
factor, so no font file is needed and the strokes stay crisp.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from mmr1.prompts import CHOICE_LETTERS
from schemas.registry import SYNTHETIC_FAMILIES, Registry

#: Few, very distinct colours: the tiny VLM sees a 56 px image as 4 tokens.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (20, 160, 40),
    "blue": (30, 80, 230),
    "yellow": (245, 205, 0),
    "purple": (140, 40, 180),
    "orange": (250, 130, 0),
}
SHAPES = ("circle", "square", "triangle")
BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)

COLOUR_HINT = "Answer with one colour word."
NUMBER_HINT = "Answer with a number."
LETTER_HINT = "Answer with the segment's letter."


@dataclass(frozen=True)
class Drawing:
    """What a family returns for one draw."""

    image: Image.Image
    question: str
    hint: str
    value: str
    facts: dict[str, Any]
    #: Wrong option texts, best distractors first (already shuffled where it matters).
    distractors: list[str]
    #: Text of the correct option for multiple choice; defaults to ``value``.
    option: str | None = None


class TaskFamily(ABC):
    """A drawer of one kind of task; ``name`` is also the record's ``type`` label."""

    name: str = ""

    @abstractmethod
    def draw(self, rng: random.Random, difficulty: int, size: int) -> Drawing:
        """Draw an image and its question at ``difficulty`` (1..3) on a ``size`` px canvas."""

    @abstractmethod
    def explain(self, facts: dict[str, Any]) -> list[str]:
        """Trace sentences: what the image shows and the one computation, in order."""


#: The registered families by name: the one list configs validate against.
FAMILIES: Registry[TaskFamily] = SYNTHETIC_FAMILIES


def register_family(name: str) -> Callable[[type[TaskFamily]], type[TaskFamily]]:
    """Class decorator: instantiate the family and register it under ``name``."""

    def wrap(cls: type[TaskFamily]) -> type[TaskFamily]:
        cls.name = name
        FAMILIES.register(name)(cls())
        return cls

    return wrap


# ------------------------------------------------------------------------- drawing


def _canvas(size: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("RGB", (size, size), BACKGROUND)
    return image, ImageDraw.Draw(image)


def _draw_shape(
    draw: ImageDraw.ImageDraw, kind: str, box: tuple[int, int, int, int], colour: str
) -> None:
    x0, y0, x1, y1 = box
    fill = PALETTE[colour]
    if kind == "circle":
        draw.ellipse(box, fill=fill)
    elif kind == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)


@cache
def _glyph(char: str) -> Image.Image:
    """Tight 1-bit mask of ``char`` in Pillow's built-in bitmap font (5-6 px wide)."""
    font = ImageFont.load_default_imagefont()
    mask = Image.new("L", (12, 16), 0)
    ImageDraw.Draw(mask).text((0, 0), char, fill=255, font=font)
    bbox = mask.getbbox()
    if bbox is None:
        raise ValueError(f"the bitmap font has no glyph for {char!r}")
    return mask.crop(bbox)


def _glyph_scale(chars: str, max_h: int, max_w: int) -> int:
    """Largest integer scale at which every glyph of ``chars`` fits in ``max_w`` x ``max_h``.

    One scale per image keeps labels and digits the same size; integer
    nearest-neighbour scaling keeps the strokes crisp (no blended pixels).
    """
    height = max(_glyph(c).height for c in chars)
    width = max(_glyph(c).width for c in chars)
    return max(1, min(max_h // height, max_w // width))


def _draw_char(image: Image.Image, char: str, center: tuple[float, float], scale: int) -> None:
    glyph = _glyph(char)
    big = glyph.resize((glyph.width * scale, glyph.height * scale), Image.Resampling.NEAREST)
    x = round(center[0] - big.width / 2)
    y = round(center[1] - big.height / 2)
    image.paste(INK, (x, y, x + big.width, y + big.height), big)


def _grid_box(size: int, grid: int, row: int, col: int, span: int, margin: float) -> tuple:
    """Pixel box of a ``span`` x ``span`` block of a ``grid`` x ``grid`` layout, inset."""
    cell = size / grid
    inset = round(cell * margin)
    x0 = round(col * cell) + inset
    y0 = round(row * cell) + inset
    x1 = round((col + span) * cell) - 1 - inset
    y1 = round((row + span) * cell) - 1 - inset
    return (x0, y0, x1, y1)


def _near_numbers(
    rng: random.Random,
    value: int,
    *,
    low: int = 0,
    high: int | None = None,
    first: Sequence[int] = (),
    spread: int = 3,
) -> list[str]:
    """Numeric distractors: ``first`` (plausible mistakes), then shuffled neighbours."""
    out: list[int] = []

    def fits(v: int) -> bool:
        return v != value and v >= low and (high is None or v <= high) and v not in out

    for v in first:
        if fits(v):
            out.append(v)
    neighbours = [v for v in range(value - spread, value + spread + 1) if fits(v)]
    rng.shuffle(neighbours)
    out.extend(neighbours)
    return [str(v) for v in out]


def _bar_chart(
    size: int,
    values: Sequence[int],
    colours: Sequence[str],
    top_value: int,
    width_share: float = 0.6,
) -> Image.Image:
    """Bars of ``values`` left to right over a y axis with a tick at every unit up to top_value.

    Each bar is ``width_share`` of its slot wide.
    """
    image, draw = _canvas(size)
    base_y, top_y = round(0.9 * size), round(0.06 * size)
    left, right = round(0.16 * size), size - 1 - round(0.03 * size)
    unit = (base_y - top_y) / top_value
    tick = max(2, round(0.05 * size))
    draw.line([(left, top_y), (left, base_y)], fill=INK)
    draw.line([(left, base_y), (right, base_y)], fill=INK)
    for v in range(1, top_value + 1):
        y = base_y - round(v * unit)
        draw.line([(left - tick, y), (left - 1, y)], fill=INK)
    slot = (right - left) / len(values)
    width = max(3, round(width_share * slot))
    for i, (value, colour) in enumerate(zip(values, colours, strict=True)):
        x0 = left + 1 + round(i * slot + (slot - width) / 2)
        draw.rectangle(
            [x0, base_y - round(value * unit), x0 + width - 1, base_y - 1],
            fill=PALETTE[colour],
        )
    return image


def _colour_distractors(rng: random.Random, answer: str, present: Sequence[str]) -> list[str]:
    """Colours in the image first (the real confusions), then the rest of the palette."""
    in_image = [c for c in present if c != answer]
    rng.shuffle(in_image)
    others = [c for c in PALETTE if c != answer and c not in in_image]
    rng.shuffle(others)
    return in_image + others


# ------------------------------------------------------------------------ families


@register_family("shape_color")
class ShapeColour(TaskFamily):
    """One big shape (a 2x2 block of a 4x4 grid) among small ones, all of distinct colours.

    Difficulty is how many small shapes compete and how close their size comes
    to the big one's (insets as fractions of a grid cell). The largest small
    shape's pixel area over the big one's averages 0.06 at d1 (1-2 small
    shapes), 0.26 at d2 (2-3) and 0.47 at d3 (3-4 small shapes filling their
    cells next to a shrunk big one; up to 0.69). A tiny VLM learns "the colour
    with the most pixels" within minutes, and the levels part it less than the
    areas suggest: at 56 px after the demo's 900 SFT steps, pass rates at
    temperature 1 were 0.91-0.99 at d1 and 0.91-0.97 at d3 over three seeds
    (bench/bench_demo_learning.py).
    """

    #: difficulty -> (fewest, most small shapes, small-shape inset, big-shape inset)
    LEVELS = {1: (1, 2, 0.25, 0.07), 2: (2, 3, 0.12, 0.18), 3: (3, 4, 0.05, 0.3)}

    def draw(self, rng: random.Random, difficulty: int, size: int) -> Drawing:
        low, high, small_margin, big_margin = self.LEVELS[difficulty]
        n_small = rng.randint(low, high)
        row, col = rng.randrange(3), rng.randrange(3)
        block = {(row + dr, col + dc) for dr in (0, 1) for dc in (0, 1)}
        free = [(r, c) for r in range(4) for c in range(4) if (r, c) not in block]
        cells = rng.sample(free, n_small)
        colours = rng.sample(list(PALETTE), n_small + 1)
        kinds = [rng.choice(SHAPES) for _ in range(n_small + 1)]

        image, draw = _canvas(size)
        _draw_shape(draw, kinds[0], _grid_box(size, 4, row, col, 2, big_margin), colours[0])
        for (r, c), kind, colour in zip(cells, kinds[1:], colours[1:], strict=True):
            _draw_shape(draw, kind, _grid_box(size, 4, r, c, 1, small_margin), colour)
        return Drawing(
            image=image,
            question="What is the colour of the big shape?",
            hint=COLOUR_HINT,
            value=colours[0],
            facts={
                "n_shapes": n_small + 1,
                "big_shape": kinds[0],
                "big_colour": colours[0],
                "small_colours": colours[1:],
            },
            distractors=_colour_distractors(rng, colours[0], colours[1:]),
        )

    def explain(self, facts: dict[str, Any]) -> list[str]:
        return [
            f"I see {facts['n_shapes']} shapes.",
            f"The biggest is a {facts['big_shape']}.",
            f"Its colour is {facts['big_colour']}.",
        ]


@register_family("count_shapes")
class CountShapes(TaskFamily):
    """Shapes of a few colours on a 4x4 grid; count those of one colour.

    Difficulty: 2-4 circles in 2 colours (d1); 4-7 circles/squares in 3 colours
    (d2); 7-10 shapes of all kinds in 4 colours (d3). A tiny VLM does not learn
    this one in minutes (docs/STACK.md): it is the hard family.
    """

    LEVELS = {1: (2, 4, 2, 3, 1), 2: (4, 7, 3, 5, 2), 3: (7, 10, 4, 6, 3)}

    def draw(self, rng: random.Random, difficulty: int, size: int) -> Drawing:
        lo, hi, n_colours, max_target, n_kinds = self.LEVELS[difficulty]
        total = rng.randint(lo, hi)
        colours = rng.sample(list(PALETTE), n_colours)
        target = colours[0]
        count = rng.randint(1, min(max_target, total - 1))
        others = [rng.choice(colours[1:]) for _ in range(total - count)]
        shape_colours = [target] * count + others
        rng.shuffle(shape_colours)
        cells = rng.sample([(r, c) for r in range(4) for c in range(4)], total)

        image, draw = _canvas(size)
        for (r, c), colour in zip(cells, shape_colours, strict=True):
            kind = SHAPES[rng.randrange(n_kinds)]
            _draw_shape(draw, kind, _grid_box(size, 4, r, c, 1, 0.2), colour)
        return Drawing(
            image=image,
            question=f"How many {target} shapes are there?",
            hint=NUMBER_HINT,
            value=str(count),
            facts={"n_shapes": total, "colour": target, "count": count},
            distractors=_near_numbers(rng, count, first=[total]),
        )

    def explain(self, facts: dict[str, Any]) -> list[str]:
        count, colour = facts["count"], facts["colour"]
        tally = ", ".join(str(i) for i in range(1, count + 1))
        return [
            f"I see {facts['n_shapes']} shapes.",
            f"Counting the {colour} ones: {tally}.",
            f"There {'is' if count == 1 else 'are'} {count} {colour} "
            f"shape{'' if count == 1 else 's'}.",
        ]


@register_family("bar_chart")
class BarChart(TaskFamily):
    """Coloured bars over a y axis with a tick at every integer from 1 to the maximum.

    Difficulty: 2 bars up to 5 (d1), 3 bars up to 8 (d2), 4-5 bars up to 10 (d3).
    Bars are named by colour: text labels would not survive 4 image tokens.
    """

    def draw(self, rng: random.Random, difficulty: int, size: int) -> Drawing:
        n_bars = {1: 2, 2: 3, 3: rng.randint(4, 5)}[difficulty]
        top_value = {1: 5, 2: 8, 3: 10}[difficulty]
        values = [rng.randint(1, top_value) for _ in range(n_bars)]
        colours = rng.sample(list(PALETTE), n_bars)
        target = rng.randrange(n_bars)

        image = _bar_chart(size, values, colours, top_value)
        value = values[target]
        return Drawing(
            image=image,
            question=f"What is the value of the {colours[target]} bar?",
            hint=NUMBER_HINT,
            value=str(value),
            facts={
                "n_bars": n_bars,
                "colour": colours[target],
                "value": value,
                "values": values,
                "max_value": top_value,
            },
            distractors=_near_numbers(rng, value, low=0, high=top_value, first=values),
        )

    def explain(self, facts: dict[str, Any]) -> list[str]:
        return [
            f"The chart has {facts['n_bars']} bars and a tick for every unit.",
            f"The {facts['colour']} bar reaches tick {facts['value']}.",
            f"Its value is {facts['value']}.",
        ]


@register_family("compare_length")
class CompareLength(TaskFamily):
    """Horizontal segments labelled A, B, ...; which one is longest?

    Difficulty: 2 segments differing by >= 25% of the width, left-aligned (d1);
    3 segments, >= 12% (d2); 4 segments, >= 5%, with ragged starts (d3).
    """

    GAPS = {1: 0.25, 2: 0.12, 3: 0.05}

    def draw(self, rng: random.Random, difficulty: int, size: int) -> Drawing:
        n = difficulty + 1
        labels = CHOICE_LETTERS[:n]
        row_h = size / n
        label_right = round(0.25 * size)
        starts = [
            label_right + (rng.randint(0, round(0.15 * size)) if difficulty == 3 else 0)
            for _ in range(n)
        ]
        shortest, longest = round(0.12 * size), size - 2 - max(starts)
        gap = max(2, round(self.GAPS[difficulty] * size))
        while True:
            lengths = rng.sample(range(shortest, longest + 1), n)
            ordered = sorted(lengths)
            if all(b - a >= gap for a, b in zip(ordered, ordered[1:], strict=False)):
                break
        thickness = max(2, size // 20)
        wobble = round(0.04 * size)  # small row offsets: variety without difficulty

        scale = _glyph_scale(labels, int(row_h * 0.85), label_right - 2)
        image, draw = _canvas(size)
        for i, (label, start, length) in enumerate(zip(labels, starts, lengths, strict=True)):
            cy = (i + 0.5) * row_h + rng.randint(-wobble, wobble)
            _draw_char(image, label, (label_right / 2, cy), scale)
            y0 = round(cy - thickness / 2)
            draw.rectangle([start, y0, start + length - 1, y0 + thickness - 1], fill=INK)
        best = labels[lengths.index(max(lengths))]
        others = [label for label in labels if label != best]
        rng.shuffle(others)
        return Drawing(
            image=image,
            question="Which segment is the longest?",
            hint=LETTER_HINT,
            value=best,
            option=f"segment {best}",
            facts={"labels": list(labels), "lengths": lengths, "longest": best},
            distractors=[f"segment {label}" for label in others],
        )

    def explain(self, facts: dict[str, Any]) -> list[str]:
        spans = ", ".join(
            f"{label} {length} px"
            for label, length in zip(facts["labels"], facts["lengths"], strict=True)
        )
        return [f"Segment lengths: {spans}.", f"The longest is segment {facts['longest']}."]


@register_family("digit_arithmetic")
class DigitArithmetic(TaskFamily):
    """Digits 1-9 drawn large; the question asks for their sum, product or difference.

    Difficulty: 2 digits, sum, small position jitter (d1); 2 digits,
    sum/difference/product with more vertical jitter (d2); 3 digits,
    sum/product with jitter (d3).
    """

    OPS = {1: ("sum",), 2: ("sum", "difference", "product"), 3: ("sum", "product")}
    QUESTIONS = {
        "sum": "What is the sum of the digits in the image?",
        "product": "What is the product of the digits in the image?",
        "difference": "What is the larger digit minus the smaller digit?",
    }

    def draw(self, rng: random.Random, difficulty: int, size: int) -> Drawing:
        n = 3 if difficulty == 3 else 2
        op = rng.choice(self.OPS[difficulty])
        digits = [rng.randint(1, 9) for _ in range(n)]
        slot = size / n
        jitter = round((0.15 if difficulty > 1 else 0.05) * size)
        shift = round(0.04 * size)

        scale = _glyph_scale("0123456789", size // 2, int(slot * 0.8))
        image, _ = _canvas(size)
        for i, digit in enumerate(digits):
            cx = (i + 0.5) * slot + rng.randint(-shift, shift)
            cy = size / 2 + rng.randint(-jitter, jitter)
            _draw_char(image, str(digit), (cx, cy), scale)
        results = {
            "sum": sum(digits),
            "product": math.prod(digits),
            "difference": max(digits) - min(digits),
        }
        value = results[op]
        return Drawing(
            image=image,
            question=self.QUESTIONS[op],
            hint=NUMBER_HINT,
            value=str(value),
            facts={"digits": digits, "op": op, "result": value},
            distractors=_near_numbers(rng, value, first=[results["sum"], results["product"]]),
        )

    def explain(self, facts: dict[str, Any]) -> list[str]:
        digits, op, result = facts["digits"], facts["op"], facts["result"]
        listed = ", ".join(str(d) for d in digits[:-1]) + f" and {digits[-1]}"
        if op == "sum":
            step = f"Their sum is {' + '.join(map(str, digits))} = {result}."
        elif op == "product":
            step = f"Their product is {' * '.join(map(str, digits))} = {result}."
        else:
            step = f"The larger minus the smaller is {max(digits)} - {min(digits)} = {result}."
        return [f"The digits are {listed}.", step]


@register_family("tallest_bar")
class TallestBar(TaskFamily):
    """Coloured bars on the bar_chart axes (values 1..10); what colour is the tallest bar?

    Difficulty is the gap between the tallest bar and the next: 2 bars, gap
    >= 4 units (d1); 3 bars, gap 2-3 (d2); 4 bars, gap 1 (d3). Like
    shape_color it asks for a colour, so a tiny VLM learns it in minutes;
    the gap grades how fine a height comparison it needs.
    """

    TOP = 10
    LEVELS = {1: (2, 4, 6), 2: (3, 2, 3), 3: (4, 1, 1)}

    def draw(self, rng: random.Random, difficulty: int, size: int) -> Drawing:
        n_bars, gap_low, gap_high = self.LEVELS[difficulty]
        gap = rng.randint(gap_low, gap_high)
        tallest = rng.randint(gap + 1, self.TOP)
        second = tallest - gap
        values = [tallest, second] + [rng.randint(1, second) for _ in range(n_bars - 2)]
        rng.shuffle(values)
        colours = rng.sample(list(PALETTE), n_bars)
        colour = colours[values.index(tallest)]
        return Drawing(
            image=_bar_chart(size, values, colours, self.TOP, width_share=0.85),
            question="What is the colour of the tallest bar?",
            hint=COLOUR_HINT,
            value=colour,
            facts={"n_bars": n_bars, "values": values, "colours": colours, "gap": gap},
            distractors=_colour_distractors(rng, colour, colours),
        )

    def explain(self, facts: dict[str, Any]) -> list[str]:
        tallest = max(facts["values"])
        colour = facts["colours"][facts["values"].index(tallest)]
        return [f"The chart has {facts['n_bars']} bars.", f"The tallest is the {colour} bar."]
