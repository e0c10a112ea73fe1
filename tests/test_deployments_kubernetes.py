"""deployments/kubernetes/: the multi-node work pool template, its cluster objects, its deployments.

Kubernetes cannot run here, so the files are checked for what Prefect's
kubernetes worker and the cluster require: the template has the worker's
``job_configuration`` keys and a ``variables`` schema covering every
placeholder; rendered with the deployment's job variables (Prefect's own
templating) the manifest keeps what prefect-kubernetes validates every job
against (its documented default template: ``batch/v1`` Job, pod spec with
``parallelism``/``completions`` 1, ``restartPolicy: Never``, first container
``prefect-job``) and is an indexed Job of ``num_machines`` pods with the GPU
request, the shared MMR1_HOME claim and the rendezvous address the presets
use. With prefect-kubernetes installed, its job configuration class builds and
prepares the job too. The pod's rank dispatch is run with /bin/sh.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint
from prefect.utilities.templating import apply_values, find_placeholders

from ops.deployments import preset_parameters
from schemas.grpo import GRPOStageConfig
from schemas.sft_flow import SFTStageConfig

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deployments" / "kubernetes"
#: Keys of prefect-kubernetes' KubernetesWorkerJobConfiguration (its default template).
WORKER_KEYS = {
    "command",
    "env",
    "labels",
    "name",
    "annotations",
    "namespace",
    "job_manifest",
    "cluster_config",
    "job_watch_timeout_seconds",
    "pod_watch_timeout_seconds",
    "stream_output",
}
#: What prefect-kubernetes checks every job manifest against (values must match).
REQUIRED_MANIFEST = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "spec": {
        "template": {
            "spec": {
                "parallelism": 1,
                "completions": 1,
                "restartPolicy": "Never",
                "containers": [{"name": "prefect-job"}],
            }
        }
    },
}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return json.loads((K8S / "base-job-template.json").read_text())


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return yaml.safe_load((K8S / "prefect.yaml").read_text())


def rendered(template: dict[str, Any], job_variables: dict[str, Any]) -> dict[str, Any]:
    """The job configuration the worker builds: variable defaults, overridden, applied."""
    properties = template["variables"]["properties"]
    values = {k: v["default"] for k, v in properties.items() if "default" in v}
    return apply_values(template["job_configuration"], values | job_variables)


def contains(actual: Any, required: Any, where: str = "") -> None:
    if isinstance(required, dict):
        assert isinstance(actual, dict), where
        for key, value in required.items():
            assert key in actual, f"{where}/{key} missing"
            contains(actual[key], value, f"{where}/{key}")
    elif isinstance(required, list):
        for i, value in enumerate(required):
            contains(actual[i], value, f"{where}/{i}")
    else:
        assert actual == required, f"{where}: {actual!r} != {required!r}"


def test_template_has_the_worker_keys_and_a_variable_for_every_placeholder(template) -> None:
    assert set(template) == {"job_configuration", "variables"}
    config = template["job_configuration"]
    assert set(config) <= WORKER_KEYS
    assert {"command", "env", "name", "labels", "namespace", "job_manifest"} <= set(config)
    properties = template["variables"]["properties"]
    used = {p.name for p in find_placeholders(json.dumps(config))}
    assert used <= set(properties), used - set(properties)
    for name, schema in properties.items():
        assert schema.get("description"), f"variable {name} has no description"


def test_rendered_manifest_is_a_two_node_gpu_job(template, spec) -> None:
    pool = spec["definitions"]["work_pools"]["gpu_2node"]
    config = rendered(template, pool["job_variables"])
    manifest = config["job_manifest"]
    contains(manifest, REQUIRED_MANIFEST)
    assert not find_placeholders(json.dumps(manifest)) - {"command"}  # all filled but the flow's
    job = manifest["spec"]
    assert job["completionMode"] == "Indexed"
    assert job["completions"] == job["parallelism"] == 2
    assert job["successPolicy"] == {"rules": [{"succeededIndexes": "0"}]}
    assert job["backoffLimit"] == 0
    pod = job["template"]["spec"]
    [container] = pod["containers"]
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 8
    assert container["resources"]["limits"] == container["resources"]["requests"]
    env = {e["name"]: e for e in container["env"]}
    names = [e["name"] for e in container["env"]]
    home = env["MMR1_HOME"]["value"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["mmr1-home"] == home == "/data/mmr1"
    assert volumes["mmr1-home"]["persistentVolumeClaim"]["claimName"] == "mmr1-home"
    assert mounts["dshm"] == "/dev/shm" and volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    # Pod 0's DNS name through the headless Service; the job name comes first (k8s $(VAR)).
    assert env["MMR1_MAIN_PROCESS_IP"]["value"] == "$(MMR1_JOB_NAME)-0.mmr1-nodes"
    assert names.index("MMR1_JOB_NAME") < names.index("MMR1_MAIN_PROCESS_IP")
    assert pod["subdomain"] == "mmr1-nodes"
    # The cluster objects match: the Service selects the pods, the claim is shared.
    objects = {d["kind"]: d for d in yaml.safe_load_all((K8S / "cluster.yaml").read_text()) if d}
    service, claim = objects["Service"], objects["PersistentVolumeClaim"]
    assert service["metadata"]["name"] == pod["subdomain"]
    assert service["spec"]["clusterIP"] == "None"
    labels = job["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert claim["metadata"]["name"] == "mmr1-home"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_deployments_load_their_flows_and_match_the_pool(spec, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    pool = spec["definitions"]["work_pools"]["gpu_2node"]
    variables = pool["job_variables"]
    parameters = preset_parameters(K8S / "prefect.yaml")
    models = {"grpo_vas": GRPOStageConfig, "sft": SFTStageConfig}
    assert len(spec["deployments"]) == len(parameters) == 2
    for deployment in spec["deployments"]:
        assert deployment["work_pool"] is pool
        flow = load_flow_from_entrypoint(deployment["entrypoint"])
        assert deployment["parameters"] == {"preset": deployment["name"]}
        params = parameters[deployment["name"]]
        flow.validate_parameters(params)  # the preset, compositions expanded
        launch = models[flow.name].model_validate(params["config"]).launch
        assert launch.num_machines == variables["num_machines"]
        assert launch.num_processes == variables["num_machines"] * variables["gpus_per_node"]
        assert launch.main_process_ip == "${MMR1_MAIN_PROCESS_IP}"  # set by the template
    [step] = spec["pull"]
    assert step["prefect.deployments.steps.set_working_directory"]["directory"] == "/opt/mmr1"


def test_pod_rank_dispatch(template, tmp_path: Path) -> None:
    """Pod 0 runs the flow run's command; the others start the follower with their index."""
    container = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"][
        "containers"
    ][0]
    fake = tmp_path / "bin"
    fake.mkdir()
    python = fake / "python"
    python.write_text('#!/bin/sh\necho "follower $*"\n')
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    env = {
        **os.environ,
        "PATH": f"{fake}:{os.environ['PATH']}",
        "MMR1_MAIN_PROCESS_IP": "job-x-0.mmr1-nodes",
    }
    flow_command = ["echo", "flow", "run"]
    outputs = {}
    for index in ("0", "1"):
        done = subprocess.run(
            [*container["command"], *flow_command],
            env={**env, "JOB_COMPLETION_INDEX": index},
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        outputs[index] = done.stdout.strip()
    assert outputs["0"] == "flow run"
    assert outputs["1"] == (
        "follower -m mmr1.trainer.nodes --machine-rank 1 --main-process-ip job-x-0.mmr1-nodes"
    )


def test_prefect_kubernetes_accepts_the_template(template, spec) -> None:
    worker = pytest.importorskip("prefect_kubernetes.worker")
    from prefect.client.schemas.objects import FlowRun

    config = worker.KubernetesWorkerJobConfiguration(
        **rendered(template, spec["definitions"]["work_pools"]["gpu_2node"]["job_variables"])
    )
    run = FlowRun(id=uuid.uuid4(), name="grand-otter", flow_id=uuid.uuid4())
    config.prepare_for_flow_run(run)
    container = config.job_manifest["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:2] == ["prefect", "flow-run"]
    env = {e["name"]: e for e in container["env"]}
    assert env["PREFECT__FLOW_RUN_ID"]["value"] == str(run.id)  # Prefect's, prepended
    assert "valueFrom" in env["MMR1_JOB_NAME"]  # ours, kept
