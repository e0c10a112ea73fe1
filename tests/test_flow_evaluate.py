"""The ``evaluate`` flow on two tiny checkpoints: catalog results, MLflow, resumable shards."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest
from mlflow.tracking import MlflowClient
from pydantic import ValidationError

from mmr1.catalog import Catalog
from mmr1.data.io import write_rl_dataset
from mmr1.data.synthetic import generate_benchmark
from mmr1.eval.leaderboard import compare
from mmr1.hashing import hash_directory
from mmr1.models import build_tiny_model
from mmr1.tracking import find_runs
from schemas.eval import EvaluateConfig
from schemas.home import HomeConfig
from schemas.models import TinyVLMConfig
from schemas.pipeline import PipelineConfig
from schemas.presets import load_config

N_ITEMS = 6


def _make_home(root: Path, files_in: Path | None, monkeypatch: pytest.MonkeyPatch):
    """A home at ``root`` with checkpoints tiny-a, tiny-b and the benchmark ``bench``,
    their files under ``files_in`` (None: inside the home, as the pipeline writes them)."""
    monkeypatch.setenv("MMR1_HOME", str(root))
    home = HomeConfig().ensure()
    catalog = Catalog(home.catalog)
    for name, seed in (("tiny-a", 0), ("tiny-b", 1)):
        where = (files_in or home.checkpoints) / name
        model_dir = build_tiny_model(TinyVLMConfig(seed=seed), where)
        catalog.register_checkpoint(
            name=name, stage="base", uri=str(model_dir), content_hash=hash_directory(model_dir)
        )
    records = [item.record for item in generate_benchmark(seed=0, n_items=N_ITEMS + 2)]
    bench = (files_in or home.datasets) / "bench"
    files = write_rl_dataset(records, bench)
    catalog.register_dataset(
        name="bench",
        kind="benchmark",
        uri=str(bench),
        content_hash=files.content_hash,
        row_count=files.row_count,
        columns=files.columns,
    )
    return home


@pytest.fixture
def eval_home(prefect_harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    return _make_home(tmp_path / "home", tmp_path, monkeypatch)


def _config() -> EvaluateConfig:
    return EvaluateConfig.model_validate(
        {
            "checkpoints": ["tiny-a", "tiny-b"],
            "benchmarks": [{"name": "synthetic", "source": "bench", "limit": N_ITEMS}],
            "sampling": {"temperature": 0.0, "max_new_tokens": 8},
            "sampled_k": 2,
            "baseline": "tiny-b",
            "shard_size": 4,
            "score_workers": 1,
            "device": "cpu",
        }
    )


def _shards(home) -> dict[str, dict[str, int]]:
    """Work dir name -> shard file -> mtime (ns)."""
    return {
        work.name: {shard.name: shard.stat().st_mtime_ns for shard in work.glob("shard-*.parquet")}
        for work in sorted((home.runs / "eval").iterdir())
    }


def _reported(catalog: Catalog, ref: str) -> dict:
    """What the evaluate flow reported: its record's results, leaderboard and MLflow run."""
    entry = catalog.get_dataset(ref)
    return {**entry.metadata, "mlflow_run_id": entry.mlflow_run_id}


