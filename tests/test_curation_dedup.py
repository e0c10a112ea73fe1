"""Deduplication (mmr1.data.dedup) and the sketches under it (mmr1.data.sketches)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

import numpy as np
import polars as pl
import pytest

from mmr1.data import sketches
from mmr1.data.dedup import deduplicate
from mmr1.data.frame import QUARANTINE_SCHEMA
from schemas.curation import DedupConfig

WORDS = (
    "triangle square circle angle side length area volume point line segment ray chord radius "
    "diameter shaded region figure chart bar value total sum difference ratio percent scale "
    "height width perimeter degree parallel vertical horizontal label axis legend year month "
    "price cost speed distance time rate"
).split()


def _question(rng: np.random.Generator, words: int) -> list[str]:
    return [str(w) for w in rng.choice(WORDS, size=words)] + [f"q{rng.integers(1 << 30)}"]


def _frame(rows: Sequence[dict]) -> pl.DataFrame:
    """Validated rows: each dict has problem_norm and optionally answer, sha, phash, id."""
    return pl.DataFrame(
        {
            "row_id": [f"src/{r.get('id', i)}" for i, r in enumerate(rows)],
            "source": ["src"] * len(rows),
            "source_row_id": [str(r.get("id", i)) for i, r in enumerate(rows)],
            "problem": [r["problem_norm"] for r in rows],
            "answer": [r.get("answer", "4") for r in rows],
            "problem_norm": [r["problem_norm"] for r in rows],
            "image_sha256": pl.Series([r.get("sha", []) for r in rows], dtype=pl.List(pl.String)),
            "image_phash": pl.Series([r.get("phash", []) for r in rows], dtype=pl.List(pl.UInt64)),
        }
    )


def _by_id(result) -> dict[str, dict]:
    return {row["source_row_id"]: row for row in result.quarantined.iter_rows(named=True)}


def _check_counts(frame: pl.DataFrame, result) -> None:
    assert result.kept.height + result.quarantined.height == frame.height
    assert result.quarantined.schema == pl.Schema(QUARANTINE_SCHEMA)
    ids = set(result.kept["source_row_id"]) | set(result.quarantined["source_row_id"])
    assert ids == set(frame["source_row_id"])
    assert set(result.quarantined["duplicate_of"]) <= set(result.kept["row_id"])


PHASH = 0x9F3A_5C21_77E0_1B4D


# ---------------------------------------------------------------------------- dedup rules


def test_exact_duplicate_is_quarantined_pointing_at_the_kept_row() -> None:
    text = "what is the area of the shaded region"
    frame = _frame(
        [
            {"problem_norm": text, "answer": "12", "sha": ["a", "b"], "phash": [1, 2]},
            {"problem_norm": "another question", "answer": "3"},
            # same answer up to case/whitespace, same image set in another order
            {"problem_norm": text, "answer": " 12 ", "sha": ["b", "a"], "phash": [2, 1]},
        ]
    )
    result = deduplicate(frame, DedupConfig())
    _check_counts(frame, result)
    assert result.kept["row_id"].to_list() == ["src/0", "src/1"]
    dup = _by_id(result)["2"]
    assert dup["reason"] == "duplicate_exact"
    assert dup["duplicate_of"] == "src/0"
    assert "src/0" in dup["detail"]


def test_one_word_changed_with_the_same_image_is_a_near_text_duplicate() -> None:
    rng = np.random.default_rng(1)
    words = _question(rng, 29)  # 30 words
    changed = list(words)
    changed[15] = "hexagon"
    frame = _frame(
        [
            {"problem_norm": " ".join(words), "sha": ["img"], "phash": [PHASH]},
            {"problem_norm": " ".join(changed), "sha": ["img"], "phash": [PHASH]},
        ]
    )
    # One word changed in the middle of 30 words changes 3 of 28 3-word shingles:
    # Jaccard 25 / 31 = 0.81, just above the default 0.8, so the 64-slot estimate
    # falls on either side of it; a lower threshold makes the test deterministic.
    result = deduplicate(frame, DedupConfig(text_threshold=0.7))
    _check_counts(frame, result)
    dup = _by_id(result)["1"]
    assert (dup["reason"], dup["duplicate_of"]) == ("duplicate_near_text", "src/0")
    assert dup["detail"].startswith("estimated Jaccard 0.") and dup["detail"].endswith("src/0")


def test_near_text_at_the_defaults() -> None:
    rng = np.random.default_rng(2)
    words = _question(rng, 59)  # 60 words, the last one differs: Jaccard 57 / 59 = 0.97
    frame = _frame(
        [
            {"problem_norm": " ".join(words[:-1] + ["cm"])},
            {"problem_norm": " ".join(words[:-1] + ["mm"])},
        ]
    )
    result = deduplicate(frame, DedupConfig())
    assert _by_id(result)["1"]["reason"] == "duplicate_near_text"


@pytest.mark.parametrize("answers", [("b", "b"), ("b", "e")])
def test_near_text_needs_the_same_answer(answers: tuple[str, str]) -> None:
    """ "Which bar is tallest" vs "which bar is shortest" on one chart: two problems."""
    rng = np.random.default_rng(11)
    words = _question(rng, 40)
    frame = _frame(
        [
            {
                "problem_norm": " ".join([*words, "which", "bar", "is", last]),
                "answer": answer,
                "sha": ["chart"],
                "phash": [PHASH],
            }
            for last, answer in zip(("tallest", "shortest"), answers, strict=True)
        ]
        + [  # identical text and image, answer differing beyond case and whitespace
            {"problem_norm": "which bar is tallest", "answer": "B ", "sha": ["c2"], "phash": [1]},
            {"problem_norm": "which bar is tallest", "answer": "c", "sha": ["c2"], "phash": [1]},
        ]
    )
    result = deduplicate(frame, DedupConfig())
    _check_counts(frame, result)
    if answers[0] == answers[1]:
        dup = _by_id(result)["1"]
        assert (dup["reason"], dup["duplicate_of"]) == ("duplicate_near_text", "src/0")
        assert set(_by_id(result)) == {"1"}
    else:
        assert result.quarantined.is_empty()


@pytest.mark.parametrize("answers", [("red", " Red"), ("red", "blue")])
def test_near_image_needs_the_same_answer(answers: tuple[str, str]) -> None:
    """A colour question on a recoloured image: the grayscale phash does not change."""
    text = "what is the colour of the big shape"
    frame = _frame(
        [
            {"problem_norm": text, "answer": answer, "sha": [sha], "phash": [PHASH]}
            for sha, answer in zip(("red-layout", "blue-layout"), answers, strict=True)
        ]
    )
    result = deduplicate(frame, DedupConfig())
    _check_counts(frame, result)
    if answers[0].strip().lower() == answers[1].strip().lower():
        dup = _by_id(result)["1"]
        assert (dup["reason"], dup["duplicate_of"]) == ("duplicate_near_image", "src/0")
    else:
        assert result.quarantined.is_empty()


def test_same_text_on_different_images_is_not_collapsed() -> None:
    text = "count the red shapes in the picture"
    frame = _frame(
        [
            {"problem_norm": text, "sha": ["red"], "phash": [PHASH]},
            {"problem_norm": text, "sha": ["blue"], "phash": [PHASH ^ 0xFFFF_FFFF]},
            {"problem_norm": text},  # no image at all
            {"problem_norm": text, "sha": ["red", "blue"], "phash": [PHASH, PHASH ^ 0xFFFF]},
        ]
    )
    result = deduplicate(frame, DedupConfig())
    _check_counts(frame, result)
    assert result.quarantined.is_empty()


def test_reencoded_image_with_the_same_question_is_a_near_image_duplicate() -> None:
    text = "what is the value of the tallest bar in the chart"
    frame = _frame(
        [
            {"problem_norm": text, "sha": ["orig"], "phash": [PHASH]},
            {"problem_norm": text, "sha": ["resized"], "phash": [PHASH ^ 0b101]},  # 2 bits
            {
                "problem_norm": text,
                "sha": ["other"],
                "phash": [PHASH ^ 0b111111 << 20],
            },  # 6, 8 bits
        ]
    )
    result = deduplicate(frame, DedupConfig(image_hamming=4))
    _check_counts(frame, result)
    assert result.kept["row_id"].to_list() == ["src/0", "src/2"]
    dup = _by_id(result)["1"]
    assert (dup["reason"], dup["duplicate_of"]) == ("duplicate_near_image", "src/0")
    assert "image phash distance 2 bits with src/0" in dup["detail"]


def test_near_image_needs_every_image_close_position_by_position() -> None:
    text = "which of the two graphs grows faster"
    other = 0x0123_4567_89AB_CDEF
    frame = _frame(
        [
            {"problem_norm": text, "sha": ["a", "b"], "phash": [PHASH, other]},
            {"problem_norm": text, "sha": ["a1", "b1"], "phash": [PHASH ^ 1, other ^ 0xFF]},
            {"problem_norm": text, "sha": ["b2", "a2"], "phash": [other, PHASH]},
            {"problem_norm": text, "sha": ["a3", "b3"], "phash": [PHASH ^ 1, other ^ 0b11]},
        ]
    )
    result = deduplicate(frame, DedupConfig())
    assert result.kept["row_id"].to_list() == ["src/0", "src/1", "src/2"]
    assert _by_id(result)["3"]["reason"] == "duplicate_near_image"
    assert "distance 2 bits" in _by_id(result)["3"]["detail"]


def test_a_chain_of_near_images_is_one_cluster_kept_at_its_first_row() -> None:
    text = "find the measure of angle abc"
    frame = _frame(
        [
            {"problem_norm": text, "sha": ["a"], "phash": [PHASH]},
            {"problem_norm": text, "sha": ["b"], "phash": [PHASH ^ 0b111]},  # 3 bits from a
            {"problem_norm": text, "sha": ["c"], "phash": [PHASH ^ 0b111111]},  # 3 from b, 6 from a
        ]
    )
    result = deduplicate(frame, DedupConfig(image_hamming=4))
    assert result.kept["row_id"].to_list() == ["src/0"]
    rows = _by_id(result)
    assert rows["1"]["duplicate_of"] == rows["2"]["duplicate_of"] == "src/0"
    assert rows["2"]["detail"].endswith("distance 3 bits with src/1")


def test_different_texts_are_kept() -> None:
    rng = np.random.default_rng(3)
    frame = _frame(
        [
            {"problem_norm": " ".join(_question(rng, 40)), "sha": [f"s{i}"], "phash": [i]}
            for i in range(40)
        ]
        + [{"problem_norm": " ".join(_question(rng, 8))} for _ in range(40)]
    )
    result = deduplicate(frame, DedupConfig())
    assert result.quarantined.is_empty()
    assert result.kept.equals(frame)


def _mixed_frame(seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(120):
        kind = rng.integers(0, 5) if rows else 0
        base = rows[rng.integers(0, len(rows))] if rows else None
        if kind == 0 or base is None:
            n = int(rng.integers(0, 3))
            rows.append(
                {
                    "problem_norm": " ".join(_question(rng, int(rng.integers(3, 50)))),
                    "answer": str(rng.integers(0, 5)),
                    "sha": [f"img{i}-{k}" for k in range(n)],
                    "phash": [int(v) for v in rng.integers(0, 2**63, n)],
                }
            )
        elif kind == 1:
            rows.append(dict(base))  # exact
        elif kind == 2:
            rows.append(dict(base, answer="other"))  # other answer: not a duplicate
        elif kind == 3:
            rows.append(dict(base, sha=[s + "-re" for s in base["sha"]]))  # re-encoded
        else:
            rows.append(dict(base, problem_norm=base["problem_norm"] + " please"))
    return _frame([dict(row, id=i) for i, row in enumerate(rows)])


def test_counts_add_up_and_every_pointer_names_a_kept_row() -> None:
    frame = _mixed_frame(4)
    result = deduplicate(frame, DedupConfig())
    _check_counts(frame, result)
    assert set(result.reasons()) <= {
        "duplicate_exact",
        "duplicate_near_text",
        "duplicate_near_image",
    }
    assert result.quarantined.height > 20


def test_same_input_same_result_and_shuffled_input_keeps_its_first_occurrence() -> None:
    frame = _mixed_frame(5)
    first = deduplicate(frame, DedupConfig())
    again = deduplicate(frame, DedupConfig())
    assert first.kept.equals(again.kept) and first.quarantined.equals(again.quarantined)

    pair = _frame(
        [
            {"problem_norm": "the same question", "id": "a"},
            {"problem_norm": "the same question", "id": "b"},
        ]
    )
    assert deduplicate(pair, DedupConfig()).kept["source_row_id"].to_list() == ["a"]
    reversed_pair = pair.reverse()
    result = deduplicate(reversed_pair, DedupConfig())
    assert result.kept["source_row_id"].to_list() == ["b"]
    assert result.quarantined["duplicate_of"].to_list() == ["src/b"]

    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=0)
    result = deduplicate(shuffled, DedupConfig())
    _check_counts(shuffled, result)
    position = {rid: i for i, rid in enumerate(shuffled["row_id"])}
    for row in result.quarantined.iter_rows(named=True):
        assert position[row["duplicate_of"]] < position["src/" + row["source_row_id"]]


def test_rules_can_be_switched_off() -> None:
    frame = _mixed_frame(6)
    off = DedupConfig(exact=False, near_text=False, near_image=False)
    assert deduplicate(frame, off).quarantined.is_empty()
    only_exact = deduplicate(frame, DedupConfig(near_text=False, near_image=False))
    assert set(only_exact.reasons()) == {"duplicate_exact"}


def test_empty_frame_and_missing_columns() -> None:
    empty = _frame([])
    result = deduplicate(empty, DedupConfig())
    assert result.kept.height == 0 and result.quarantined.height == 0
    with pytest.raises(ValueError, match="problem_norm"):
        deduplicate(empty.drop("problem_norm"), DedupConfig())


# ------------------------------------------------------------------------------ sketches


def test_universal_hash_is_exact_mod_the_mersenne_prime() -> None:
    rng = np.random.default_rng(7)
    p = sketches.MERSENNE_61
    x = np.concatenate([rng.integers(0, p, 500, dtype=np.uint64), np.array([0, 1, p - 1], "u8")])
    a = np.concatenate([rng.integers(1, p, 6, dtype=np.uint64), np.array([1, p - 1], "u8")])
    b = np.concatenate([rng.integers(0, p, 6, dtype=np.uint64), np.array([0, p - 1], "u8")])
    got = sketches.universal_hash(x[None, :], a[:, None], b[:, None])
    want = [[(int(ak) * int(xi) + int(bk)) % p for xi in x] for ak, bk in zip(a, b, strict=True)]
    assert got.tolist() == want


def test_popcount_and_hamming_match_python() -> None:
    rng = np.random.default_rng(8)
    values = np.concatenate(
        [rng.integers(0, 2**64, 300, dtype=np.uint64), np.array([0, 2**64 - 1], "u8")]
    )
    assert sketches.popcount64(values).tolist() == [bin(int(v)).count("1") for v in values]
    other = values[::-1]
    want = [bin(int(a) ^ int(b)).count("1") for a, b in zip(values, other, strict=True)]
    assert sketches.hamming64(values, other).tolist() == want


def test_ngram_hashes_depend_only_on_the_words() -> None:
    texts = pl.Series(["a b c d e", "x a b c", "a  b\tc", "", "a b"])
    words, offsets = sketches.word_hashes(texts)
    assert np.diff(offsets).tolist() == [5, 4, 3, 0, 2]
    grams, gram_offsets = sketches.ngram_hashes(words, offsets, 3, short="whole")
    rows = [grams[gram_offsets[i] : gram_offsets[i + 1]].tolist() for i in range(5)]
    assert [len(r) for r in rows] == [3, 2, 1, 1, 1]
    assert rows[0][0] == rows[1][1] == rows[2][0]  # "a b c" wherever it occurs
    assert len(set(rows[0])) == 3 and rows[4][0] not in rows[0]
    dropped, dropped_offsets = sketches.ngram_hashes(words, offsets, 3, short="drop")
    assert np.diff(dropped_offsets).tolist() == [3, 2, 1, 0, 0]


def test_word_hashes_are_the_same_in_another_process() -> None:
    code = (
        "import polars as pl; from mmr1.data.sketches import word_hashes; "
        "print(word_hashes(pl.Series(['the area of the circle']))[0].tolist())"
    )
    here = sketches.word_hashes(pl.Series(["the area of the circle"]))[0].tolist()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(here)


def _find(parent: list[int], x: int) -> int:
    while parent[x] != x:
        x = parent[x]
    return x


def test_connected_components_label_each_node_with_its_smallest_node() -> None:
    rng = np.random.default_rng(9)
    for n, m in [(1, 0), (50, 30), (200, 150), (300, 600)]:
        u, v = rng.integers(0, n, m), rng.integers(0, n, m)
        parent = list(range(n))
        for a, b in zip(u.tolist(), v.tolist(), strict=True):
            ra, rb = _find(parent, a), _find(parent, b)
            parent[max(ra, rb)] = min(ra, rb)
        want = [_find(parent, x) for x in range(n)]
        assert sketches.connected_components(n, u, v).tolist() == want


def test_lsh_finds_pairs_of_jaccard_095_at_the_defaults() -> None:
    """Pairs sharing 190 of 200 hashes (Jaccard 0.95): a band collision is near certain
    (1 - (1 - 0.95^4)^16), and the 64-slot estimate falls below 0.8 with p ~ 1e-5."""
    config = DedupConfig()
    rng = np.random.default_rng(10)
    pairs = 300
    values, offsets = [], [0]
    for _ in range(pairs):
        common = rng.integers(0, 2**64, 190, dtype=np.uint64)
        for own in (rng.integers(0, 2**64, 5, dtype=np.uint64) for _ in range(2)):
            values.append(np.concatenate([common, own]))
            offsets.append(offsets[-1] + 195)
    signatures = sketches.minhash(
        np.concatenate(values), np.array(offsets), config.num_perm, config.seed
    )
    keys = sketches.band_keys(signatures, config.bands)
    candidate = (keys[0::2] == keys[1::2]).any(axis=1)
    estimate = (signatures[0::2] == signatures[1::2]).mean(axis=1)
    found = candidate & (estimate >= config.text_threshold)
    assert found.mean() >= 0.99
    assert abs(estimate.mean() - 0.95) < 0.01  # unbiased
    # Unrelated sets are not candidates.
    unrelated = (keys[0:-2:2] == keys[3::2]).any(axis=1)
    assert not unrelated.any()
