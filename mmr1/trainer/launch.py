"""The command line that runs a training job under ``accelerate launch`` (the subprocess path).

Orchestration (Prefect tasks) writes the job spec (``schemas.jobs``) to a JSON
file and runs :func:`launch_command` in the trainer environment, which may lack
Prefect (docs/STACK.md: vLLM and Prefect cannot share one environment). Every
process runs ``mmr1.jobs`` on the spec; it logs metrics to MLflow by run
id and writes ``output_dir/result.json``.

Accelerate trap: its multi-process launcher (torchrun underneath) is chosen by
``--multi_gpu`` or by a config whose ``distributed_type`` is MULTI_GPU /
DEEPSPEED / FSDP. A ``MULTI_CPU`` config, or no config, silently starts ONE
process whatever ``--num_processes`` says (Accelerate expects mpirun there).
So for more than one process without such a config we add ``--multi_gpu``:
on a machine without GPUs the processes then run on CPU and talk over gloo.
The flag is never added to a DeepSpeed / FSDP config, whose type it would
override.

Several machines: every machine runs the same command except for
``--machine_rank`` (``mmr1.trainer.nodes`` hands machine 0's command to the
others). ``--num_processes`` is the total over all machines (Accelerate gives
each machine ``num_processes / num_machines``) and the static rendezvous is at
``main_process_ip:main_process_port``. A DeepSpeed config would launch through
pdsh over ssh from machine 0; ``--deepspeed_multinode_launcher standard`` makes
each machine start its own processes (torchrun) instead.

Tracking stores a launched job can write to: :mod:`mmr1.trainer.tracking`.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

import yaml

from schemas.launch import LaunchConfig

#: The module every process of a launched job runs (``mmr1.jobs``).
JOB_MODULE = "mmr1.jobs"
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


def launch_command(spec_path: Path, launch: LaunchConfig) -> list[str]:
    """``[python, -m, accelerate.commands.launch, ..., -m, mmr1.jobs, SPEC]``.

    ``spec_path`` is a job spec (:data:`schemas.jobs.JobSpec`) written as JSON.
    ``launch.python`` is the trainer environment's interpreter (default: this
    one); Accelerate is run as a module of it, so no ``accelerate`` script needs
    to be on PATH. ``launch.num_processes`` counts all machines' processes; with
    several machines the rendezvous address is required (``${VAR}`` reads it
    from the environment now, see :func:`resolve_address`).
    """
    num_processes, num_machines = launch.num_processes, launch.num_machines
    machine_rank, port = launch.machine_rank, launch.main_process_port
    if num_processes % num_machines:
        raise ValueError(f"num_processes {num_processes} is not a multiple of {num_machines}")
    if num_machines > 1 and (launch.main_process_ip is None or port is None):
        raise ValueError("several machines need main_process_ip and main_process_port")
    command = [launch.python or sys.executable, "-m", "accelerate.commands.launch"]
    distributed_type = None
    if launch.accelerate_config is not None:
        command += ["--config_file", str(launch.accelerate_config)]
        distributed_type = _distributed_type(Path(launch.accelerate_config))
    command += ["--num_processes", str(num_processes), "--num_machines", str(num_machines)]
    if launch.accelerate_config is None:
        # Without a config Accelerate warns about each default; precision is the recipe's.
        command += ["--mixed_precision", "no", "--dynamo_backend", "no"]
    if num_processes > 1 and distributed_type not in _SELF_LAUNCHING:
        command.append("--multi_gpu")
    if num_machines > 1:
        assert launch.main_process_ip is not None
        command += [
            "--machine_rank",
            str(machine_rank),
            "--main_process_ip",
            resolve_address(launch.main_process_ip),
        ]
        if distributed_type == "DEEPSPEED":
            command += ["--deepspeed_multinode_launcher", "standard"]
    if port is not None:
        command += ["--main_process_port", str(port)]
    return [*command, "-m", JOB_MODULE, str(spec_path)]


_ENV_REFERENCE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def resolve_address(text: str, environ: Mapping[str, str] | None = None) -> str:
    """``text`` itself, or the value of the environment variable that ``${NAME}`` names."""
    match = _ENV_REFERENCE.match(text)
    if match is None:
        return text
    value = (os.environ if environ is None else environ).get(match[1], "").strip()
    if not value:
        raise ValueError(
            f"launch.main_process_ip is {text!r} but ${match[1]} is not set on this machine "
            "(the address of machine 0 that the other machines reach)"
        )
    return value
