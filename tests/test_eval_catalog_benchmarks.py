"""Real benchmarks registered in the catalog, so curation decontaminates against them."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
from test_eval_benchmarks import logicvista_row, png, write_parquet

from cli.main import main
from mmr1.catalog import Catalog
from mmr1.data.benchmark_index import BenchmarkIndex
from mmr1.data.decontam import decontaminate
from mmr1.data.frame import ensure_raw_schema
from mmr1.data.sources import read_source
from mmr1.data.validate import validate_frame
from schemas.curation import DecontaminationConfig, LocalSource, ValidationConfig


def test_register_benchmarks_and_decontaminate_against_them(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("MMR1_HOME", str(tmp_path / "home"))
    rows = [logicvista_row(0, "A"), logicvista_row(1, "", "numerical"), logicvista_row(2, "C")]
    source = write_parquet(tmp_path / "logicvista" / "test.parquet", rows)
    args = [
        "benchmark",
        "register",
        "--set",
        f"benchmarks=[{{name: logicvista, source: {source}}}]",
    ]
    assert main(args) == 0
    assert "dataset:logicvista-test@1  2 items" in capsys.readouterr().out
    assert main(args) == 0  # the same items: the same version
    catalog = Catalog(Path(os.environ["MMR1_HOME"]) / "catalog.duckdb")
    [entry] = catalog.list_datasets(kind="benchmark")
    assert (entry.ref, entry.row_count) == ("logicvista-test@1", 2)
    assert entry.metadata["invalid_items"] == 1 and entry.metadata["split"] == "test"

    # What curation's decontamination step reads of it, and a training row that copies item 2.
    validation = ValidationConfig(min_pixels=1)
    bench = validate_frame(read_source(LocalSource(name="b", path=entry.uri)).kept, validation)
    index = BenchmarkIndex.build([bench.kept], DecontaminationConfig())
    copied = rows[2]
    train = pl.DataFrame(
        {
            "row_id": ["t/0", "t/1"],
            "source": ["t", "t"],
            "source_row_id": ["0", "1"],
            "problem": [
                f"<image>\n{copied['question']}",
                "<image>\nAn unrelated question, really.",
            ],
            "answer": ["C", "B"],
            # An identical image is contamination on its own: the unrelated row has its own.
            "images": [[{"bytes": copied["image"], "path": None}], [{"bytes": png("black")}]],
        }
    )
    clean = validate_frame(ensure_raw_schema(train), validation).kept
    result = decontaminate(clean, index, DecontaminationConfig())
    assert result.quarantined["source_row_id"].to_list() == ["0"]
    assert result.quarantined["reason"].to_list()[0].startswith("contaminated")
