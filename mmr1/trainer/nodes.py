"""Multi-machine jobs: machine 0 publishes its launch command, the other machines join it.

The flow runs on machine 0 only (it reads the catalog, writes the run
directory, registers results). When it launches a job that spans
``num_machines`` machines it first publishes the command, then runs it::

    MMR1_HOME/runs/launches/<main_process_ip>_<port>/job.json    {"job_id", "command", ...}
    MMR1_HOME/runs/launches/<main_process_ip>_<port>/exit.json   {"job_id", "returncode"}

Every other machine runs a *follower* (``python -m mmr1.trainer.nodes
--machine-rank R --main-process-ip IP [--main-process-port PORT]``, or the same
``mmr1 sft|grpo`` command as machine 0 with ``--set launch.machine_rank=R``).
It waits for a ``job.json`` that has no ``exit.json`` yet, runs the command
with its own ``--machine_rank`` (the only difference between the machines'
commands; paths are the same because ``MMR1_HOME`` is a shared volume mounted
at the same place), and waits for the next job. The directory is keyed by the
rendezvous address because one address serves one job at a time; publishing a
job replaces whatever an earlier (finished or crashed) job left there.

The rendezvous itself is ``torchrun``'s static one: machine 0's processes wait
for the others' (Accelerate's default timeout), so the follower may start
before or after machine 0 publishes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mmr1.trainer.launch import resolve_address
from schemas.launch import LaunchConfig

logger = logging.getLogger("mmr1.trainer.nodes")

JOB_FILE = "job.json"
EXIT_FILE = "exit.json"


def _key(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.\-]+", "-", text)


def launch_dir(runs_dir: Path, main_process_ip: str, main_process_port: int) -> Path:
    """Where machine 0 publishes the jobs of one rendezvous address (under the shared home)."""
    return Path(runs_dir) / "launches" / f"{_key(main_process_ip)}_{int(main_process_port)}"


def launch_dirs(runs_dir: Path, main_process_ip: str) -> list[Path]:
    """The launch directories of every port of ``main_process_ip`` (a follower without one)."""
    return sorted((Path(runs_dir) / "launches").glob(f"{_key(main_process_ip)}_*"))


def _write_json(path: Path, data: dict[str, object]) -> None:
    # Written whole then renamed: a follower polling the directory never reads half a file.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable launch record: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


@dataclass(frozen=True)
class PublishedJob:
    """A job machine 0 published: its id and command (machine 0's ``--machine_rank``)."""

    job_id: str
    command: list[str]
    num_machines: int


def publish(directory: Path, command: Sequence[str], num_machines: int) -> PublishedJob:
    """Publish machine 0's launch command for the other machines; returns the record."""
    if "--machine_rank" not in command:
        raise ValueError("a multi-machine command has --machine_rank (see launch_command)")
    directory.mkdir(parents=True, exist_ok=True)
    # An exit record left by an earlier job names that job's id, not this one's: kept, it
    # cannot hide this job, and no follower ever sees the earlier job without its exit.
    job = PublishedJob(uuid.uuid4().hex, list(command), int(num_machines))
    _write_json(
        directory / JOB_FILE,
        {
            "job_id": job.job_id,
            "command": job.command,
            "num_machines": job.num_machines,
            "published_at": time.time(),
        },
    )
    return job


def finish(directory: Path, job: PublishedJob, returncode: int) -> None:
    """Record that machine 0's part of ``job`` ended (followers then stop waiting for it)."""
    _write_json(directory / EXIT_FILE, {"job_id": job.job_id, "returncode": int(returncode)})


def job_dir(runs_dir: Path, launch: LaunchConfig) -> Path:
    """:func:`launch_dir` of a multi-machine ``LaunchConfig`` (its address resolved here)."""
    if launch.main_process_ip is None or launch.main_process_port is None:
        raise ValueError("a multi-machine launch needs main_process_ip and main_process_port")
    address = resolve_address(launch.main_process_ip)
    return launch_dir(runs_dir, address, launch.main_process_port)


@contextmanager
def leading(
    runs_dir: Path, command: Sequence[str], launch: LaunchConfig
) -> Iterator[PublishedJob | None]:
    """Publish ``command`` for the other machines while the block runs it (None: one machine).

    On leaving the block (normally or by an exception) the job is recorded as
    ended, so followers do not join it late.
    """
    if launch.num_machines <= 1:
        yield None
        return
    directory = job_dir(runs_dir, launch)
    job = publish(directory, command, launch.num_machines)
    returncode = 1
    try:
        yield job
        returncode = 0
    finally:
        finish(directory, job, returncode)


def pending_job(directory: Path, done: set[str]) -> PublishedJob | None:
    """The published job this follower should join now, or None."""
    record = _read_json(directory / JOB_FILE)
    if record is None or record.get("job_id") in done:
        return None
    exit_record = _read_json(directory / EXIT_FILE)
    if exit_record is not None and exit_record.get("job_id") == record.get("job_id"):
        return None  # machine 0 is done with it: a stale record from an earlier job
    command = record.get("command")
    if not isinstance(command, list) or not all(isinstance(a, str) for a in command):
        raise ValueError(f"{directory / JOB_FILE}: 'command' must be a list of strings")
    return PublishedJob(str(record["job_id"]), command, int(str(record.get("num_machines", 0))))


def rank_command(command: Sequence[str], machine_rank: int) -> list[str]:
    """Machine 0's launch command with ``--machine_rank`` set to ``machine_rank``.

    Only the launcher's own flag is replaced: the first one before the training
    module (``-m MODULE``, the second ``-m`` of the command).
    """
    args = list(command)
    modules = [i for i, arg in enumerate(args) if arg == "-m"]
    end = modules[1] if len(modules) > 1 else len(args)
    try:
        at = args.index("--machine_rank", 0, end)
    except ValueError:
        raise ValueError("the published command has no --machine_rank flag") from None
    args[at + 1] = str(machine_rank)
    return args


def follow(
    where: Path | Callable[[], Sequence[Path]],
    machine_rank: int,
    *,
    jobs: int | None = None,
    poll_s: float = 2.0,
    wait_s: float | None = None,
    run: Callable[[list[str]], int] | None = None,
) -> int:
    """Join machine 0's jobs as ``machine_rank``: ``jobs`` of them (None: until killed).

    ``where``: the launch directory, or a function listing the candidate ones
    (looked at again at every poll). Returns the exit status of the last job
    run (0 when none). ``wait_s`` bounds the wait for a job to appear (None: no
    bound; raises TimeoutError).
    ``run`` runs one command and returns its exit status (default: a subprocess
    with this process's output).
    """
    if machine_rank < 1:
        raise ValueError(f"a follower has machine_rank >= 1, got {machine_rank}")
    runner = run or (lambda command: subprocess.run(command, check=False).returncode)
    done: set[str] = set()
    status = 0
    deadline = None if wait_s is None else time.monotonic() + wait_s
    listing = (lambda: [where]) if isinstance(where, Path) else where
    logger.info("machine %d: waiting for jobs published in %s", machine_rank, where)
    while jobs is None or len(done) < jobs:
        found = (pending_job(d, done) for d in listing())
        job = next((j for j in found if j is not None), None)
        if job is None:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"no job was published in {where} within {wait_s} s")
            time.sleep(poll_s)
            continue
        if machine_rank >= job.num_machines:
            raise ValueError(
                f"job {job.job_id} spans {job.num_machines} machines; rank {machine_rank} is "
                "not one of them"
            )
        command = rank_command(job.command, machine_rank)
        logger.info("machine %d: joining job %s: %s", machine_rank, job.job_id, " ".join(command))
        status = runner(command)
        logger.info("machine %d: job %s exited with %d", machine_rank, job.job_id, status)
        done.add(job.job_id)
        if deadline is not None:
            deadline = time.monotonic() + (wait_s or 0.0)
    return status


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mmr1.trainer.nodes", description=__doc__)
    parser.add_argument("--machine-rank", type=int, required=True, help="This machine's rank.")
    parser.add_argument("--main-process-ip", required=True, help="Machine 0's address.")
    parser.add_argument(
        "--main-process-port",
        type=int,
        default=None,
        help="Rendezvous port (default: any port machine 0 publishes a job for).",
    )
    parser.add_argument("--jobs", type=int, default=None, help="Stop after this many jobs.")
    parser.add_argument("--poll-s", type=float, default=2.0, help="Seconds between looks.")
    parser.add_argument(
        "--runs-dir", type=Path, default=None, help="Default: the home's runs directory."
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    from schemas.home import HomeConfig

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    runs = args.runs_dir or HomeConfig().runs
    address = resolve_address(args.main_process_ip)
    where: Path | Callable[[], Sequence[Path]] = (
        launch_dir(runs, address, args.main_process_port)
        if args.main_process_port is not None
        else lambda: launch_dirs(runs, address)
    )
    return follow(where, args.machine_rank, jobs=args.jobs, poll_s=args.poll_s)


if __name__ == "__main__":
    sys.exit(main())
