"""deployments/prefect.yaml stays in step with the flows it names and with Prefect's schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint

ROOT = Path(__file__).resolve().parents[1]
# Pipeline deployments are named after their preset; every other one after its flow.
PIPELINE_DEPLOYMENTS = {"demo": "mmr1-pipeline"}
STAGES = {"curate_rl", "curate_sft", "sft", "estimate_vps", "grpo_vas", "evaluate"}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())


def test_every_deployment_entrypoint_loads_a_flow(spec, monkeypatch) -> None:
    assert spec["deployments"], "no deployments declared"
    monkeypatch.chdir(ROOT)
    for deployment in spec["deployments"]:
        flow = load_flow_from_entrypoint(deployment["entrypoint"])
        assert flow.name == PIPELINE_DEPLOYMENTS.get(deployment["name"], deployment["name"])
        # Parameters given in the file must be accepted by the flow's pydantic signature.
        flow.validate_parameters(deployment.get("parameters") or {})


def test_the_flows_that_exist_are_deployed(spec) -> None:
    names = {d["name"] for d in spec["deployments"]}
    assert STAGES | set(PIPELINE_DEPLOYMENTS) <= names
    assert len(names) == len(spec["deployments"]), "duplicate deployment names"


def test_every_deployment_uses_a_pool_from_definitions(spec) -> None:
    pools = spec["definitions"]["work_pools"]
    assert pools["local"]["name"] == "mmr1-local"
    for deployment in spec["deployments"]:
        # YAML aliases load as the very object of the anchor.
        assert any(deployment["work_pool"] is pool for pool in pools.values()), deployment["name"]


def test_schedule_anchor_is_a_valid_cron_schedule(spec) -> None:
    from prefect.client.schemas.schedules import CronSchedule

    schedule = spec["definitions"]["schedules"]["vps_every_6h"]
    assert schedule["cron"] == "0 */6 * * *"
    assert isinstance(schedule["active"], bool)
    CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
    [vps] = [d for d in spec["deployments"] if d["name"] == "estimate_vps"]
    assert vps["schedules"][0] is schedule  # an alias of the anchor, not a copy


def test_scheduled_vps_follows_the_grpo_policy(spec, monkeypatch) -> None:
    # Prefect merges schedule parameters over the deployment's shallowly
    # ({**deployment, **schedule}), so the schedule's `config` replaces the preset's
    # as a whole: it must be complete, and score the RL pool with the GRPO policy.
    from mmr1.ops.deployments import preset_parameters
    from schemas.presets import PRESETS_DIR

    monkeypatch.chdir(ROOT)
    schedule = spec["definitions"]["schedules"]["vps_every_6h"]
    scheduled = schedule["parameters"]["config"]
    deployment = preset_parameters(ROOT / "deployments" / "prefect.yaml")
    manual = deployment["estimate_vps/estimate_vps"]["config"]
    grpo = yaml.safe_load((PRESETS_DIR / "grpo-demo.yaml").read_text())
    assert scheduled["checkpoint"] == grpo["output_name"] == "tiny-grpo"
    assert scheduled["dataset"] == grpo["dataset"]
    assert scheduled == {**manual, "checkpoint": grpo["output_name"]}
    assert manual["checkpoint"] != scheduled["checkpoint"]  # why the schedule has its own
    [vps] = [d for d in spec["deployments"] if d["name"] == "estimate_vps"]
    merged = {**deployment["estimate_vps/estimate_vps"], **schedule["parameters"]}
    assert merged["config"]["checkpoint"] == "tiny-grpo"
    flow = load_flow_from_entrypoint(vps["entrypoint"])
    validated = flow.validate_parameters(merged)
    assert validated["config"].checkpoint == "tiny-grpo"
    assert validated["config"].sampling.max_new_tokens == manual["sampling"]["max_new_tokens"]


def test_file_validates_as_prefect_deploy_reads_it(spec) -> None:
    # `prefect deploy` validates the file with this model and, on errors, prints a
    # warning and deploys nothing; catch that here rather than in a silent no-op.
    from prefect.cli.deploy._models import PrefectYamlModel, RawScheduleConfig

    model = PrefectYamlModel.model_validate(spec)
    assert [d.name for d in model.deployments] == [d["name"] for d in spec["deployments"]]
    for schedule in spec["definitions"]["schedules"].values():
        RawScheduleConfig.model_validate(schedule)


def test_preset_parameters_name_deployments_and_validate(spec, monkeypatch) -> None:
    from mmr1.ops.deployments import preset_parameters

    monkeypatch.chdir(ROOT)
    entrypoints = {d["name"]: d["entrypoint"] for d in spec["deployments"]}
    parameters = preset_parameters(ROOT / "deployments" / "prefect.yaml")
    assert "mmr1-pipeline/demo" in parameters
    for full_name, params in parameters.items():
        flow_name, name = full_name.split("/", 1)
        flow = load_flow_from_entrypoint(entrypoints[name])
        assert flow.name == flow_name
        flow.validate_parameters(params)  # the preset is a valid config of that flow
