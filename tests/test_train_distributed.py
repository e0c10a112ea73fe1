"""SFT as an ``accelerate launch`` job: the command line, and 2 gloo processes == 1 process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mmr1 import jobs as trainer_main
from mmr1.data.io import write_sft_dataset
from mmr1.data.synthetic import generate_items, to_sft_record
from mmr1.models import build_tiny_model
from mmr1.trainer.launch import launch_command
from schemas.jobs import SFTJob, TrackingSpec
from schemas.launch import LaunchConfig
from schemas.models import TinyVLMConfig
from schemas.records import ChatTurn
from schemas.sft import SFTConfig, SFTResult
from schemas.synthetic import SyntheticConfig

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(**values: object) -> LaunchConfig:
    return LaunchConfig.model_validate({"kind": "accelerate", **values})


def test_launch_command_picks_the_multi_process_launcher(tmp_path: Path) -> None:
    one = launch_command(Path("job.json"), _launch(num_processes=1))
    assert one[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert "--multi_gpu" not in one
    assert one[one.index("-m", 3) :] == ["-m", "mmr1.jobs", "job.json"]
    two = launch_command(
        Path("job.json"),
        _launch(
            num_processes=2,
            accelerate_config=str(ROOT / "deployments/accelerate/ddp_cpu.yaml"),
            python="/env/bin/python",
            main_process_port=29999,
        ),
    )
    # A MULTI_CPU config alone starts one process: --multi_gpu selects torchrun (gloo on CPU).
    assert two[0] == "/env/bin/python" and "--multi_gpu" in two
    assert two[two.index("--num_processes") + 1] == "2"
    assert two[two.index("--main_process_port") + 1] == "29999"
    zero3 = ROOT / "deployments/accelerate/deepspeed_zero3.yaml"
    # --multi_gpu would override the file's DEEPSPEED type.
    assert "--multi_gpu" not in launch_command(
        Path("c"), _launch(num_processes=8, accelerate_config=str(zero3))
    )
    custom = tmp_path / "multi_gpu.yaml"
    custom.write_text("distributed_type: MULTI_GPU\nnum_processes: 2\n")
    assert "--multi_gpu" not in launch_command(
        Path("c"), _launch(num_processes=2, accelerate_config=str(custom))
    )


def test_the_job_entry_point_rejects_a_bad_spec(tmp_path: Path) -> None:
    bad = tmp_path / "job.json"
    spec = {"kind": "sft", "config": {"lr": 1e-3, "packing": True}, "model_path": "m"}
    bad.write_text(json.dumps(spec | {"dataset_path": "d", "output_dir": str(tmp_path)}))
    assert trainer_main.main([str(bad)]) == 2
    assert trainer_main.main([]) == 2  # usage


@pytest.fixture(scope="module")
def job_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("dist")
    model = build_tiny_model(TinyVLMConfig(), root / "model")
    records = []
    for i, item in enumerate(generate_items(SyntheticConfig(n_items=36))):
        record = to_sft_record(item)
        if i % 4 == 0:  # text-only rows: the vision tower goes unused in some micro-batches
            turns = [
                ChatTurn.model_validate(
                    {"from": t.from_, "value": t.value.replace("<image>", "(no image)")}
                )
                for t in record.conversations
            ]
            record = record.model_copy(update={"conversations": turns, "images": []})
        records.append(record)
    write_sft_dataset(records, root / "data")
    return model, root / "data"


def run_job(
    tmp: Path,
    model: Path,
    data: Path,
    *,
    processes: int,
    accum: int,
    tracking: TrackingSpec | None = None,
) -> SFTResult:
    cfg = {
        "lr": 1e-3,
        "micro_batch_size": 2,
        "grad_accum": accum,
        "max_steps": 4,
        "warmup_ratio": 0.25,
        "log_every": 1,
        "eval_fraction": 0.1,
        "eval_every": 2,
        "eval_max_items": 2,
        "eval_max_new_tokens": 8,
        "save_every": 2,
        "torch_threads": 1,
    }
    out = tmp / f"run-{processes}"
    (tmp / f"cfg-{processes}.json").write_text(json.dumps(cfg))
    spec = SFTJob(
        config=SFTConfig.model_validate(cfg),
        model_path=model,
        dataset_path=data,
        output_dir=out,
        tracking=tracking,
    )
    spec_path = tmp / f"job-{processes}.json"
    spec_path.write_text(spec.model_dump_json())
    command = launch_command(
        spec_path, _launch(num_processes=processes, main_process_port=free_port())
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return SFTResult.model_validate_json((out / "result.json").read_text())


def test_two_gloo_processes_train_like_one(
    job_inputs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    model, data = job_inputs
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # a file store is enough here
    uri = (tmp_path / "mlruns").as_uri()
    client = MlflowClient(tracking_uri=uri)
    run_id = client.create_run(client.create_experiment("sft")).info.run_id

    # Same global batch of 8: micro 2 x accum 4 x 1 process vs micro 2 x accum 2 x 2 processes.
    single = run_job(tmp_path, model, data, processes=1, accum=4)
    double = run_job(
        tmp_path,
        model,
        data,
        processes=2,
        accum=2,
        tracking=TrackingSpec(run_id=run_id, tracking_uri=uri),
    )
    assert [h["step"] for h in double.history] == [1, 2, 3, 4]
    for a, b in zip(single.history, double.history, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-3)
        assert b["lr"] == pytest.approx(a["lr"], rel=1e-9)  # the schedule is not run twice
        assert b["samples_seen"] == a["samples_seen"]
    for a, b in zip(single.eval_history, double.eval_history, strict=True):
        assert b["eval_loss"] == pytest.approx(a["eval_loss"], rel=1e-4)
    assert double.train_samples == single.train_samples

    # Only the main process logs: each step once, by run id.
    losses = client.get_metric_history(run_id, "loss")
    evals = client.get_metric_history(run_id, "eval_loss")
    assert sorted(m.step for m in losses) == [1, 2, 3, 4]
    assert sorted(m.step for m in evals) == [2, 4]
    assert sorted(p.name for p in (tmp_path / "run-2" / "checkpoints").iterdir()) == [
        "step-000002",
        "step-000004",
    ]
    for rank in (0, 1):
        assert (tmp_path / "run-2/checkpoints/step-000004" / f"rng_state_rank{rank}.pt").is_file()
