"""The ``sft`` flow end to end: catalog in, checkpoint out, curves in MLflow.

Runs the recipe in process and through the subprocess launch path
(``accelerate launch -m mmr1.train.sft_main``) that GPU clusters use.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mmr1.catalog import Catalog
from mmr1.data.io import write_sft_dataset
from mmr1.data.synthetic import generate_items, to_sft_record
from mmr1.hashing import hash_directory
from mmr1.models import build_tiny_model
from mmr1.tracking import find_runs
from schemas.models import TinyVLMConfig
from schemas.sft_flow import SFTStageConfig
from schemas.synthetic import SyntheticConfig


@pytest.fixture
def sft_home(prefect_harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from schemas.home import HomeConfig

    monkeypatch.setenv("MMR1_HOME", str(tmp_path / "home"))
    home = HomeConfig().ensure()
    catalog = Catalog(home.catalog)
    model_dir = build_tiny_model(TinyVLMConfig(), tmp_path / "base")
    catalog.register_checkpoint(
        name="tiny", stage="base", uri=str(model_dir), content_hash=hash_directory(model_dir)
    )
    items = generate_items(SyntheticConfig(n_items=24, families=["shape_color"]))
    data_dir = tmp_path / "sft-data"
    files = write_sft_dataset([to_sft_record(item) for item in items], data_dir)
    catalog.register_dataset(
        name="sft-data",
        kind="sft",
        uri=str(data_dir),
        content_hash=files.content_hash,
        row_count=files.row_count,
        columns=files.columns,
    )
    return home


def _config(**launch) -> SFTStageConfig:
    return SFTStageConfig.model_validate(
        {
            "dataset": "sft-data",
            "base_model": "tiny",
            "output_name": "tiny-sft",
            "train": {
                "lr": 1e-3,
                "max_steps": 4,
                "micro_batch_size": 4,
                "grad_accum": 1,
                "eval_every": 2,
                "eval_max_items": 2,
                "eval_max_new_tokens": 8,
                "save_every": 2,
                "log_every": 1,
                "eval_fraction": 0.1,
            },
            "launch": launch or {"kind": "inprocess"},
        }
    )


def _check_outputs(home, ref: str, flow_run_count: int) -> None:
    catalog = Catalog(home.catalog)
    entry = catalog.get_checkpoint(ref.removeprefix("checkpoint:"))
    assert entry.stage == "sft" and entry.step == 4
    assert (Path(entry.uri) / "model.safetensors").is_file()
    parents = {p.ref for p in catalog.lineage(entry.ref, kind="checkpoint").parents}
    assert parents == {"sft-data@1", "tiny@1"}
    runs = find_runs(home, "sft")
    assert len(runs) == flow_run_count
    run = runs[0]
    history = run.data.metrics
    assert "loss" in history and "lr" in history and "grad_norm" in history
    from mlflow.tracking import MlflowClient

    client = MlflowClient(home.tracking_uri)
    losses = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in losses] == [1, 2, 3, 4]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/loss_curve.png" in artifacts


def test_sft_flow_in_process(sft_home) -> None:
    from flows.sft import sft

    ref = sft(_config())
    _check_outputs(sft_home, ref, flow_run_count=1)


@pytest.mark.slow
def test_sft_flow_through_accelerate_launch(sft_home) -> None:
    from flows.sft import sft

    ref = sft(_config(kind="accelerate", num_processes=1))
    _check_outputs(sft_home, ref, flow_run_count=1)
