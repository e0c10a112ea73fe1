"""Prefect deployments of this project: register them from ``deployments/prefect.yaml``, run them.

``prefect deploy`` and ``prefect deployment run`` are driven as command lines of
the running interpreter's environment (the library never imports Prefect);
deployments named under ``definitions.presets`` get their preset as default
parameters through the REST API afterwards. A ``prefect deploy`` without the
right ``PREFECT_API_URL`` "succeeds" against a throwaway server, so
:func:`deploy` checks that the deployments exist afterwards.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from mmr1.ops.prefect_api import api_client, prefect_env, request
from mmr1.ops.processes import ServiceError, cli_command, run_cli
from schemas.presets import PRESETS_DIR

#: The repository checkout this package lives in (holds ``deployments/prefect.yaml``).
PROJECT_ROOT = Path(__file__).resolve().parents[2]
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
    """Default parameters per deployment from ``definitions.presets`` of the deployment file.

    Each entry maps ``flow/deployment`` to a preset name of ``schemas/presets/``;
    the preset becomes the deployment's default ``config`` parameter, so the
    preset file stays the one home of those values.
    """
    spec = yaml.safe_load(prefect_file.read_text()) or {}
    presets = (spec.get("definitions") or {}).get("presets") or {}
    parameters: dict[str, dict[str, Any]] = {}
    for deployment, preset in presets.items():
        path = PRESETS_DIR / f"{preset}.yaml"
        if not path.is_file():
            raise ServiceError(
                f"{prefect_file}: definitions.presets[{deployment!r}] names {preset!r}, "
                f"but there is no {path}"
            )
        parameters[deployment] = {"config": yaml.safe_load(path.read_text()) or {}}
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
    those names (deployment or ``flow/deployment``). Deployments listed under
    ``definitions.presets`` then get their preset as default parameters (see
    :func:`preset_parameters`). Runs from ``project_dir``
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
    for full_name, parameters in preset_parameters(prefect_file).items():
        if not names or full_name in names or full_name.split("/", 1)[1] in names:
            set_default_parameters(api_url, full_name, parameters)

    deployed = list_deployments(api_url)
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
