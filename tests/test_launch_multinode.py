"""Several machines: the launch config, the exact command lines, and machine 0's job joined.

The 2-node command lines are checked as argv and through Accelerate's own
parser (the values torchrun would get). The slow test runs a real 2-"machine"
SFT job on this host: machine 0 and machine 1 are two ``accelerate launch``
processes joined through the launch record under a shared runs directory.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

import pytest
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils.launch import prepare_multi_gpu_env
from pydantic import ValidationError
from test_train_distributed import free_port, job_inputs, run_job  # noqa: F401 (a fixture)

from mmr1.trainer import nodes
from mmr1.trainer.launch import launch_command, resolve_address
from schemas.launch import LaunchConfig
from schemas.presets import load_config
from schemas.sft_flow import SFTStageConfig

ROOT = Path(__file__).resolve().parents[1]
ZERO3 = ROOT / "deployments/accelerate/deepspeed_zero3.yaml"


def two_nodes(**overrides: object) -> LaunchConfig:
    values: dict[str, object] = {
        "kind": "accelerate",
        "num_processes": 16,
        "num_machines": 2,
        "main_process_ip": "10.0.0.1",
        "main_process_port": 29500,
        "accelerate_config": str(ZERO3),
    }
    return LaunchConfig.model_validate(values | overrides)


def test_two_node_deepspeed_command_line_is_exact() -> None:
    command = launch_command(Path("job.json"), two_nodes())
    assert command == [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ZERO3),
        "--num_processes",
        "16",
        "--num_machines",
        "2",
        "--machine_rank",
        "0",
        "--main_process_ip",
        "10.0.0.1",
        "--deepspeed_multinode_launcher",
        "standard",
        "--main_process_port",
        "29500",
        "-m",
        "mmr1.jobs",
        "job.json",
    ]
    # Machine 1 runs the same command but for its rank.
    rank1 = launch_command(Path("job.json"), two_nodes(machine_rank=1))
    assert nodes.rank_command(command, 1) == rank1
    # Accelerate reads the flags over the file's num_machines: 1 / machine_rank: 0.
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(rank1[3:]))
    assert (args.num_machines, args.machine_rank, args.num_processes) == (2, 1, 16)
    assert args.use_deepspeed and args.deepspeed_multinode_launcher == "standard"


def test_two_node_ddp_command_reaches_torchrun_as_two_nodes_of_eight() -> None:
    command = launch_command(Path("c.json"), two_nodes(machine_rank=1, accelerate_config=None))
    assert command[3:16] == [
        "--num_processes",
        "16",
        "--num_machines",
        "2",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--multi_gpu",
        "--machine_rank",
        "1",
        "--main_process_ip",
        "10.0.0.1",
    ]
    assert "--deepspeed_multinode_launcher" not in command
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(command[3:]))
    prepare_multi_gpu_env(args)  # what accelerate hands torchrun
    assert (args.nnodes, args.node_rank, args.nproc_per_node) == ("2", 1, "8")
    assert args.rdzv_endpoint == "10.0.0.1:29500" and args.rdzv_backend == "static"


@pytest.mark.parametrize(
    "config",
    sorted((ROOT / "deployments/accelerate").glob("*.yaml")),
    ids=lambda path: path.stem,
)
def test_flags_override_every_shipped_accelerate_config(config: Path) -> None:
    """Each file says num_machines: 1, machine_rank: 0; the command line wins."""
    launch = two_nodes(machine_rank=1, accelerate_config=str(config))
    command = launch_command(Path("c"), launch)
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(command[3:]))
    assert (args.num_machines, args.machine_rank, args.num_processes) == (2, 1, 16)
    assert (args.main_process_ip, args.main_process_port) == ("10.0.0.1", 29500)


def test_one_machine_command_is_unchanged() -> None:
    one = LaunchConfig(kind="accelerate", num_processes=8, accelerate_config=str(ZERO3))
    command = launch_command(Path("c"), one)
    assert command[3:9] == ["--config_file", str(ZERO3), "--num_processes", "8",
                            "--num_machines", "1"]  # fmt: skip
    assert "--machine_rank" not in command and "--main_process_ip" not in command


def test_address_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMR1_MAIN_PROCESS_IP", "job-abc-0.mmr1-nodes")
    launch = two_nodes(main_process_ip="${MMR1_MAIN_PROCESS_IP}")
    command = launch_command(Path("c"), launch)
    assert command[command.index("--main_process_ip") + 1] == "job-abc-0.mmr1-nodes"
    assert resolve_address("10.1.2.3", {}) == "10.1.2.3"
    monkeypatch.delenv("MMR1_MAIN_PROCESS_IP")
    with pytest.raises(ValueError, match=r"\$MMR1_MAIN_PROCESS_IP is not set"):
        launch_command(Path("c"), launch)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"machine_rank": 2}, "machine_rank (2) must be < num_machines (2)"),
        ({"main_process_ip": None}, "needs main_process_ip"),
        ({"main_process_port": None}, "needs main_process_port"),
        ({"kind": "inprocess"}, "needs kind 'accelerate'"),
        ({"num_processes": 12, "num_machines": 8}, "multiple of num_machines (8)"),
        ({"main_process_ip": "10.0.0.1; rm"}, "String should match pattern"),
    ],
)
def test_launch_config_rejects(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        two_nodes(**overrides)


def test_two_node_presets_keep_the_paper_batch() -> None:
    config = load_config(SFTStageConfig, "sft-paper-7b-2node")
    assert config.launch.num_processes == 16 and config.launch.num_machines == 2
    assert config.train.global_batch_size(16) == 32  # the paper's, as on one node
    one_node = load_config(SFTStageConfig, "sft-paper-7b")
    assert one_node.train.global_batch_size(8) == 32
    rank1 = load_config(SFTStageConfig, "sft-paper-7b-2node", ["launch.machine_rank=1"])
    assert rank1.launch.machine_rank == 1


def test_follower_joins_the_published_job_once(tmp_path: Path) -> None:
    launch = two_nodes()
    command = launch_command(Path("c"), launch)
    ran: list[list[str]] = []
    with nodes.leading(tmp_path, command, launch) as job:
        assert job is not None
        directory = nodes.job_dir(tmp_path, launch)
        assert directory == tmp_path / "launches" / "10.0.0.1_29500"
        status = nodes.follow(
            directory, 1, jobs=1, poll_s=0.01, wait_s=30, run=lambda c: ran.append(c) or 0
        )
    assert status == 0 and len(ran) == 1
    assert ran[0][ran[0].index("--machine_rank") + 1] == "1"
    assert [a for a in ran[0] if a != "1"] == [a for a in command if a != "0"]
    # The job ended: a late follower does not join it, and waits for the next one.
    assert json.loads((directory / "exit.json").read_text())["returncode"] == 0
    assert nodes.pending_job(directory, set()) is None
    with pytest.raises(TimeoutError):
        nodes.follow(directory, 1, jobs=1, poll_s=0.01, wait_s=0.05, run=lambda c: 0)


def test_failed_job_is_recorded_and_bad_ranks_refused(tmp_path: Path) -> None:
    launch = two_nodes()
    command = launch_command(Path("c"), launch)
    directory = nodes.job_dir(tmp_path, launch)
    with pytest.raises(RuntimeError), nodes.leading(tmp_path, command, launch):
        raise RuntimeError("machine 0's part failed")
    assert json.loads((directory / "exit.json").read_text())["returncode"] == 1
    nodes.publish(directory, command, 2)
    with pytest.raises(ValueError, match="rank 2 is not one of them"):
        nodes.follow(directory, 2, jobs=1, poll_s=0.01, wait_s=5, run=lambda c: 0)
    with pytest.raises(ValueError, match="machine_rank >= 1"):
        nodes.follow(directory, 0, jobs=1)
    # Without a port the follower finds machine 0's directory by its address.
    assert nodes.launch_dirs(tmp_path, "10.0.0.1") == [directory]
    with nodes.leading(tmp_path, command, two_nodes(num_machines=1, num_processes=8)) as job:
        assert job is None  # one machine publishes nothing


@pytest.mark.slow
def test_two_machines_on_one_host_train_like_one_process(
    job_inputs,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    model, data = job_inputs
    single = run_job(tmp_path, model, data, processes=1, accum=4)

    spec = json.loads((tmp_path / "job-1.json").read_text())
    spec["config"]["grad_accum"] = 2
    launch = LaunchConfig(
        kind="accelerate",
        num_processes=2,
        num_machines=2,
        main_process_ip="127.0.0.1",
        main_process_port=free_port(),
    )
    out = tmp_path / "run-2m"
    (tmp_path / "job-2m.json").write_text(json.dumps(spec | {"output_dir": str(out)}))
    command = launch_command(tmp_path / "job-2m.json", launch)
    runs = tmp_path / "runs"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    results: dict[str, int] = {}

    def machine_zero() -> None:
        import subprocess

        with nodes.leading(runs, command, launch):
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
            (tmp_path / "machine0.log").write_text(done.stdout + done.stderr)
            results["machine0"] = done.returncode

    leader = threading.Thread(target=machine_zero)
    leader.start()
    results["machine1"] = nodes.follow(nodes.job_dir(runs, launch), 1, jobs=1, wait_s=120)
    leader.join(timeout=360)
    assert results == {"machine0": 0, "machine1": 0}, (tmp_path / "machine0.log").read_text()
    double = json.loads((out / "result.json").read_text())
    for a, b in zip(single.history, double["history"], strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-3)
    step = out / "checkpoints/step-000004"
    assert {p.name for p in step.glob("rng_state_rank*.pt")} == {
        "rng_state_rank0.pt",
        "rng_state_rank1.pt",
    }


def test_rank_one_command_joins_machine_zero_instead_of_running_the_flow(tmp_path: Path) -> None:
    import subprocess

    import yaml

    home = tmp_path / "home"
    launch = two_nodes(machine_rank=1)
    config = tmp_path / "sft-2node.yaml"
    config.write_text(yaml.safe_dump({"launch": launch.model_dump(mode="json")}))
    marker = tmp_path / "joined.json"
    script = "import json, sys; json.dump(sys.argv[2:], open(sys.argv[1], 'w')); sys.exit(0)"
    directory = nodes.job_dir(home / "runs", launch)

    def mmr1_sft() -> subprocess.CompletedProcess[str]:
        code = (
            "import sys, cli.main\n"
            f"code = cli.main.main(['sft', '--config', {str(config)!r}])\n"
            "assert 'prefect' not in sys.modules, 'the follower imported prefect'\n"
            "sys.exit(code)\n"
        )
        env = {**os.environ, "MMR1_HOME": str(home)}
        return subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
        )

    # Machine 0's flow published its job (the same command there has machine_rank 0).
    nodes.publish(directory, [sys.executable, "-c", script, str(marker), "--machine_rank", "0"], 2)
    done = mmr1_sft()
    assert done.returncode == 0, done.stderr
    assert json.loads(marker.read_text()) == ["--machine_rank", "1"]
    assert "machine 1 of 2" in done.stdout and "the job finished" in done.stdout

    failing = script.replace("sys.exit(0)", "sys.exit(3)")
    nodes.publish(directory, [sys.executable, "-c", failing, str(marker), "--machine_rank", "0"], 2)
    done = mmr1_sft()
    assert done.returncode == 2
    assert "machine 1's part of the job exited with 3" in done.stderr
