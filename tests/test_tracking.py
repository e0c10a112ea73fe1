"""MLflow tracking against a real SQLite store under a temporary home."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from mmr1.tracking import find_runs, flatten_params, start_run
from mmr1.tracking.runs import TAG_PREFECT_FLOW_RUN, TAG_READS, TAG_WRITES


class _Inner(BaseModel):
    lr: float = 1e-5
    betas: list[float] = [0.9, 0.95]


class _Config(BaseModel):
    name: str = "x"
    inner: _Inner = _Inner()


def test_flatten_params_nested_and_truncated() -> None:
    params = flatten_params(_Config())
    assert params == {"name": "x", "inner.lr": "1e-05", "inner.betas": "[0.9, 0.95]"}
    long = flatten_params({"blob": "y" * 10_000})
    assert len(long["blob"]) == 6000 and long["blob"].endswith("[truncated]")


def test_run_is_tagged_logged_and_stored_under_home(home, tmp_path: Path) -> None:
    with start_run(home, "unit", prefect_flow_run_id="flow-123", config=_Config()) as run:
        run.log_metrics({"loss": 0.5, "nan": float("nan")}, step=2)
        run.record_reads(["dataset:a@1"])
        run.record_writes(["checkpoint:b@1", "dataset:c@2"])
        run.log_dataset_input(
            name="a@1", digest="f" * 64, uri=str(tmp_path), context="training", columns={"x": "int"}
        )
    assert home.tracking_uri == f"sqlite:///{home.root / 'mlflow.db'}"
    [stored] = find_runs(home, "unit")
    assert stored.info.status == "FINISHED"
    assert stored.data.tags[TAG_PREFECT_FLOW_RUN] == "flow-123"
    assert stored.data.tags[TAG_READS] == "dataset:a@1"
    assert stored.data.tags[TAG_WRITES] == "checkpoint:b@1,dataset:c@2"
    assert stored.data.params == {"name": "x", "inner.lr": "1e-05", "inner.betas": "[0.9, 0.95]"}
    assert stored.data.metrics == {"loss": 0.5}
    [dataset_input] = stored.inputs.dataset_inputs
    assert dataset_input.dataset.name == "a@1"
    assert {t.key: t.value for t in dataset_input.tags}["mlflow.data.context"] == "training"
    artifact_dir = Path(stored.info.artifact_uri.removeprefix("file://"))
    assert artifact_dir.is_relative_to(home.artifacts)
    assert "inner:" in (artifact_dir / "config.yaml").read_text()


def test_failed_block_marks_run_failed(home) -> None:
    with pytest.raises(RuntimeError), start_run(home, "unit-fail"):
        raise RuntimeError("boom")
    [stored] = find_runs(home, "unit-fail")
    assert stored.info.status == "FAILED"
    # Stopped from outside (Ctrl-C; a cancelled Prefect run's termination signal).
    with pytest.raises(KeyboardInterrupt), start_run(home, "unit-killed"):
        raise KeyboardInterrupt
    [stored] = find_runs(home, "unit-killed")
    assert stored.info.status == "KILLED"


def test_env_tracking_uri_overrides_default(tmp_path: Path, monkeypatch) -> None:
    from schemas.home import HomeConfig

    uri = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MMR1_HOME", str(tmp_path / "h"))
    assert HomeConfig().tracking_uri == uri


def test_reads_and_writes_merge_across_handles(home) -> None:
    from mmr1.tracking import TrackedRun, configure_tracking

    with start_run(home, "unit-merge") as run:
        run.record_writes(["dataset:a@1"])
        other = TrackedRun(configure_tracking(home), run.run_id)
        other.record_writes(["checkpoint:b@1", "dataset:a@1"])
        other.record_reads(["dataset:z@2"])
    [stored] = find_runs(home, "unit-merge")
    assert stored.data.tags[TAG_WRITES] == "dataset:a@1,checkpoint:b@1"
    assert stored.data.tags[TAG_READS] == "dataset:z@2"


def test_stage_runs_nest_in_the_pipeline_experiment_and_link_from_their_own(home) -> None:
    from mlflow.tracking import MlflowClient

    from mmr1.tracking import child_runs
    from mmr1.tracking.runs import MODEL_TRAINING_KIND, TAG_EXPERIMENT_KIND, TAG_NESTED_RUN

    with start_run(home, "unit-pipeline", run_name="unit-pipeline[demo]") as parent:
        with start_run(
            home,
            "unit-stage",
            run_name="unit-stage[x]",
            config=_Config(),
            parent_run_id=parent.run_id,
        ) as stage:
            stage.log_metrics({"loss": 0.5}, step=1)
            stage.log_metrics({"loss": 0.25}, step=2)
            stage.record_writes(["checkpoint:s@1"])
        with (
            pytest.raises(RuntimeError),
            start_run(home, "unit-stage", run_name="unit-stage[y]", parent_run_id=parent.run_id),
        ):
            raise RuntimeError("stage failed")
    client = MlflowClient(home.tracking_uri)
    pipeline_experiment = client.get_run(parent.run_id).info.experiment_id
    # The MLflow UI shows children under their parent within one experiment.
    children = child_runs(home, parent.run_id)
    assert [c.info.run_name for c in children] == ["unit-stage[x]", "unit-stage[y]"]
    assert [c.info.status for c in children] == ["FINISHED", "FAILED"]
    assert {c.info.experiment_id for c in children} == {pipeline_experiment}
    assert children[0].info.run_id == stage.run_id
    assert children[0].data.params == {
        "name": "x",
        "inner.lr": "1e-05",
        "inner.betas": "[0.9, 0.95]",
    }
    # The flow's own experiment keeps a link run per stage run: config, final metrics, status.
    own = client.get_experiment_by_name("mmr1/unit-stage")
    links = {r.info.run_name: r for r in client.search_runs([own.experiment_id])}
    assert set(links) == {"unit-stage[x]", "unit-stage[y]"}
    link = links["unit-stage[x]"]
    assert link.data.tags[TAG_NESTED_RUN] == stage.run_id
    assert "mlflow.parentRunId" not in link.data.tags
    assert (
        f"#/experiments/{pipeline_experiment}/runs/{stage.run_id}"
        in link.data.tags["mlflow.note.content"]
    )
    assert link.data.metrics == {"loss": 0.25}
    assert link.data.params == children[0].data.params
    assert link.data.tags[TAG_WRITES] == "checkpoint:s@1"
    assert (link.info.status, links["unit-stage[y]"].info.status) == ("FINISHED", "FAILED")
    # find_runs lists each run of a flow once, wherever it lives.
    assert [r.info.run_id for r in find_runs(home, "unit-stage")] == [
        c.info.run_id for c in reversed(children)
    ]
    # Every experiment is a model-training one for the MLflow UI, old ones included.
    old = client.create_experiment("mmr1/unit-old", artifact_location=home.artifacts.as_uri())
    with start_run(home, "unit-old"):
        pass
    for name in ("mmr1/unit-pipeline", "mmr1/unit-stage", "mmr1/unit-old"):
        tags = client.get_experiment_by_name(name).tags
        assert tags[TAG_EXPERIMENT_KIND] == MODEL_TRAINING_KIND == "custom_model_development"
    assert client.get_experiment(old).tags[TAG_EXPERIMENT_KIND] == MODEL_TRAINING_KIND


def test_a_moved_home_keeps_its_artifacts_in_the_home(home, tmp_path: Path) -> None:
    """MLflow stores absolute artifact locations; a moved home is pointed back inside itself."""
    import shutil

    from mlflow.tracking import MlflowClient

    from schemas.home import HomeConfig

    with start_run(home, "unit", run_name="before") as run:
        run.log_text("old", "notes/old.txt")
    moved = tmp_path / "moved-home"
    shutil.move(home.root, moved)
    new_home = HomeConfig(root=moved)

    with start_run(new_home, "unit", run_name="after") as run:
        run.log_text("new", "notes/new.txt")

    client = MlflowClient(tracking_uri=new_home.tracking_uri)
    experiment = client.get_experiment_by_name("mmr1/unit")
    assert experiment.artifact_location == (moved / "mlartifacts" / "unit").as_uri()
    runs = {r.info.run_name: r for r in find_runs(new_home, "unit")}
    for name, text in (("before", "old"), ("after", "new")):
        uri = runs[name].info.artifact_uri
        assert uri.startswith(experiment.artifact_location + "/"), uri
        local = Path(client.download_artifacts(runs[name].info.run_id, f"notes/{text}.txt"))
        assert local.read_text() == text
    assert not home.root.exists()  # nothing was written at the old place


def test_a_store_laid_out_elsewhere_is_not_rewritten(home, tmp_path: Path) -> None:
    """Only the pipeline's own layout (``<artifact root>/<flow>``) is relocated."""
    from mlflow.tracking import MlflowClient

    from mmr1.tracking.relocate import relocate_artifact_roots

    client = MlflowClient(tracking_uri=home.tracking_uri)
    foreign = (tmp_path / "team-artifacts" / "shared").as_uri()
    client.create_experiment("mmr1/unit", artifact_location=foreign)
    assert relocate_artifact_roots(home) == []
    assert client.get_experiment_by_name("mmr1/unit").artifact_location == foreign
