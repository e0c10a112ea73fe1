"""The synthetic task generator, its config and the programmatic teacher."""

from __future__ import annotations

import io
import re
import statistics
import time

import pytest
from PIL import Image

from mmr1.data.families import PALETTE
from mmr1.data.synthetic import (
    BENCHMARK_SOURCE,
    FAMILIES,
    SOURCE,
    TaskFamily,
    generate_benchmark,
    generate_items,
    is_benchmark_content,
    item_from_id,
    iter_records,
    register_family,
    solve,
    text_corpus,
    to_sft_record,
)
from mmr1.prompts import CHOICE_LETTERS, training_prompt
from schemas.records import IMAGE_PLACEHOLDER
from schemas.registry import SYNTHETIC_FAMILIES
from schemas.synthetic import SyntheticConfig

TRACE = re.compile(
    r"\A<think>\n(?P<steps>.+)\n</think>\n<answer>\\boxed\{(?P<boxed>[^{}]+)\}</answer>\Z", re.S
)


def _png(item) -> bytes:
    return item.record.images[0].bytes


# --------------------------------------------------------------------------- config


def test_the_registry_is_the_list_configs_validate_against():
    assert FAMILIES is SYNTHETIC_FAMILIES
    assert SYNTHETIC_FAMILIES.names()[:2] == ["shape_color", "count_shapes"]
    assert all(family.name == name for name, family in FAMILIES.items())
    assert SyntheticConfig(n_items=1).families == SYNTHETIC_FAMILIES.names()
    with pytest.raises(ValueError, match="unknown synthetic task family 'nope'; known: shape_c"):
        SyntheticConfig(n_items=1, families=["shape_color", "nope"])


def test_registering_a_duplicate_family_name_raises():
    with pytest.raises(ValueError, match="already registered"):

        @register_family("shape_color")
        class Again(TaskFamily):  # pragma: no cover - never instantiated
            def draw(self, rng, difficulty, size):
                raise NotImplementedError

            def explain(self, facts):
                raise NotImplementedError


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"image_size": 60}, "multiple of 28"),
        ({"image_size": 28}, "at least 56"),
        ({"families": ["shape_colour"]}, "unknown synthetic task family .shape_colour."),
        ({"families": []}, "at least one family"),
        ({"families": ["bar_chart", "bar_chart"]}, "must not repeat"),
        ({"difficulties": [0, 1]}, "must be 1, 2 or 3"),
        ({"difficulties": []}, "at least one level"),
        ({"multiple_choice_ratio": 1.5}, "less than or equal to 1"),
        ({"n_choices": 7}, r"n_choices must lie in \[2, 6\]"),
        ({"n_items": 0}, "greater than or equal to 1"),
    ],
)
def test_config_rejects_bad_values_with_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        SyntheticConfig(**{"n_items": 4, **overrides})


def test_config_fields_all_have_descriptions_and_image_tokens():
    assert all(f.description for f in SyntheticConfig.model_fields.values())
    assert SyntheticConfig(n_items=1).image_tokens() == 4
    assert SyntheticConfig(n_items=1, image_size=112).image_tokens() == 16


# ---------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_records_and_png_bytes():
    config = SyntheticConfig(n_items=40, seed=7)
    first, second = generate_items(config), generate_items(config)
    assert first == second
    assert [_png(a) for a in first] == [_png(b) for b in second]


def test_different_seed_gives_different_items():
    a = generate_items(SyntheticConfig(n_items=20, seed=0))
    b = generate_items(SyntheticConfig(n_items=20, seed=1))
    assert [x.record.id for x in a] != [y.record.id for y in b]
    assert sum(_png(x) != _png(y) for x, y in zip(a, b, strict=True)) >= 18


def test_item_i_does_not_depend_on_n_items():
    small = generate_items(SyntheticConfig(n_items=6, seed=3))
    large = generate_items(SyntheticConfig(n_items=30, seed=3))
    assert large[:6] == small


def test_iter_records_matches_generate_items():
    config = SyntheticConfig(n_items=12, seed=2)
    assert list(iter_records(config)) == [item.record for item in generate_items(config)]


