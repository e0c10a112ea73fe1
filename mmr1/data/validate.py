"""Validation and normalisation of ingested rows: text checks, image decoding, hashes.

``validate_frame`` takes a ``RAW_SCHEMA`` frame and returns the rows that pass,
normalised and with ``VALIDATED_COLUMNS`` added, plus the others quarantined
with a reason and a detail naming the field.

Text checks are polars expressions over whole columns (they must scale to the
1.6M rows of MMR1-SFT); only image work runs per image, in a thread pool of
``config.workers``, over the rows that passed the text checks, and each distinct
image (sha256 of its stored bytes) is decoded once.

Reasons, checked in this order (a row is quarantined for its first failure):

- ``invalid_utf8``: ``problem``, ``answer`` or a choice contains U+FFFD, the
  replacement character a lossy decode leaves behind. (Lone surrogates cannot
  reach a polars string: ingest quarantines them with the same reason.)
- ``empty_problem``: no text besides ``<image>`` placeholders; ``empty_answer``.
- ``problem_too_long`` / ``answer_too_long``: characters above the config limits.
- ``invalid_choices``: an empty or duplicate option, or more options than letters.
- ``too_many_images``: above ``max_images_per_row``.
- ``placeholder_mismatch``: ``<image>`` count in ``problem`` != number of images.
- ``image_missing``: an image entry without bytes.
- ``image_too_large_bytes``: encoded size above ``max_image_bytes``.
- ``image_bomb``: the header claims more than ``max_decoded_pixels`` pixels (checked
  before any pixel is decoded), or PIL's own decompression-bomb guard fired.
- ``image_decode_error``: PIL cannot decode it fully (corrupt or truncated bytes).

Normalisation of kept rows: ``problem`` and choices are stripped; ``answer`` is
stripped, inner whitespace collapsed, one surrounding ``$...$`` (or ``$$...$$``)
and one trailing period removed, case kept. Images are decoded (first frame,
EXIF orientation applied), made RGB (transparency composited on white, 16-bit
and float scaled to 8 bits), resized keeping the aspect ratio so that
width * height lies in ``[min_pixels, max_pixels]`` (LANCZOS down, BICUBIC up)
and re-encoded as PNG with fixed settings (``PNG_OPTIONS``) and no metadata:
same pixels, same bytes. ``image_sha256`` hashes those PNG bytes; ``image_phash`` is :func:`phash`
of the normalised image. ``problem_norm`` is the dedup/decontamination key:
lowercase, placeholders removed, punctuation (and ``_``) replaced by spaces,
whitespace collapsed.

PIL's own guard (``Image.MAX_IMAGE_PIXELS``, an error above twice it, ~179M
pixels by default) still applies and caps ``max_decoded_pixels``; raise it in the
calling process to allow bigger images.
"""

from __future__ import annotations

import hashlib
import io
import math
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np
import polars as pl
from PIL import Image, ImageOps

from mmr1.data.frame import (
    IMAGE_STRUCT,
    QUARANTINE_SCHEMA,
    RAW_SCHEMA,
    VALIDATED_COLUMNS,
    StepResult,
    ensure_raw_schema,
)
from mmr1.prompts import CHOICE_LETTERS
from schemas.curation import ValidationConfig
from schemas.records import IMAGE_PLACEHOLDER

__all__ = [
    "VALIDATION_REASONS",
    "PNG_OPTIONS",
    "NormalisedImage",
    "hamming",
    "normalise_answer",
    "normalise_image",
    "normalise_problem",
    "phash",
    "target_size",
    "validate_frame",
]

VALIDATION_REASONS = (
    "invalid_utf8",
    "empty_problem",
    "empty_answer",
    "problem_too_long",
    "answer_too_long",
    "invalid_choices",
    "too_many_images",
    "placeholder_mismatch",
    "image_missing",
    "image_too_large_bytes",
    "image_bomb",
    "image_decode_error",
)

#: Exploded image rows hashed and decoded per batch (bounds the Python copies of bytes).
_IMAGE_BATCH = 2048
#: Fixed PNG settings of normalised images. zlib level 1: measured on a ~1 MP image,
#: 33 ms and 440 KB against 107 ms and 290 KB at level 6; encoding dominates the
#: per-image cost at MMR1-SFT scale, so we trade bytes for CPU.
PNG_OPTIONS: dict[str, object] = {"format": "PNG", "compress_level": 1, "optimize": False}
_REPLACEMENT_CHAR = "\ufffd"
_PHASH_SIDE, _PHASH_LOW = 32, 8


