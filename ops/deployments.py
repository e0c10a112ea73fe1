"""Prefect deployments of this project: register them from ``deployments/prefect.yaml``, run them.

``prefect deploy`` and ``prefect deployment run`` are driven as command lines of
the running interpreter's environment (the library never imports Prefect).
A deployment whose parameters name a preset (``{preset: NAME, overrides: {...}}``,
which the flows resolve themselves) then gets that preset, overrides applied, as
its ``config`` parameter through the REST API, so the UI's run form opens
filled in. A ``prefect deploy`` without the right ``PREFECT_API_URL``
"succeeds" against a throwaway server, so :func:`deploy` checks that the
deployments exist afterwards.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ops.prefect_api import api_client, prefect_env, request
from ops.processes import ServiceError, cli_command, run_cli
from schemas.presets import ConfigError, apply_overrides, read_preset

#: The repository checkout this package lives in (holds ``deployments/prefect.yaml``).
PROJECT_ROOT = Path(__file__).resolve().parents[1]
PREFECT_FILE = Path("deployments") / "prefect.yaml"


def list_deployments(api_url: str) -> list[str]:
    """Names ``flow/deployment`` of every deployment the server knows, sorted."""
    with api_client(api_url) as client:
        deployments = request(client, "POST", "deployments/filter", json={"limit": 200})
        flows = request(client, "POST", "flows/filter", json={"limit": 200})
    deployments.raise_for_status()
    flows.raise_for_status()
    flow_names = {f["id"]: f["name"] for f in flows.json()}
    return sorted(f"{flow_names.get(d['flow_id'], '?')}/{d['name']}" for d in deployments.json())


def preset_parameters(prefect_file: Path) -> dict[str, dict[str, Any]]:
    """Form-ready parameters per deployment name: ``{"config": <preset, overrides applied>}``.

    For each deployment of the file whose ``parameters`` name a ``preset``
    (optionally with ``overrides``); ``preset:`` compositions are expanded and the
    preset file stays the one home of the values. Other parameters are kept.
    """
    spec = yaml.safe_load(prefect_file.read_text()) or {}
    parameters: dict[str, dict[str, Any]] = {}
    for deployment in spec.get("deployments") or []:
        given = dict(deployment.get("parameters") or {})
        preset = given.pop("preset", None)
        if not preset:
            continue
        overrides = given.pop("overrides", None) or {}
        try:
            config = apply_overrides(read_preset(preset), overrides)
        except ConfigError as exc:
            raise ServiceError(f"{prefect_file}: deployment {deployment['name']!r}: {exc}") from exc
        parameters[deployment["name"]] = {**given, "config": config}
    return parameters


def set_default_parameters(api_url: str, deployment: str, parameters: Mapping[str, Any]) -> None:
    """Replace the default parameters of deployment ``flow/deployment``.

    One API call instead of a second ``prefect deploy`` (which re-imports the
    flow: seconds). The server validates them against the flow's parameter
    schema.
    """
    flow_name, name = deployment.split("/", 1)
    with api_client(api_url) as client:
        found = request(client, "GET", f"deployments/name/{flow_name}/{name}")
        if found.status_code == 404:
            raise ServiceError(f"deployment {deployment!r} does not exist on {api_url}")
        found.raise_for_status()
        response = request(
            client,
            "PATCH",
            f"deployments/{found.json()['id']}",
            json={"parameters": dict(parameters)},
        )
    if not response.is_success:
        raise ServiceError(
            f"setting the parameters of {deployment!r} failed: HTTP {response.status_code} "
            f"{response.text[:2000]}"
        )


def deploy(
    api_url: str,
    *,
    log_dir: Path,
    names: Sequence[str] | None = None,
    project_dir: Path | None = None,
    prefect_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 600.0,
) -> list[str]:
    """Register deployments from ``deployments/prefect.yaml``; return all deployments after.

    ``names`` None deploys every deployment in the file (``--all``), otherwise
    those names (deployment or ``flow/deployment``). Deployments whose parameters
    name a preset then get it as their ``config`` (see :func:`preset_parameters`).
    Runs from ``project_dir``
    (default: the checkout holding this package), which is where process
    workers will then import the flows from. Fails if a requested deployment
    is missing afterwards: ``prefect deploy`` skips a file it cannot validate
    with only a warning.
    """
    project_dir = (project_dir or PROJECT_ROOT).resolve()
    prefect_file = prefect_file or project_dir / PREFECT_FILE
    if not prefect_file.is_file():
        raise ServiceError(
            f"no {prefect_file}: run from a checkout of the project or pass project_dir"
        )
    args = [*cli_command("prefect"), "--no-prompt", "deploy", "--prefect-file", str(prefect_file)]
    args += [a for n in names for a in ("--name", n)] if names else ["--all"]
    run_cli(
        "prefect deploy",
        args,
        env=prefect_env(api_url, extra=env),
        log_path=log_dir / "prefect-deploy.log",
        cwd=project_dir,
        timeout=timeout,
    )
    deployed = list_deployments(api_url)
    full_names = {d.split("/", 1)[1]: d for d in deployed}
    for name, parameters in preset_parameters(prefect_file).items():
        full_name = full_names.get(name)
        if full_name and (not names or name in names or full_name in names):
            set_default_parameters(api_url, full_name, parameters)
    short = {d.split("/", 1)[1] for d in deployed}
    missing = [n for n in names or [] if n not in short and n not in deployed]
    if not deployed or missing:
        raise ServiceError(
            f"prefect deploy exited 0 but {missing or 'nothing'} is not deployed; "
            f"see {log_dir / 'prefect-deploy.log'}"
        )
    return deployed


def run_deployment(
    deployment: str,
    api_url: str,
    *,
    log_dir: Path,
    params: Mapping[str, Any] | None = None,
    watch_timeout: int | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """``prefect deployment run 'flow/deployment' --watch``: wait for the run's final state.

    The CLI exits 0 only on COMPLETED; ``check`` turns anything else into
    :class:`ServiceError` quoting its output.
    """
    args = [*cli_command("prefect"), "deployment", "run", deployment, "--watch"]
    if params:
        args += ["--params", json.dumps(params)]
    if watch_timeout is not None:
        args += ["--watch-timeout", str(watch_timeout)]
    timeout = (watch_timeout or 3600) + 60
    return run_cli(
        "prefect deployment run",
        args,
        env=prefect_env(api_url, extra=env),
        log_path=log_dir / "prefect-runs.log",
        timeout=timeout,
        check=check,
    )