# --------------------------------------------------------------------------- validity


@pytest.mark.parametrize("family", SYNTHETIC_FAMILIES.names())
def test_every_family_produces_valid_items(family):
    config = SyntheticConfig(n_items=45, seed=11, families=[family], n_choices=4)
    items = generate_items(config)
    assert {item.record.difficulty for item in items} == {1, 2, 3}
    assert {item.record.choices is None for item in items} == {True, False}
    for index, item in enumerate(items):
        record = item.record
        assert record.id == f"syn-{family}-11-{index}"
        assert record.type == item.family == family
        assert record.source == SOURCE
        assert record.problem.startswith(IMAGE_PLACEHOLDER + "\n")
        assert record.problem.count(IMAGE_PLACEHOLDER) == len(record.images) == 1
        assert record.images[0].path == f"{record.id}.png"
        image = Image.open(io.BytesIO(_png(item)))
        assert (image.format, image.mode, image.size) == ("PNG", "RGB", (56, 56))
        if record.choices is None:
            assert record.answer == item.value
        else:
            assert 2 <= len(record.choices) <= config.n_choices
            assert len(set(record.choices)) == len(record.choices)
            assert record.answer in CHOICE_LETTERS[: len(record.choices)]
            correct = record.choices[CHOICE_LETTERS.index(record.answer)]
            assert correct in (item.value, f"segment {item.value}")


def test_multiple_choice_options_are_shuffled():
    config = SyntheticConfig(n_items=200, families=["shape_color"], multiple_choice_ratio=1.0)
    letters = [item.record.answer for item in generate_items(config)]
    assert set(letters) == {"A", "B", "C", "D"}
    assert max(letters.count(x) for x in "ABCD") < 0.4 * len(letters)


@pytest.mark.parametrize("ratio", [0.0, 1.0])
def test_multiple_choice_ratio_extremes(ratio):
    items = generate_items(SyntheticConfig(n_items=25, multiple_choice_ratio=ratio))
    assert all((item.record.choices is not None) == (ratio == 1.0) for item in items)


def test_image_size_is_respected():
    item = generate_items(SyntheticConfig(n_items=1, image_size=112))[0]
    assert Image.open(io.BytesIO(_png(item))).size == (112, 112)


def test_difficulty_knob_changes_measurable_facts():
    measures = {
        "shape_color": lambda f: f["n_shapes"],
        "count_shapes": lambda f: f["n_shapes"],
        "bar_chart": lambda f: f["n_bars"],
        "compare_length": lambda f: len(f["labels"]),
        "digit_arithmetic": lambda f: len(f["digits"]),
        "tallest_bar": lambda f: f["n_bars"],
    }
    for family, measure in measures.items():
        means = [
            statistics.mean(
                measure(item.facts)
                for item in generate_items(
                    SyntheticConfig(n_items=30, families=[family], difficulties=[level])
                )
            )
            for level in (1, 2, 3)
        ]
        assert means[0] < means[2], (family, means)
        assert means[0] <= means[1] <= means[2], (family, means)


def test_answers_follow_from_the_facts():
    for item in generate_items(SyntheticConfig(n_items=60, seed=5)):
        facts = item.facts
        if item.family == "shape_color":
            assert item.value == facts["big_colour"] not in facts["small_colours"]
        elif item.family == "count_shapes":
            assert 1 <= int(item.value) == facts["count"] < facts["n_shapes"]
        elif item.family == "bar_chart":
            assert int(item.value) in facts["values"]
            assert 1 <= int(item.value) <= facts["max_value"]
        elif item.family == "tallest_bar":
            values, colours = facts["values"], facts["colours"]
            tallest = max(values)
            assert values.count(tallest) == 1
            assert item.value == colours[values.index(tallest)]
            assert tallest - sorted(values)[-2] == facts["gap"] >= 1
        elif item.family == "compare_length":
            lengths = dict(zip(facts["labels"], facts["lengths"], strict=True))
            assert lengths[item.value] == max(lengths.values())
            assert sorted(lengths.values()).count(max(lengths.values())) == 1
        else:
            assert int(item.value) == facts["result"]