def test_flow_records_results_and_resumes_from_shards(eval_home) -> None:
    from flows.evaluate import evaluate

    ref = evaluate(_config())
    catalog = Catalog(eval_home.catalog)
    out = _reported(catalog, ref)
    assert set(out["results"]) == {"tiny-a@1", "tiny-b@1"}
    for scores in out["results"].values():
        assert set(scores) == {"synthetic"} and 0.0 <= scores["synthetic"] <= 1.0
    assert "tiny-a@1" in out["leaderboard"] and "tiny-b@1" in out["leaderboard"]
    assert "MMR1-7B-RL (paper)" in out["leaderboard"]
    # The evaluation is a catalog entry: a row per checkpoint and benchmark, with lineage.
    record = catalog.get_dataset(ref)
    assert ref == f"dataset:{record.ref}" and record.kind == "evaluation"
    assert record.row_count == 2
    parents = {p.ref for p in catalog.lineage(record.ref).parents}
    assert parents == {"tiny-a@1", "tiny-b@1", "bench@1"}

    bench_ids = [item.record.id for item in generate_benchmark(seed=0, n_items=N_ITEMS + 2)]
    bench_ids = bench_ids[:N_ITEMS]
    for ref in ("tiny-a@1", "tiny-b@1"):
        (result,) = catalog.eval_results(checkpoint_ref=ref)
        assert (result.benchmark, result.split, result.scorer) == ("synthetic", "test", "rule")
        assert result.n_items == N_ITEMS and result.checkpoint_ref == ref
        assert result.metrics["accuracy"] == pytest.approx(out["results"][ref]["synthetic"])
        assert result.metrics["n_correct"] == pytest.approx(N_ITEMS * result.metrics["accuracy"])
        assert result.metrics["n_invalid"] == 0.0  # every row of the synthetic source is readable
        assert set(result.breakdown) == {"family", "difficulty"}
        assert result.mlflow_run_id == out["mlflow_run_id"] and result.prefect_flow_run_id
        predictions = pl.read_parquet(result.predictions_uri)
        assert predictions["item_id"].to_list() == bench_ids
        assert {"response", "extracted", "correct", "scorer", "n_tokens", "finish_reason"} <= set(
            predictions.columns
        )
        assert predictions["n_tokens"].max() <= 8
        assert predictions["correct"].sum() == result.metrics["n_correct"]
        # Two samples at temperature 1 per item: sampled accuracy with its interval.
        sampled = predictions["sampled_correct"].to_list()
        assert [len(s) for s in sampled] == [2] * N_ITEMS
        assert result.metrics["sampled_k"] == 2 and result.metrics["sampled_temperature"] == 1.0
        expected = sum(sum(s) / 2 for s in sampled) / N_ITEMS
        assert result.metrics["sampled_accuracy"] == pytest.approx(expected)
        low, high = result.metrics["accuracy_ci95_lo"], result.metrics["accuracy_ci95_hi"]
        assert low <= result.metrics["accuracy"] <= high and high - low > 0.2
        assert "sampled_accuracy_ci95_lo" in result.metrics

    (run,) = find_runs(eval_home, "evaluate")
    assert run.info.status == "FINISHED" and run.info.run_id == out["mlflow_run_id"]
    for name in ("tiny-a", "tiny-b"):
        assert f"eval/{name}/synthetic/accuracy" in run.data.metrics
    reads = run.data.tags["mmr1.reads"].split(",")
    assert {"checkpoint:tiny-a@1", "checkpoint:tiny-b@1", "dataset:bench@1"} <= set(reads)
    client = MlflowClient(eval_home.tracking_uri)
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"leaderboard.md", "leaderboard.json", "comparison.json"} <= top
    # Paired against the configured baseline, intervals and p-values in the printed table.
    assert "p-values paired against tiny-b@1" in out["leaderboard"]
    assert "(k=2)" in out["leaderboard"] and "baseline" in out["leaderboard"]
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "eval/tiny-a-v1/synthetic")}
    assert logged == {
        "eval/tiny-a-v1/synthetic/predictions.parquet",
        "eval/tiny-a-v1/synthetic/score.json",
    }

    # Two work dirs (one per checkpoint), each with a full and a partial shard.
    before = _shards(eval_home)
    assert len(before) == 2
    assert all(set(s) == {"shard-00000.parquet", "shard-00001.parquet"} for s in before.values())

    # Lose one shard: the rerun recomputes only that one and reuses the other three.
    lost_dir = next(name for name in before if name.startswith("tiny-a"))
    (eval_home.runs / "eval" / lost_dir / "shard-00001.parquet").unlink()
    again = _reported(catalog, evaluate(_config()))
    after = _shards(eval_home)
    for work, shards in after.items():
        for shard, mtime in shards.items():
            recomputed = (work, shard) == (lost_dir, "shard-00001.parquet")
            assert (mtime != before[work][shard]) == recomputed, (work, shard)
    # Greedy decoding: the same answers, scores and (content-addressed) predictions file.
    assert again["results"] == out["results"]
    for ref in ("tiny-a@1", "tiny-b@1"):
        # The same generations, scorer and code: recorded once, not twice.
        (only,) = catalog.eval_results(checkpoint_ref=ref)
        assert only.predictions_uri.endswith("predictions.parquet")

    # What `mmr1 eval compare` prints: latest result per benchmark, reference rows.
    text = compare(catalog, ["tiny-a", "tiny-b"])
    assert text.splitlines()[2].startswith("tiny-a@1") and "tiny-b@1" in text
    assert "MMR1-3B-RL (paper)" in text
    assert "paper" not in compare(catalog, ["tiny-a"], include_reference=False)


