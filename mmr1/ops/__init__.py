"""Operations: the local Prefect server, worker and MLflow server, as child processes.

The library never imports Prefect (DESIGN.md): these helpers drive the
``prefect`` and ``mlflow`` command lines of the running interpreter's
environment, so they also work where only the orchestration environment has
Prefect installed.
"""

from mmr1.ops.processes import (
    LOOPBACK,
    ManagedProcess,
    ServiceError,
    free_port,
    wait_for_http,
)
from mmr1.ops.servers import (
    DEFAULT_POOL,
    LocalStack,
    MlflowServer,
    PrefectServer,
    PrefectWorker,
    deploy,
    ensure_work_pool,
    list_deployments,
    local_stack,
    mlflow_server,
    prefect_env,
    prefect_server,
    prefect_worker,
    run_deployment,
    serve,
)

__all__ = [
    "DEFAULT_POOL",
    "LOOPBACK",
    "LocalStack",
    "ManagedProcess",
    "MlflowServer",
    "PrefectServer",
    "PrefectWorker",
    "ServiceError",
    "deploy",
    "ensure_work_pool",
    "free_port",
    "list_deployments",
    "local_stack",
    "mlflow_server",
    "prefect_env",
    "prefect_server",
    "prefect_worker",
    "run_deployment",
    "serve",
    "wait_for_http",
]