def _pixels(item) -> dict[str, list[tuple[int, int]]]:
    """Palette colour -> the (x, y) pixels of that exact colour in the item's image."""
    image = Image.open(io.BytesIO(_png(item))).convert("RGB")
    by_rgb = {rgb: name for name, rgb in PALETTE.items()}
    found: dict[str, list[tuple[int, int]]] = {}
    for y in range(image.height):
        for x in range(image.width):
            name = by_rgb.get(image.getpixel((x, y)))
            if name:
                found.setdefault(name, []).append((x, y))
    return found


def test_shape_colour_levels_set_how_many_small_shapes_and_how_close():
    # Pixel area of the largest small shape over the big one's, per level (measured over 300
    # items: d1 0.03-0.10, d2 0.11-0.40, d3 0.19-0.69): the big one always covers the most.
    means = []
    for level, (low, high, counts) in {
        1: (0.02, 0.12, {2, 3}),
        2: (0.10, 0.42, {3, 4}),
        3: (0.18, 0.72, {4, 5}),
    }.items():
        ratios = []
        config = SyntheticConfig(n_items=30, seed=2, families=["shape_color"], difficulties=[level])
        for item in generate_items(config):
            areas = {colour: len(px) for colour, px in _pixels(item).items()}
            assert set(areas) == {item.value, *item.facts["small_colours"]}
            assert item.facts["n_shapes"] in counts
            ratios.append(max(areas[c] for c in item.facts["small_colours"]) / areas[item.value])
        assert low <= min(ratios) and max(ratios) <= high, (level, min(ratios), max(ratios))
        means.append(statistics.mean(ratios))
    assert means[0] < 0.1 < 0.15 < means[1] < 0.35 < 0.4 < means[2], means


@pytest.mark.parametrize(("level", "gaps"), [(1, {4, 5, 6}), (2, {2, 3}), (3, {1})])
def test_tallest_bar_levels_set_the_height_gap(level, gaps):
    items = generate_items(
        SyntheticConfig(n_items=30, seed=2, families=["tallest_bar"], difficulties=[level])
    )
    assert {item.facts["gap"] for item in items} <= gaps
    assert {item.facts["n_bars"] for item in items} == {level + 1}
    for item in items:
        tops = {colour: min(y for _, y in px) for colour, px in _pixels(item).items()}
        assert set(tops) == set(item.facts["colours"])
        # The answer's bar reaches highest in the picture (smallest y), strictly.
        assert min(tops, key=tops.get) == item.value
        assert sorted(tops.values())[1] > tops[item.value]


# ---------------------------------------------------------------------------- teacher


def test_teacher_trace_format_and_gold_answer():
    for item in generate_items(SyntheticConfig(n_items=100, seed=4)):
        trace = solve(item)
        match = TRACE.match(trace)
        assert match, trace
        assert match["boxed"] == item.record.answer
        assert trace.count("<think>") == trace.count("</think>") == 1
        assert len(trace.split()) < 60
        if item.record.choices:
            letter = item.record.answer
            assert f"Option ({letter}) is " in match["steps"]
        assert solve(item) == trace


def test_teacher_trace_example_for_shape_colour():
    item = next(
        i
        for i in generate_items(SyntheticConfig(n_items=40, families=["shape_color"]))
        if i.record.choices
    )
    letter = item.record.answer
    assert solve(item) == (
        f"<think>\nI see {item.facts['n_shapes']} shapes.\n"
        f"The biggest is a {item.facts['big_shape']}.\n"
        f"Its colour is {item.value}.\n"
        f"Option ({letter}) is {item.value}, so the answer is {letter}.\n"
        f"</think>\n<answer>\\boxed{{{letter}}}</answer>"
    )


