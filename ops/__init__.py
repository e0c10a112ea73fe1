"""Operations: the local Prefect server, worker and MLflow server, as child processes.

The library never imports Prefect (docs/DESIGN.md): these helpers drive the
``prefect`` and ``mlflow`` command lines of the running interpreter's
environment, so they also work where only the orchestration environment has
Prefect installed.
"""

from ops.deployments import deploy, list_deployments, run_deployment
from ops.mlflow_server import MlflowServer, mlflow_server
from ops.prefect_api import prefect_env
from ops.processes import (
    LOOPBACK,
    ManagedProcess,
    ServiceError,
    free_port,
    wait_for_http,
)
from ops.servers import (
    DEFAULT_POOL,
    LocalStack,
    PrefectServer,
    PrefectWorker,
    ensure_work_pool,
    local_stack,
    prefect_server,
    prefect_worker,
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
