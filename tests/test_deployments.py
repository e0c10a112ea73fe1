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
# Further deployments of a stage's flow, named after their purpose.
OTHER_DEPLOYMENTS = {"scheduled": "estimate_vps"}
STAGES = {"curate_rl", "curate_sft", "sft", "estimate_vps", "grpo_vas", "evaluate"}
PREFECT_FILE = Path("deployments") / "prefect.yaml"


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())


def test_every_deployment_entrypoint_loads_a_flow(spec, monkeypatch) -> None:
    assert spec["deployments"], "no deployments declared"
    monkeypatch.chdir(ROOT)
    for deployment in spec["deployments"]:
        flow = load_flow_from_entrypoint(deployment["entrypoint"])
        expected = PIPELINE_DEPLOYMENTS.get(deployment["name"], deployment["name"])
        assert flow.name == OTHER_DEPLOYMENTS.get(deployment["name"], expected)
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
    [scheduled] = [d for d in spec["deployments"] if d.get("schedules")]
    assert scheduled["name"] == "scheduled"
    assert scheduled["schedules"][0] is schedule  # an alias of the anchor, not a copy
    # Prefect 3.9 resets a schedule's parameters to {} on every toggle: the schedule
    # must not carry any, its deployment does.
    assert "parameters" not in schedule


def test_scheduled_vps_follows_the_grpo_policy(spec, monkeypatch) -> None:
    from ops.deployments import preset_parameters
    from schemas.presets import load_config
    from schemas.vas import VPSEstimateConfig
    from tasks.parameters import stage_config

    monkeypatch.chdir(ROOT)
    grpo = yaml.safe_load((ROOT / "schemas" / "presets" / "grpo-demo.yaml").read_text())
    manual = load_config(VPSEstimateConfig, "vps-demo")
    [scheduled] = [d for d in spec["deployments"] if d["name"] == "scheduled"]
    flow = load_flow_from_entrypoint(scheduled["entrypoint"])
    assert flow.name == "estimate_vps"
    # As plain `prefect deploy` leaves it: the flow resolves preset + overrides ...
    params = flow.validate_parameters(scheduled["parameters"])
    policy = stage_config(VPSEstimateConfig, **params)
    # ... and as `mmr1 serve` sets it: the same values as a full config for the form.
    served = flow.validate_parameters(preset_parameters(ROOT / PREFECT_FILE)["scheduled"])
    assert stage_config(VPSEstimateConfig, **served) == policy
    assert policy.checkpoint == grpo["output_name"] == "tiny-grpo"
    assert policy.dataset == grpo["dataset"]
    assert policy == manual.model_copy(update={"checkpoint": "tiny-grpo"})
    assert manual.checkpoint != policy.checkpoint  # why it is a deployment of its own


def test_every_deployment_opens_with_a_working_preset(spec, monkeypatch) -> None:
    from ops.deployments import preset_parameters
    from tasks.parameters import stage_config

    monkeypatch.chdir(ROOT)
    served = preset_parameters(ROOT / PREFECT_FILE)
    assert set(served) == {d["name"] for d in spec["deployments"]}
    for deployment in spec["deployments"]:
        flow = load_flow_from_entrypoint(deployment["entrypoint"])
        params = flow.validate_parameters(served[deployment["name"]])
        assert params["preset"] is None and params["overrides"] is None
        model = type(params["config"])
        # The form's config is the preset the file names, overrides applied.
        from_file = flow.validate_parameters(deployment["parameters"])
        assert stage_config(model, **from_file) == params["config"], deployment["name"]


def test_run_forms_show_described_parameters_and_no_internals(spec, monkeypatch) -> None:
    from prefect.utilities.callables import parameter_schema

    monkeypatch.chdir(ROOT)
    for deployment in spec["deployments"]:
        flow = load_flow_from_entrypoint(deployment["entrypoint"])
        properties = parameter_schema(flow).properties
        assert list(properties) == ["config", "preset", "overrides"], flow.name
        for name, prop in properties.items():
            assert prop.get("description"), f"{flow.name}: parameter {name} has no description"


def test_file_validates_as_prefect_deploy_reads_it(spec) -> None:
    # `prefect deploy` validates the file with this model and, on errors, prints a
    # warning and deploys nothing; catch that here rather than in a silent no-op.
    from prefect.cli.deploy._models import PrefectYamlModel, RawScheduleConfig

    model = PrefectYamlModel.model_validate(spec)
    assert [d.name for d in model.deployments] == [d["name"] for d in spec["deployments"]]
    for schedule in spec["definitions"]["schedules"].values():
        RawScheduleConfig.model_validate(schedule)
