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

Several machines: every machine runs the same command except for
``--machine_rank`` (``mmr1.train.nodes`` hands machine 0's command to the
others). ``--num_processes`` is the total over all machines (Accelerate gives
each machine ``num_processes / num_machines``) and the static rendezvous is at
``main_process_ip:main_process_port``. A DeepSpeed config would launch through
pdsh over ssh from machine 0; ``--deepspeed_multinode_launcher standard`` makes
each machine start its own processes (torchrun) instead.

Tracking: the job logs metrics to MLflow by run id. A database store
(``sqlite:///...``) needs SQLAlchemy and Alembic in the trainer environment,
which ``mlflow-skinny`` lacks, and a SQLite file written from several machines
over a shared volume is unsafe anyway; an HTTP tracking server (``mmr1 serve``
or the user's) needs neither. :func:`check_tracking_store` refuses the
combination that would fail only after the model is loaded.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from schemas.sft_flow import LaunchConfig

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
    num_machines: int = 1,
    machine_rank: int = 0,
    main_process_ip: str | None = None,
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
    ``num_processes`` counts all machines' processes; with ``num_machines > 1``
    the rendezvous address is required (``${VAR}`` reads it from the
    environment now, see :func:`resolve_address`).
    """
    if num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    if not 0 <= machine_rank < num_machines:
        raise ValueError(f"machine_rank {machine_rank} is not in 0 .. num_machines - 1")
    if num_processes % num_machines:
        raise ValueError(f"num_processes {num_processes} is not a multiple of {num_machines}")
    if num_machines > 1 and (main_process_ip is None or main_process_port is None):
        raise ValueError("several machines need main_process_ip and main_process_port")
    command = [python or sys.executable, "-m", "accelerate.commands.launch"]
    distributed_type = None
    if accelerate_config is not None:
        command += ["--config_file", str(accelerate_config)]
        distributed_type = _distributed_type(accelerate_config)
    command += ["--num_processes", str(num_processes), "--num_machines", str(num_machines)]
    if accelerate_config is None:
        # Without a config Accelerate warns about each default; precision is the recipe's.
        command += ["--mixed_precision", "no", "--dynamo_backend", "no"]
    if num_processes > 1 and distributed_type not in _SELF_LAUNCHING:
        command.append("--multi_gpu")
    if num_machines > 1:
        assert main_process_ip is not None
        command += [
            "--machine_rank",
            str(machine_rank),
            "--main_process_ip",
            resolve_address(main_process_ip),
        ]
        if distributed_type == "DEEPSPEED":
            command += ["--deepspeed_multinode_launcher", "standard"]
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


def launch_options(launch: LaunchConfig) -> dict[str, Any]:
    """The keyword arguments of :func:`launch_command` that a ``LaunchConfig`` sets."""
    return {
        "num_processes": launch.num_processes,
        "num_machines": launch.num_machines,
        "machine_rank": launch.machine_rank,
        "main_process_ip": launch.main_process_ip,
        "main_process_port": launch.main_process_port,
        "accelerate_config": Path(launch.accelerate_config) if launch.accelerate_config else None,
        "python": launch.python,
    }


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


# ------------------------------------------------------------------ tracking store

#: MLflow tracking stores that are databases (read through SQLAlchemy, migrated by Alembic).
DATABASE_SCHEMES = frozenset({"sqlite", "postgresql", "mysql", "mssql"})
#: What MLflow imports for a database store; ``mlflow-skinny`` installs neither.
STORE_MODULES = ("sqlalchemy", "alembic")


class TrackingStoreError(ValueError):
    """The trainer environment cannot write to the configured MLflow tracking store."""


def is_database_store(uri: str) -> bool:
    """True for ``sqlite:///...``, ``postgresql+psycopg2://...`` and the like."""
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower() if ":" in uri else ""
    return scheme in DATABASE_SCHEMES


def store_modules_available(python: str | None = None) -> bool:
    """Whether ``python`` (default: this interpreter) can import SQLAlchemy and Alembic.

    Another interpreter is asked in a subprocess (it is looked up, not imported).
    """
    if python is None or python == sys.executable:
        return all(importlib.util.find_spec(name) is not None for name in STORE_MODULES)
    probe = (
        "import importlib.util, sys; "
        f"sys.exit(0 if all(importlib.util.find_spec(m) for m in {STORE_MODULES!r}) else 1)"
    )
    try:
        completed = subprocess.run([python, "-c", probe], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TrackingStoreError(f"cannot run the trainer python {python!r}: {exc}") from exc
    return completed.returncode == 0


def tracking_store_problem(uri: str | None, *, modules_available: bool) -> str | None:
    """Why a job cannot log to ``uri``, or None (an HTTP server or a file store is fine)."""
    if not uri or not is_database_store(uri) or modules_available:
        return None
    return (
        f"the MLflow tracking URI is the database store {uri!r}, but the trainer environment "
        f"lacks {' and '.join(STORE_MODULES)} (mlflow-skinny does not install them). Log "
        "through an MLflow tracking server instead: start `mmr1 serve` (or your own `mlflow "
        "server`) and set MLFLOW_TRACKING_URI=http://HOST:5000 for the flow; or install the "
        "full `mlflow` package in the trainer environment (one machine only: a SQLite file on "
        "a shared volume must not be written from several machines)"
    )


def check_tracking_store(uri: str | None, python: str | None = None) -> None:
    """Raise :class:`TrackingStoreError` when a job run by ``python`` cannot log to ``uri``."""
    if not uri or not is_database_store(uri):
        return
    problem = tracking_store_problem(uri, modules_available=store_modules_available(python))
    if problem:
        raise TrackingStoreError(problem)


def job_tracking_problem(run_id: str | None, uri: str | None) -> str | None:
    """In a training job: why it could not log to MLflow run ``run_id`` at ``uri``, or None.

    ``uri`` None is MLflow's own default (``MLFLOW_TRACKING_URI``, else a local
    SQLite file). Checked by every process before the model is loaded, so a
    job that could not log fails at once, on all ranks alike.
    """
    if not run_id:
        return None
    if uri is None:
        import mlflow

        uri = mlflow.get_tracking_uri()
    if not is_database_store(uri):
        return None
    return tracking_store_problem(uri, modules_available=store_modules_available())