def test_a_moved_home_reuses_its_evaluation_shards(
    prefect_harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shards are keyed by the checkpoint's content hash, not by where its files lie."""
    from flows.evaluate import evaluate

    first_home = _make_home(tmp_path / "first", None, monkeypatch)
    first = _reported(Catalog(first_home.catalog), evaluate(_config()))
    before = _shards(first_home)
    shutil.copytree(tmp_path / "first", tmp_path / "moved")  # keeps the files' mtimes
    shutil.rmtree(tmp_path / "first")
    monkeypatch.setenv("MMR1_HOME", str(tmp_path / "moved"))
    moved_home = HomeConfig().ensure()
    again = _reported(Catalog(moved_home.catalog), evaluate(_config()))
    assert _shards(moved_home) == before  # the same work dirs, no shard written again
    assert again["results"] == first["results"]


def test_presets_validate() -> None:
    demo = load_config(EvaluateConfig, "eval-demo")
    assert [spec.name for spec in demo.benchmarks] == ["synthetic"]
    assert demo.benchmarks[0].source == "synthetic-bench" and demo.sampling.temperature == 0.0
    assert (demo.sampled_k, demo.sampled_temperature, demo.baseline) == (8, 1.0, "tiny-sft")
    assert load_config(PipelineConfig, "demo").evaluate.sampled_k == 8
    paper = load_config(EvaluateConfig, "eval-paper-7b")
    splits = {spec.name: spec.split for spec in paper.benchmarks}
    assert splits == {
        "mathverse": "testmini",
        "mathvista": "testmini",
        "mathvision": "test",
        "logicvista": "test",
        "chartqa": "test",
    }
    assert paper.sampling.temperature == 0.0 and paper.sampling.max_new_tokens == 4096
    assert paper.sampled_k == 0 and paper.sampled_params() is None
    assert paper.backend is not None and paper.backend.kind == "vllm"
    assert all(spec.prompt_style == "mmr1" for spec in paper.benchmarks)


def test_config_rejects_repeated_benchmarks_and_several_samples() -> None:
    spec = {"name": "synthetic", "source": "bench"}
    with pytest.raises(ValidationError, match="appear more than once"):
        EvaluateConfig.model_validate({"benchmarks": [spec, {**spec, "split": "x"}]})
    with pytest.raises(ValidationError, match="sampling.n must be 1"):
        EvaluateConfig.model_validate({"sampling": {"n": 4}})
    # No checkpoints: valid inside the pipeline (it sets them), refused for a run on its own.
    from schemas.presets import ConfigError
    from tasks.parameters import require_inputs

    with pytest.raises(ConfigError, match="EvaluateConfig: checkpoints not set"):
        require_inputs(EvaluateConfig.model_validate({"checkpoints": []}))
