"""Coercion of source values into the ingest chunk schema (part of ingest, ``sources.py``).

Two paths produce the same chunk columns: Python values (JSON lines, the synthetic
generator) row by row, and Arrow columns (parquet, arrow, ``datasets``) column by
column, in Python only where the Arrow type leaves no choice. A value that cannot
be coerced marks its row with a quarantine reason instead of failing the source;
a column of an unusable type raises ``SourceError``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from typing import Any

import polars as pl

from mmr1.data.frame import IMAGE_STRUCT

IMAGES = pl.List(IMAGE_STRUCT)
#: One ingest chunk (one file, one dataset) after coercion; ``_reason``/``_detail`` mark
#: rows already known to be bad, ``_file``/``_pos`` say where a row came from.
CHUNK_SCHEMA: dict[str, pl.DataType] = {
    "_index": pl.Int64(),
    "_file": pl.Int32(),
    "_pos": pl.Int64(),
    "_id": pl.String(),
    "problem": pl.String(),
    "answer": pl.String(),
    "images": IMAGES,
    "choices": pl.List(pl.String()),
    "type": pl.String(),
    "difficulty": pl.Int64(),
    # ShareGPT sources only (``mmr1.data.sharegpt``): the gpt turn, and whether ``problem``
    # is the whole user prompt.
    "response": pl.String(),
    "problem_is_prompt": pl.Boolean(),
    "_reason": pl.String(),
    "_detail": pl.String(),
}


#: Chunk columns a layout conversion fills in directly (never mapped from a source column).
PASSTHROUGH = {"response": "__response", "problem_is_prompt": "__problem_is_prompt"}


class SourceError(ValueError):
    """A source that cannot be read at all; the message names the file and the reason."""


class RowError(Exception):
    """One row's field cannot be coerced: quarantined with ``reason`` and ``detail``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


# ------------------------------------------------------------ coercion: Python values


def python_row(record: dict[str, Any], columns: dict[str, str], strict: bool) -> dict[str, Any]:
    """One JSON object -> chunk values; raises ``RowError`` naming the bad field."""
    row: dict[str, Any] = {
        "_id": py_id(record.get(columns["id"]), strict),
        "problem": py_text(record.get(columns["problem"]), "problem", strict),
        "answer": py_text(record.get(columns["answer"]), "answer", strict, lists=True),
        "images": _py_images(record.get(columns["images"]), strict),
        "choices": _py_choices(record.get(columns["choices"]), strict),
        "type": py_text(record.get(columns["type"]), "type", strict),
        "difficulty": _py_int(record.get(columns["difficulty"])),
        "response": record.get(PASSTHROUGH["response"]),
        "problem_is_prompt": record.get(PASSTHROUGH["problem_is_prompt"]),
    }
    return row


def py_id(value: Any, strict: bool) -> str | None:
    return None if value is None else _py_str(value, "id", strict)


def _py_str(value: Any, name: str, strict: bool) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if strict:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise RowError(
                "invalid_utf8", f"field '{name}' holds a lone surrogate (a bad \\u escape)"
            ) from None
    return text