def test_teacher_traces_verify_with_the_shared_reward():
    rewards = pytest.importorskip("mmr1.rewards")
    items = generate_items(SyntheticConfig(n_items=60, seed=9))
    config = rewards.RewardConfig(num_workers=0)
    scores = rewards.score_batch(
        [solve(i) for i in items],
        [i.record.answer for i in items],
        [i.record.choices for i in items],
        config=config,
    )
    assert all(s.accuracy == 1.0 and s.format == 1.0 for s in scores)


def test_to_sft_record():
    item = generate_items(SyntheticConfig(n_items=3, multiple_choice_ratio=1.0))[2]
    sft = to_sft_record(item)
    assert sft.id == item.record.id
    assert [t.from_ for t in sft.conversations] == ["human", "gpt"]
    assert sft.conversations[0].value == training_prompt(item.record.problem, item.record.choices)
    assert sft.conversations[1].value == solve(item)
    assert sft.images == item.record.images
    assert (sft.answer, sft.type, sft.source) == (item.record.answer, item.family, SOURCE)


# -------------------------------------------------------------------------- benchmark


def test_benchmark_is_deterministic_and_labelled():
    bench = generate_benchmark(seed=0, n_items=30)
    assert bench == generate_benchmark(seed=0, n_items=30)
    assert bench != generate_benchmark(seed=1, n_items=30)
    for index, item in enumerate(bench):
        assert item.record.id == f"synbench-{item.family}-0-{index}"
        assert item.record.source == BENCHMARK_SOURCE


def test_benchmark_never_duplicates_training_items():
    bench = generate_benchmark(seed=0, n_items=300)
    bench_keys = {(i.record.problem, _png(i)) for i in bench}
    for seed in (0, 1):
        train = generate_items(SyntheticConfig(n_items=300, seed=seed))
        assert not bench_keys & {(i.record.problem, _png(i)) for i in train}
        assert not {i.record.id for i in bench} & {i.record.id for i in train}
    # The guarantee is structural: each stream stays on its side of the partition.
    for item in bench[:50]:
        image = Image.open(io.BytesIO(_png(item))).convert("RGB")
        assert is_benchmark_content(item.record.problem, image)
    for item in generate_items(SyntheticConfig(n_items=50, seed=0)):
        image = Image.open(io.BytesIO(_png(item))).convert("RGB")
        assert not is_benchmark_content(item.record.problem, image)


def test_benchmark_template_sets_the_task_distribution():
    template = SyntheticConfig(n_items=999, seed=42, families=["shape_color"], image_size=112)
    bench = generate_benchmark(seed=3, n_items=5, template=template)
    assert len(bench) == 5
    assert {i.family for i in bench} == {"shape_color"}
    assert all(i.record.id.endswith(f"-3-{k}") for k, i in enumerate(bench))
    assert Image.open(io.BytesIO(_png(bench[0]))).size == (112, 112)


# ----------------------------------------------------------------------------- corpus


def test_text_corpus():
    corpus = text_corpus(n=100, seed=0)
    assert len(corpus) == 100
    assert corpus == text_corpus(n=100, seed=0)
    joined = "\n".join(corpus)
    for needle in ("<think>", "</answer>", "\\boxed{", "Options:\n(A) ", IMAGE_PLACEHOLDER):
        assert needle in joined
    with pytest.raises(ValueError):
        text_corpus(n=0)


def test_generating_items_is_fast():
    started = time.perf_counter()
    generate_items(SyntheticConfig(n_items=500))
    assert time.perf_counter() - started < 3.0


def test_item_from_id_regenerates_training_and_benchmark_items():
    for item in generate_items(SyntheticConfig(n_items=12, seed=3)):
        assert item_from_id(item.record.id) == item
    for item in generate_benchmark(seed=2, n_items=5):
        assert item_from_id(item.record.id) == item
    custom = SyntheticConfig(n_items=4, seed=9, image_size=84, difficulties=[3], n_choices=3)
    for item in generate_items(custom):
        assert item_from_id(item.record.id, custom) == item
    for bad in ("local-7", "syn-no_such_family-0-1", "syn-shape_color-0", "other-shape_color-0-1"):
        with pytest.raises(ValueError, match="not a synthetic item id"):
            item_from_id(bad)
