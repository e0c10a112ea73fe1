"""The ``sft`` flow end to end: catalog in, checkpoint out, curves in MLflow.

Runs the recipe in process and through the subprocess launch path
(``accelerate launch -m mmr1.jobs``) that GPU clusters use.
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


def _prefect_view(flow_run_id: str) -> tuple[str, list[str], dict[str, str]]:
    """The flow run's name, tags and artifacts (key -> markdown) as the Prefect API has them."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(flow_run_id))
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)])
            )
        )
    return run.name, run.tags, {a.key: str(a.data) for a in artifacts if a.key}


def test_sft_flow_in_process(sft_home, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.sft import sft

    # An MLflow UI known to serve the local store: its run URL becomes a tag.
    monkeypatch.setenv("MMR1_MLFLOW_UI_URL", "http://mlflow.test:5000/")
    ref = sft(_config())
    _check_outputs(sft_home, ref, flow_run_count=1)
    [run] = find_runs(sft_home, "sft")
    name, tags, artifacts = _prefect_view(run.data.tags["mmr1.prefect_flow_run_id"])
    page = f"#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    # The link opens the MLflow UI's "Model training" view (3.17 opens GenAI otherwise).
    url = f"http://mlflow.test:5000/{page}?workflowType=machine_learning"
    assert {f"mlflow:{run.info.run_id}", f"mlflow-url:{url}"} <= set(tags)
    assert f"]({url})" in artifacts["mlflow-sft"]
    # Progress lands in the run name; the last step is always written.
    assert name == "sft[tiny-sft] step 4/4"
    summary = artifacts["sft-tiny-sft"]
    assert summary.startswith(f"# SFT -> `{ref.removeprefix('checkpoint:')}`")
    assert "4 steps (0 skipped" in summary
    assert "| loss |" in summary and "eval_loss" in summary


def test_mlflow_ui_url_is_known_only_for_a_server_or_a_configured_ui(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tasks.observe import mlflow_ui_url

    monkeypatch.delenv("MMR1_MLFLOW_UI_URL", raising=False)
    assert mlflow_ui_url("sqlite:////tmp/home/mlflow.db") is None  # no URL, no URL tag
    assert mlflow_ui_url("https://mlflow.example.org/") == "https://mlflow.example.org"
    monkeypatch.setenv("MMR1_MLFLOW_UI_URL", "http://127.0.0.1:5001")
    assert mlflow_ui_url("sqlite:////tmp/home/mlflow.db") == "http://127.0.0.1:5001"
    assert mlflow_ui_url("http://tracking:5000") == "http://tracking:5000"


@pytest.mark.slow
def test_sft_flow_through_accelerate_launch(sft_home) -> None:
    from flows.sft import sft

    ref = sft(_config(kind="accelerate", num_processes=1))
    _check_outputs(sft_home, ref, flow_run_count=1)