# ----------------------------------------------------------------------- perceptual hash


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix: ``C @ x`` is the DCT of the column vector ``x``."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    matrix = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    matrix[0] /= math.sqrt(2)
    return matrix


_DCT = _dct_matrix(_PHASH_SIDE)


def phash(img: Image.Image) -> int:
    """64-bit DCT perceptual hash of an image, as an int in ``[0, 2**64)``.

    Grayscale (ITU-R 601 luma), LANCZOS to 32x32, 2-D DCT-II (``C X C^T``), keep
    the 8x8 lowest frequencies, threshold them at the median of the 63 AC
    coefficients: bit = coefficient > median, row-major, first bit most
    significant. The DC bit is 1 for any image that is not flat; coefficients are
    rounded first so flat images of any colour all hash to ``1 << 63`` instead of
    float noise. Measured on 60 smooth test pictures rescaled 0.3x-1.7x, saved as
    JPEG q60 or passed through ``normalise_image``: mean 0.9 bits moved, 99% within
    4, worst 6; distinct pictures differed by 12 bits or more (mean 29).
    """
    gray = img.convert("L").resize((_PHASH_SIDE, _PHASH_SIDE), Image.Resampling.LANCZOS)
    pixels = np.asarray(gray, dtype=np.float64)
    coefficients = np.round(_DCT @ pixels @ _DCT.T, 6)
    low = coefficients[:_PHASH_LOW, :_PHASH_LOW].ravel()
    bits = low > np.median(low[1:])
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two 64-bit hashes."""
    return (a ^ b).bit_count()


# --------------------------------------------------------------------- image normalising


@dataclass(frozen=True)
class NormalisedImage:
    """The outcome of normalising one encoded image: PNG and hashes, or a failure."""

    png: bytes | None = None
    sha256: str | None = None
    phash: int | None = None
    size: tuple[int, int] | None = None
    reason: str | None = None
    detail: str | None = None


def target_size(width: int, height: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Size with about the same aspect ratio and ``width * height`` in the bounds.

    Sides are rounded, then the short side is nudged so the product lands inside
    ``[min_pixels, max_pixels]`` (always <= max_pixels; >= min_pixels whenever
    ``max_pixels - min_pixels`` leaves room for the rounding).
    """
    pixels = width * height
    if min_pixels <= pixels <= max_pixels:
        return width, height
    scale = math.sqrt((max_pixels if pixels > max_pixels else min_pixels) / pixels)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    long_is_w = new_w >= new_h
    long_side, short_side = (new_w, new_h) if long_is_w else (new_h, new_w)
    long_side = min(long_side, max_pixels)
    if long_side * short_side > max_pixels:
        short_side = max(1, max_pixels // long_side)
    if long_side * short_side < min_pixels:
        short_side = min(math.ceil(min_pixels / long_side), max(1, max_pixels // long_side))
    return (long_side, short_side) if long_is_w else (short_side, long_side)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(img, dtype=np.float64)
        peak = values.max() if values.size else 0.0
        if peak > 255:  # 16-bit or wider data: scale the full range down to 8 bits
            values = values * (255.0 / (65535.0 if peak <= 65535 else peak))
        img = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def normalise_image(data: bytes, config: ValidationConfig) -> NormalisedImage:
    """Decode, check and normalise one encoded image (see the module doc)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if width * height > config.max_decoded_pixels:
                return NormalisedImage(
                    reason="image_bomb",
                    detail=f"header claims {width}x{height} = {width * height} pixels "
                    f"(max_decoded_pixels {config.max_decoded_pixels})",
                )
            if width < 1 or height < 1:
                return NormalisedImage(
                    reason="image_decode_error", detail=f"empty image {width}x{height}"
                )
            img.load()
            oriented = ImageOps.exif_transpose(img)
            rgb = _to_rgb(oriented)
    except Image.DecompressionBombError as exc:
        return NormalisedImage(reason="image_bomb", detail=f"PIL refused it: {exc}")
    # Decoders of untrusted bytes raise many types (OSError, SyntaxError, ValueError,
    # struct.error, ...); every one of them means the same thing here.
    except Exception as exc:
        return NormalisedImage(
            reason="image_decode_error", detail=f"cannot decode: {type(exc).__name__}: {exc}"
        )
    size = target_size(rgb.width, rgb.height, config.min_pixels, config.max_pixels)
    if size != rgb.size:
        shrinking = size[0] * size[1] < rgb.width * rgb.height
        method = Image.Resampling.LANCZOS if shrinking else Image.Resampling.BICUBIC
        # reducing_gap: a box reduce first, then LANCZOS; deterministic and much faster
        # on big downscales, visually the same (Pillow docs).
        rgb = rgb.resize(size, method, reducing_gap=3.0 if shrinking else None)
    rgb.info = {}  # no ICC profile, transparency or text chunks in the re-encoded PNG
    buffer = io.BytesIO()
    rgb.save(buffer, **PNG_OPTIONS)
    png = buffer.getvalue()
    return NormalisedImage(
        png=png, sha256=hashlib.sha256(png).hexdigest(), phash=phash(rgb), size=rgb.size
    )


# ---------------------------------------------------------------------- text expressions


def normalise_answer(answer: pl.Expr) -> pl.Expr:
    """Canonical answer: strip, collapse whitespace, drop ``$..$`` and a final period.

    ``" $12$. "`` -> ``"12"``, ``"$12.$"`` -> ``"12"``; ``"$5 and $6"`` and ``"..."``
    stay; case is kept (choice letters, proper names).
    """

    def drop_period(text: pl.Expr) -> pl.Expr:  # one final period, not an ellipsis
        return text.str.replace(r"([^.])\.$", "$1").str.strip_chars()

    text = drop_period(answer.str.strip_chars().str.replace_all(r"\s+", " "))
    text = text.str.replace(r"^\$\$([^$]*)\$\$$", "$1").str.replace(r"^\$([^$]*)\$$", "$1")
    return drop_period(text.str.strip_chars())


def normalise_problem(problem: pl.Expr) -> pl.Expr:
    """``problem_norm``: lowercase, no placeholders, punctuation to spaces, collapsed."""
    return (
        problem.str.replace_all(IMAGE_PLACEHOLDER, " ", literal=True)
        .str.to_lowercase()
        .str.replace_all(r"[^\w\s]|_", " ")
        .str.replace_all(r"\s+", " ")
        .str.strip_chars()
    )


_TextCheck = tuple[pl.Expr, str, pl.Expr]
"""(failed, reason, detail): a row-wise boolean, its quarantine reason and detail expressions."""


def _encoding_checks() -> list[_TextCheck]:
    """``invalid_utf8`` of ``problem``, ``answer`` and any choice (a U+FFFD in it)."""

    def bad(column: pl.Expr) -> pl.Expr:
        return column.str.contains(_REPLACEMENT_CHAR, literal=True).fill_null(False)

    def detail(field: str) -> pl.Expr:
        return pl.lit(f"field '{field}' contains U+FFFD: it was decoded from invalid UTF-8")

    choices = pl.col("choices").list.eval(
        pl.element().str.contains(_REPLACEMENT_CHAR, literal=True)
    )
    return [
        (bad(pl.col("problem")), "invalid_utf8", detail("problem")),
        (bad(pl.col("answer")), "invalid_utf8", detail("answer")),
        (choices.list.any().fill_null(False), "invalid_utf8", detail("choices")),
    ]


def _size_checks(config: ValidationConfig) -> list[_TextCheck]:
    """``empty_problem`` / ``empty_answer``, then ``problem_too_long`` / ``answer_too_long``."""
    problem, answer = pl.col("problem"), pl.col("answer")
    problem_text = problem.str.replace_all(IMAGE_PLACEHOLDER, "", literal=True).str.strip_chars()

    def too_long(name: str, column: pl.Expr, limit: int) -> _TextCheck:
        chars = column.str.len_chars()
        text = f"field '{name}' has {{}} characters (max {{}})"
        return (chars > limit, f"{name}_too_long", pl.format(text, chars, pl.lit(limit)))

    return [
        (
            problem_text.fill_null("") == "",
            "empty_problem",
            pl.lit("field 'problem' has no text besides <image> placeholders"),
        ),
        (answer.fill_null("") == "", "empty_answer", pl.lit("field 'answer' is empty")),
        too_long("problem", problem, config.max_problem_chars),
        too_long("answer", answer, config.max_answer_chars),
    ]


def _choice_checks() -> list[_TextCheck]:
    """``invalid_choices``: an empty option, duplicate options, more options than letters."""
    choices = pl.col("choices")
    n_choices = choices.list.len()
    blank_choice = choices.list.eval(pl.element().is_null() | (pl.element() == "")).list.any()
    return [
        (
            blank_choice.fill_null(False),
            "invalid_choices",
            pl.lit("field 'choices' has an empty option"),
        ),
        (
            (choices.list.n_unique() < n_choices).fill_null(False),
            "invalid_choices",
            pl.format("field 'choices' has duplicate options: {}", choices.list.join(" | ")),
        ),
        (
            (n_choices > len(CHOICE_LETTERS)).fill_null(False),
            "invalid_choices",
            pl.format(
                "field 'choices' has {} options (max {})", n_choices, pl.lit(len(CHOICE_LETTERS))
            ),
        ),
    ]


def _image_count_checks(config: ValidationConfig) -> list[_TextCheck]:
    """``too_many_images``, then ``placeholder_mismatch`` (``<image>`` count != image count)."""
    images = pl.col("images").list.len()
    placeholders = pl.col("problem").str.count_matches(IMAGE_PLACEHOLDER, literal=True)
    return [
        (
            images > config.max_images_per_row,
            "too_many_images",
            pl.format(
                "field 'images' has {} images (max {})", images, pl.lit(config.max_images_per_row)
            ),
        ),
        (
            placeholders != images,
            "placeholder_mismatch",
            pl.format(
                "field 'problem' has {} <image> placeholders but {} image(s)", placeholders, images
            ),
        ),
    ]


def _text_failures(config: ValidationConfig) -> tuple[pl.Expr, pl.Expr]:
    """(reason, detail) expressions: the first failing text check of each row, else null."""
    checks = [
        *_encoding_checks(),
        *_size_checks(config),
        *_choice_checks(),
        *_image_count_checks(config),
    ]
    reason = pl.lit(None, dtype=pl.String)
    detail = pl.lit(None, dtype=pl.String)
    for condition, code, text in reversed(checks):  # nest from the last so the first one wins
        failed = condition.fill_null(False)
        reason = pl.when(failed).then(pl.lit(code)).otherwise(reason)
        detail = pl.when(failed).then(text).otherwise(detail)
    return reason, detail


# ------------------------------------------------------------------------- the step


def validate_frame(frame: pl.DataFrame, config: ValidationConfig) -> StepResult:
    """Check and normalise rows; see the module doc for reasons and normalisation.

    The kept frame has the ``RAW_SCHEMA`` columns (images replaced by normalised
    PNG bytes, paths kept), then ``VALIDATED_COLUMNS``, then any other input
    columns; rows keep their input order.
    """
    frame = ensure_raw_schema(frame.drop([c for c in VALIDATED_COLUMNS if c in frame.columns]))
    extra = [c for c in frame.columns if c not in RAW_SCHEMA]
    reason, detail = _text_failures(config)
    frame = frame.with_row_index("_row").with_columns(
        problem=pl.col("problem").str.strip_chars(),
        answer=normalise_answer(pl.col("answer")),
        choices=pl.col("choices").list.eval(pl.element().str.strip_chars()),
    )
    frame = frame.with_columns(
        choices=pl.when(pl.col("choices").list.len() > 0).then(pl.col("choices")),
        problem_norm=normalise_problem(pl.col("problem")),
    ).with_columns(_reason=reason, _detail=detail)
    text_bad = frame.filter(pl.col("_reason").is_not_null())
    passed = frame.filter(pl.col("_reason").is_null())

    images, image_bad = _validate_images(passed.select("_row", "images"), config)
    kept = (
        passed.drop("images")
        .join(images, on="_row", how="left", maintain_order="left")
        .filter(~pl.col("_row").is_in(image_bad["_row"].implode()))
        .with_columns(
            images=pl.col("images").fill_null(pl.lit([], dtype=pl.List(IMAGE_STRUCT))),
            image_sha256=pl.col("image_sha256").fill_null(pl.lit([], dtype=pl.List(pl.String))),
            image_phash=pl.col("image_phash").fill_null(pl.lit([], dtype=pl.List(pl.UInt64))),
        )
        .sort("_row")
        .select([*RAW_SCHEMA, *VALIDATED_COLUMNS, *extra])
    )
    kept = kept.cast({**RAW_SCHEMA, **VALIDATED_COLUMNS})
    bad = pl.concat(
        [
            text_bad.select("_row", "source", "source_row_id", "_reason", "_detail"),
            image_bad.join(
                frame.select("_row", "source", "source_row_id"), on="_row", how="left"
            ).select("_row", "source", "source_row_id", "_reason", "_detail"),
        ],
        how="vertical",
    ).sort("_row")
    quarantined = bad.select(
        "source",
        "source_row_id",
        reason="_reason",
        detail="_detail",
        duplicate_of=pl.lit(None, dtype=pl.String),
    ).cast(QUARANTINE_SCHEMA)
    return StepResult(kept=kept, quarantined=quarantined)


def _validate_images(
    rows: pl.DataFrame, config: ValidationConfig
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per-row normalised images and hashes, and the rows whose images failed.

    Returns ``(images, bad)``: ``images`` has ``_row, images, image_sha256,
    image_phash`` for rows with at least one image, all good; ``bad`` has
    ``_row, _reason, _detail`` naming the first failing image of each bad row.
    """
    exploded = (
        rows.select(
            "_row",
            "images",
            _pos=pl.int_ranges(pl.col("images").list.len()),
            _n=pl.col("images").list.len(),
        )
        .explode(["images", "_pos"])
        .filter(pl.col("_pos").is_not_null())
        .select(
            "_row",
            "_pos",
            "_n",
            _bytes=pl.col("images").struct.field("bytes"),
            _path=pl.col("images").struct.field("path"),
        )
    )
    size = pl.col("_bytes").bin.size()
    precheck = exploded.with_columns(
        _reason=pl.when(pl.col("_bytes").is_null())
        .then(pl.lit("image_missing"))
        .when(size > config.max_image_bytes)
        .then(pl.lit("image_too_large_bytes")),
        _detail=pl.when(pl.col("_bytes").is_null())
        .then(pl.lit("no bytes (ingest reads image files)"))
        .when(size > config.max_image_bytes)
        .then(pl.format("{} bytes (max {})", size, pl.lit(config.max_image_bytes))),
    )
    outcomes = pl.concat(list(_decode_batches(precheck, config)), how="vertical")
    failed = outcomes.filter(pl.col("_reason").is_not_null())
    bad = (
        failed.sort("_row", "_pos")
        .group_by("_row", maintain_order=True)
        .first()
        .select(
            "_row",
            "_reason",
            _detail=pl.format(
                "field 'images'[{}] (image {} of {}): {}",
                pl.col("_pos"),
                pl.col("_pos") + 1,
                pl.col("_n"),
                pl.col("_detail"),
            ),
        )
    )
    good = (
        outcomes.filter(~pl.col("_row").is_in(bad["_row"].implode()))
        .sort("_row", "_pos")
        .group_by("_row", maintain_order=True)
        .agg(
            images=pl.struct(pl.col("_png").alias("bytes"), pl.col("_path").alias("path")),
            image_sha256=pl.col("_sha256"),
            image_phash=pl.col("_phash"),
        )
    )
    return good, bad


def _decode_batches(precheck: pl.DataFrame, config: ValidationConfig) -> Iterator[pl.DataFrame]:
    """Normalise the images of ``precheck`` batch by batch, each distinct image once."""
    schema = {
        "_png": pl.Binary(),
        "_sha256": pl.String(),
        "_phash": pl.UInt64(),
        "_reason": pl.String(),
        "_detail": pl.String(),
    }
    keep = ["_row", "_pos", "_n", "_path"]
    if precheck.is_empty():
        yield precheck.select(keep).with_columns(
            [pl.lit(None, dtype=d).alias(n) for n, d in schema.items()]
        )
        return
    cache: dict[str, NormalisedImage] = {}
    # PIL warns (once per process) between MAX_IMAGE_PIXELS and twice that; the pixel
    # check above already decides those images, so silence the warning while we decode.
    with (
        ThreadPoolExecutor(max_workers=config.workers) as pool,
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        for batch in precheck.iter_slices(n_rows=_IMAGE_BATCH):
            todo = batch["_reason"].is_null().to_list()
            blobs = batch["_bytes"].to_list()
            keys = list(
                pool.map(_sha256, [b if ok else b"" for b, ok in zip(blobs, todo, strict=True)])
            )
            fresh: dict[str, bytes] = {}
            for key, blob, ok in zip(keys, blobs, todo, strict=True):
                if ok and key not in cache and key not in fresh:
                    fresh[key] = blob
            results = pool.map(partial(normalise_image, config=config), fresh.values())
            cache.update(zip(fresh.keys(), results, strict=True))
            columns: dict[str, list] = {name: [] for name in schema}
            for key, ok, reason, detail in zip(
                keys, todo, batch["_reason"], batch["_detail"], strict=True
            ):
                outcome = cache[key] if ok else NormalisedImage(reason=reason, detail=detail)
                columns["_png"].append(outcome.png)
                columns["_sha256"].append(outcome.sha256)
                columns["_phash"].append(outcome.phash)
                columns["_reason"].append(outcome.reason)
                columns["_detail"].append(outcome.detail)
            yield batch.select(keep).with_columns(
                [pl.Series(name, values, dtype=schema[name]) for name, values in columns.items()]
            )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
