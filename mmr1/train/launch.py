"""The command line that runs SFT as an ``accelerate launch`` job (the subprocess path).

Orchestration (Prefect tasks) writes the ``SFTConfig`` to a file and runs
:func:`launch_command` in the trainer environment, which may lack Prefect
(docs/STACK.md: vLLM and Prefect cannot share one environment). The job is
``mmr1.train.sft_main``; it logs metrics to MLflow by run id and writes
``output_dir/result.json``.

Accelerate trap: its multi-process launcher (torchrun underneath) is chosen by
``--multi_gpu`` or by a config whose ``distributed_type`` is MULTI_GPU /
DEEPSPEED / FSDP. A ``MULTI_CPU`` config, or no config, silently starts ONE
process whatever ``--num_processes`` says (Accelerate expects mpirun there).
So for more than one process without such a config we add ``--multi_gpu``:
on a machine without GPUs the processes then run on CPU and talk over gloo.
The flag is never added to a DeepSpeed / FSDP config, whose type it would
override.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

#: Config types whose own launcher Accelerate picks from the file.
_SELF_LAUNCHING = {"MULTI_GPU", "DEEPSPEED", "FSDP", "MEGATRON_LM", "XLA"}


def _distributed_type(accelerate_config: Path) -> str | None:
    try:
        data = yaml.safe_load(Path(accelerate_config).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{accelerate_config}: cannot read the Accelerate config: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{accelerate_config}: expected a mapping at the top level")
    value = data.get("distributed_type")
    return str(value).upper() if value is not None else None


def launch_command(
    config_path: Path,
    *,
    num_processes: int,
    accelerate_config: Path | None,
    model_path: Path,
    dataset_path: Path,
    output_dir: Path,
    python: str | None = None,
    mlflow_run_id: str | None = None,
    mlflow_tracking_uri: str | None = None,
    main_process_port: int | None = None,
    resume: bool = True,
    module: str = "mmr1.train.sft_main",
    extra_args: Sequence[str] = (),
) -> list[str]:
    """``[python, -m, accelerate.commands.launch, ..., -m, <module>, ...]``.

    ``module`` is the training entry point (``mmr1.train.sft_main`` or
    ``mmr1.rl.grpo_main``); ``extra_args`` are appended to its arguments.

    ``python`` is the trainer environment's interpreter (default: this one);
    Accelerate is run as a module of it, so no ``accelerate`` script needs to
    be on PATH. ``main_process_port`` avoids clashes between jobs on one host.
    """
    if num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    command = [python or sys.executable, "-m", "accelerate.commands.launch"]
    distributed_type = None
    if accelerate_config is not None:
        command += ["--config_file", str(accelerate_config)]
        distributed_type = _distributed_type(accelerate_config)
    command += ["--num_processes", str(num_processes), "--num_machines", "1"]
    if accelerate_config is None:
        # Without a config Accelerate warns about each default; precision is the recipe's.
        command += ["--mixed_precision", "no", "--dynamo_backend", "no"]
    if num_processes > 1 and distributed_type not in _SELF_LAUNCHING:
        command.append("--multi_gpu")
    if main_process_port is not None:
        command += ["--main_process_port", str(main_process_port)]
    command += [
        "-m",
        module,
        "--config",
        str(config_path),
        "--model",
        str(model_path),
        "--dataset",
        str(dataset_path),
        "--output",
        str(output_dir),
    ]
    if mlflow_run_id:
        command += ["--mlflow-run-id", mlflow_run_id]
    if mlflow_tracking_uri:
        command += ["--mlflow-tracking-uri", mlflow_tracking_uri]
    if not resume:
        command.append("--no-resume")
    command += list(extra_args)
    return command
