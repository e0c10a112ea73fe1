"""deployments/prefect.yaml stays in step with the flows it names."""

from __future__ import annotations

from pathlib import Path

import yaml
from prefect.flows import load_flow_from_entrypoint

ROOT = Path(__file__).resolve().parents[1]


def test_every_deployment_entrypoint_loads_a_flow(monkeypatch) -> None:
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    assert spec["deployments"], "no deployments declared"
    monkeypatch.chdir(ROOT)
    for deployment in spec["deployments"]:
        flow = load_flow_from_entrypoint(deployment["entrypoint"])
        assert flow.name == deployment["name"]
        assert deployment["work_pool"]["name"] == spec["definitions"]["work_pools"]["local"]["name"]
        # Parameters given in the file must be accepted by the flow's pydantic signature.
        flow.validate_parameters(deployment.get("parameters") or {})
