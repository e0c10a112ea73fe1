"""Where a training job runs: in the flow's process, or an ``accelerate launch`` job
on one or several machines (``mmr1.trainer.launch`` builds the command line)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from schemas.base import ConfigModel


class LaunchConfig(ConfigModel):
    """Where training runs: in the flow's process, or as an ``accelerate launch`` subprocess.

    The subprocess path is how GPU clusters run (the trainer environment may lack
    Prefect); on CPU it runs DDP over gloo with the same code.

    Several machines (``num_machines > 1``): the flow runs on machine 0 and starts
    its share of the job there; every other machine runs the same command with its
    own ``machine_rank`` (``mmr1 sft|grpo ... --set launch.machine_rank=R``, or
    ``python -m mmr1.trainer.nodes`` in a Kubernetes pod), which waits for machine 0's
    job under the shared ``MMR1_HOME`` and joins it (:mod:`mmr1.trainer.nodes`).
    ``num_processes`` counts the processes of ALL machines (Accelerate's meaning):
    2 nodes x 8 GPUs is ``num_processes: 16, num_machines: 2``. The flags given
    here override the Accelerate config file's ``num_machines`` / ``machine_rank``
    / ``main_process_ip`` / ``main_process_port``.
    """

    kind: Literal["inprocess", "accelerate"] = Field(
        default="inprocess",
        description="'inprocess': train in the flow's process; 'accelerate': an "
        "`accelerate launch` subprocess (required for several processes or machines).",
    )
    num_processes: int = Field(
        default=1,
        ge=1,
        description="Processes of the whole job, all machines together (Accelerate's "
        "--num_processes): GPUs per machine x num_machines.",
    )
    num_machines: int = Field(
        default=1, ge=1, description="Machines (nodes) the job spans (Accelerate's --num_machines)."
    )
    machine_rank: int = Field(
        default=0,
        ge=0,
        description="Rank of this machine, 0 .. num_machines - 1. The flow runs on machine 0; "
        "a command with a rank > 0 joins machine 0's job instead of running the flow.",
    )
    main_process_ip: str | None = Field(
        default=None,
        pattern=r"^(\$\{[A-Za-z_][A-Za-z0-9_]*\}|[A-Za-z0-9_.:\-]+)$",
        description="Address of machine 0 that the others reach (required when num_machines > "
        "1): a host name or IP, or ${ENV_VAR} read on each machine when the job starts (e.g. "
        "${MMR1_MAIN_PROCESS_IP}, set by the Kubernetes job template).",
    )
    main_process_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Rendezvous port on machine 0 (required when num_machines > 1; None on one "
        "machine: Accelerate's default or the config file's).",
    )
    accelerate_config: str | None = Field(
        default=None,
        description="Accelerate config file, e.g. deployments/accelerate/deepspeed_zero3.yaml.",
    )
    python: str | None = Field(
        default=None,
        description="Python of the trainer environment (default: this interpreter).",
    )
    timeout_s: float | None = Field(default=None, gt=0, description="Kill the job after this.")

    @model_validator(mode="after")
    def _check_machines(self) -> LaunchConfig:
        if self.machine_rank >= self.num_machines:
            raise ValueError(
                f"machine_rank ({self.machine_rank}) must be < num_machines ({self.num_machines})"
            )
        if self.num_machines == 1:
            return self
        missing = [
            name for name in ("main_process_ip", "main_process_port") if getattr(self, name) is None
        ]
        if missing:
            raise ValueError(
                f"num_machines {self.num_machines} needs {' and '.join(missing)}: the address "
                "of machine 0 that the other machines join"
            )
        if self.kind != "accelerate":
            raise ValueError("num_machines > 1 needs kind 'accelerate' (a launched job)")
        if self.num_processes % self.num_machines:
            raise ValueError(
                f"num_processes ({self.num_processes}) counts the processes of all machines: it "
                f"must be a multiple of num_machines ({self.num_machines}), e.g. "
                f"{8 * self.num_machines} for {self.num_machines} machines x 8 GPUs"
            )
        return self