def py_text(value: Any, name: str, strict: bool, *, lists: bool = False) -> str | None:
    """A text field's value as a string (numbers, booleans, UTF-8 bytes; lists for answers)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return _py_str(value if isinstance(value, str) else str(value), name, strict)
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise RowError("invalid_utf8", f"field '{name}' is not valid UTF-8") from None
    if lists and isinstance(value, list | tuple):
        bad = [type(v).__name__ for v in value if not isinstance(v, str | int | float | bool)]
        if bad:
            raise RowError(
                "invalid_field",
                f"field '{name}': a list answer must hold numbers or text, got {bad[0]} items",
            )
        return _py_str(str(list(value)), name, strict)  # MathVista list answers: "[2014, 2016]"
    raise RowError("invalid_field", f"field '{name}': expected text, got {type(value).__name__}")


def _py_int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _py_choices(value: Any, strict: bool) -> list[str | None] | None:
    if value is None:
        return None
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise RowError(
                "invalid_field", "field 'choices': a string that is not a JSON list"
            ) from None
    if not isinstance(value, list | tuple):
        raise RowError(
            "invalid_field", f"field 'choices': expected a list, got {type(value).__name__}"
        )
    options: list[str | None] = []
    for i, item in enumerate(value):
        if item is not None and not isinstance(item, str | int | float):
            raise RowError(
                "invalid_field", f"field 'choices'[{i}]: expected text, got {type(item).__name__}"
            )
        options.append(None if item is None else py_text(item, f"choices[{i}]", strict))
    return options or None


def _py_images(value: Any, strict: bool) -> list[dict[str, Any]]:
    if value is None:
        return []
    items = value if isinstance(value, list | tuple) else [value]
    return [_py_image(item, i, strict) for i, item in enumerate(items)]


#: Leading bytes of the image formats an inline (base64) image may hold.
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"RIFF", b"BM", b"II*\x00", b"MM\x00*")
_BASE64 = re.compile(r"^[A-Za-z0-9+/\s]+={0,2}$")


def inline_image(text: str) -> bytes | None:
    """The bytes of an image written inline as a data URL or plain base64, else None.

    Exported datasets often store images as ``data:image/png;base64,...`` or bare
    base64 strings; a string that is neither (or does not decode to a known image
    format) is a path.
    """
    if text.startswith("data:"):
        header, sep, payload = text.partition(",")
        if not sep or ";base64" not in header:
            return None
        try:
            return base64.b64decode(payload, validate=False)
        except (binascii.Error, ValueError):
            return None
    if len(text) < 64 or not _BASE64.match(text[:4096]):
        return None
    try:
        data = base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError):
        return None
    return data if data.startswith(_IMAGE_MAGIC) else None


def _py_image(item: Any, i: int, strict: bool) -> dict[str, Any]:
    name = f"images[{i}]"
    if item is None:
        return {"bytes": None, "path": None}
    if isinstance(item, str):
        data = inline_image(item)
        if data is not None:
            return {"bytes": data, "path": None}
        return {"bytes": None, "path": _py_str(item, name, strict)}
    if isinstance(item, bytes | bytearray):
        return {"bytes": bytes(item), "path": None}
    if isinstance(item, dict) and set(item) <= {"bytes", "path"}:
        data, path = item.get("bytes"), item.get("path")
        if data is not None and not isinstance(data, bytes | bytearray):
            raise RowError("invalid_field", f"field '{name}.bytes': expected bytes")
        if path is not None and not isinstance(path, str):
            raise RowError("invalid_field", f"field '{name}.path': expected a string")
        return {
            "bytes": None if data is None else bytes(data),
            "path": None if path is None else _py_str(path, name, strict),
        }
    raise RowError(
        "invalid_field",
        f"field '{name}': expected a path, bytes or {{bytes, path}}, got {type(item).__name__}",
    )


# ------------------------------------------------------------ coercion: Arrow columns


def coerce_chunk(
    frame: pl.DataFrame,
    columns: dict[str, str],
    file_id: int,
    offset: int,
    row_errors: dict[int, tuple[str, str]] | None = None,
    *,
    first_pos: int = 0,
) -> pl.DataFrame:
    """Source columns of one file -> a chunk in ``CHUNK_SCHEMA`` (columnar where the
    Arrow type allows; Python only for binary-text, nested-answer and JSON-string columns).

    ``row_errors`` (row -> (reason, detail)) marks rows a layout conversion already
    found bad; they win over coercion errors. The ``PASSTHROUGH`` columns are taken
    as they are when the frame has them. ``offset`` numbers the rows in the source
    (``_index``), ``first_pos`` in their file (``_pos``).
    """
    n = frame.height
    base = pl.DataFrame(
        {
            "_index": pl.int_range(offset, offset + n, eager=True, dtype=pl.Int64),
            "_file": pl.repeat(file_id, n, dtype=pl.Int32, eager=True),
            "_pos": pl.int_range(first_pos, first_pos + n, eager=True, dtype=pl.Int64),
        }
    )
    reasons: list[str | None] = [None] * n
    details: list[str | None] = [None] * n
    for row, (reason, detail) in (row_errors or {}).items():
        reasons[row], details[row] = reason, detail
    out: list[pl.Series] = []
    for target, column in PASSTHROUGH.items():
        dtype = CHUNK_SCHEMA[target]
        if column in frame.columns:
            out.append(frame.get_column(column).cast(dtype).alias(target))
        else:
            out.append(pl.Series(target, [None] * n, dtype=dtype))
    for name, coerce in _COERCERS.items():
        target = "_id" if name == "id" else name
        column = columns[name]
        if column not in frame.columns:
            out.append(pl.Series(target, [None] * n, dtype=CHUNK_SCHEMA[target]))
            continue
        series, errors = coerce(frame.get_column(column), name)
        out.append(series.alias(target))
        for row, (reason, detail) in errors.items():
            if reasons[row] is None:
                reasons[row], details[row] = reason, detail
    chunk = base.with_columns(
        *out,
        pl.Series("_reason", reasons, dtype=pl.String),
        pl.Series("_detail", details, dtype=pl.String),
    )
    return chunk.select(list(CHUNK_SCHEMA))


_Errors = dict[int, tuple[str, str]]


def _python_column(
    series: pl.Series, convert: Callable[[Any], Any], dtype: pl.DataType
) -> tuple[pl.Series, _Errors]:
    values: list[Any] = []
    errors: _Errors = {}
    for row, value in enumerate(series.to_list()):
        try:
            values.append(convert(value))
        except RowError as exc:
            values.append(None)
            errors[row] = (exc.reason, exc.detail)
    return pl.Series(series.name, values, dtype=dtype), errors


def _text_series(series: pl.Series, name: str) -> tuple[pl.Series, _Errors]:
    dtype = series.dtype
    if dtype == pl.String:
        return series, {}
    if dtype == pl.Null or dtype.is_numeric() or dtype in (pl.Boolean, pl.Categorical):
        return series.cast(pl.String), {}
    if isinstance(dtype, pl.Enum):
        return series.cast(pl.String), {}
    lists = name == "answer"
    return _python_column(series, lambda v: py_text(v, name, False, lists=lists), pl.String())


def _id_series(series: pl.Series, name: str) -> tuple[pl.Series, _Errors]:
    if series.dtype == pl.String:
        return series, {}
    if series.dtype == pl.Null or series.dtype.is_numeric():
        return series.cast(pl.String), {}
    return _python_column(series, lambda v: py_id(v, False), pl.String())


def _choices_series(series: pl.Series, name: str) -> tuple[pl.Series, _Errors]:
    dtype = series.dtype
    if dtype == pl.Null:
        out = series.cast(pl.List(pl.String))
    elif isinstance(dtype, pl.List) and (
        dtype.inner in (pl.String, pl.Null) or dtype.inner.is_numeric()
    ):
        out = series.cast(pl.List(pl.String))
    else:
        return _python_column(series, lambda v: _py_choices(v, False), pl.List(pl.String()))
    column = pl.col(out.name)
    return out.to_frame().select(pl.when(column.list.len() > 0).then(column)).to_series(), {}


def _difficulty_series(series: pl.Series, name: str) -> tuple[pl.Series, _Errors]:
    if series.dtype.is_numeric() or series.dtype in (pl.String, pl.Null):
        if series.dtype.is_float():
            series = series.floor()
        return series.cast(pl.Int64, strict=False), {}
    return pl.Series(series.name, [None] * series.len(), dtype=pl.Int64), {}


def _image_struct(data: pl.Expr, path: pl.Expr) -> pl.Expr:
    return pl.struct(data.cast(pl.Binary).alias("bytes"), path.cast(pl.String).alias("path"))


def _struct_item(expr: pl.Expr, dtype: pl.Struct) -> pl.Expr | None:
    names = {f.name for f in dtype.fields}
    if not names or not names <= {"bytes", "path"}:
        return None
    data = expr.struct.field("bytes") if "bytes" in names else pl.lit(None, pl.Binary)
    path = expr.struct.field("path") if "path" in names else pl.lit(None, pl.String)
    return _image_struct(data, path)


def _item_expr(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr | None:
    """One image value of Arrow type ``dtype`` -> an ``IMAGE_STRUCT`` expression."""
    if isinstance(dtype, pl.Struct):
        return _struct_item(expr, dtype)
    if dtype == pl.String:
        return _image_struct(pl.lit(None, pl.Binary), expr)
    if dtype == pl.Binary:
        return _image_struct(expr, pl.lit(None, pl.String))
    if dtype == pl.Null:
        return _image_struct(pl.lit(None, pl.Binary), pl.lit(None, pl.String))
    return None


def _images_series(series: pl.Series, name: str) -> tuple[pl.Series, _Errors]:
    dtype = series.dtype
    column = pl.col(series.name)
    empty = pl.lit([], dtype=IMAGES)
    expr: pl.Expr | None = None
    if dtype == pl.Null:
        expr = empty
    elif isinstance(dtype, pl.List):
        item = _item_expr(pl.element(), dtype.inner)
        if item is not None:
            expr = column.list.eval(item).fill_null(empty)
    else:
        item = _item_expr(column, dtype)
        if item is not None:
            expr = pl.when(column.is_null()).then(empty).otherwise(pl.concat_list(item))
    if expr is not None:
        return series.to_frame().select(expr.cast(IMAGES)).to_series(), {}
    raise SourceError(
        f"column {series.name!r} (field 'images') has type {dtype}; expected {{bytes, path}} "
        "structs, paths, bytes, or lists of them"
    )


_COERCERS: dict[str, Callable[[pl.Series, str], tuple[pl.Series, _Errors]]] = {
    "id": _id_series,
    "problem": _text_series,
    "answer": _text_series,
    "images": _images_series,
    "choices": _choices_series,
    "type": _text_series,
    "difficulty": _difficulty_series,
}
