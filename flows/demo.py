"""The ``demo`` flow: every existing stage on the tiny offline model and synthetic data.

Stages so far: base model and synthetic benchmark -> ``curate_rl`` and
``curate_sft`` (decontaminated against the benchmark, rated by the base model)
-> ``sft`` of the base model on the curated CoT data -> probes of the base and
SFT models on the benchmark. Every output is a catalog ref; the flow's
MLflow run is tagged with all of them and parents the subflows' runs.
"""

from prefect import flow

from flows.curate import curate_rl, curate_sft
from flows.sft import sft as sft_flow
from schemas.curation import CurateRLConfig
from schemas.demo import DemoConfig
from tasks.context import flow_tracking
from tasks.datasets import synthesize_benchmark
from tasks.models import build_base_model
from tasks.probe import probe_checkpoint


def _rated_by(config: CurateRLConfig, model_ref: str) -> CurateRLConfig:
    """Fill in the difficulty model when the preset leaves it to the demo's base model."""
    difficulty = config.difficulty
    if not difficulty.enabled or difficulty.model or difficulty.backend:
        return config
    return config.model_copy(
        update={"difficulty": difficulty.model_copy(update={"model": model_ref})}
    )


@flow(name="demo", log_prints=True)
def demo(config: DemoConfig | None = None) -> dict[str, str]:
    """Run the pipeline end to end on the embedded default and return the refs it wrote."""
    config = config or DemoConfig()
    with flow_tracking("demo", config) as run:
        base = build_base_model(config.base_model_name, config.base_model, run.run_id)
        bench = synthesize_benchmark(
            config.benchmark_name, config.benchmark_seed, config.benchmark_items, run.run_id
        )
        rl_pool = curate_rl(_rated_by(config.curate_rl, base), parent_mlflow_run_id=run.run_id)
        sft = curate_sft(_rated_by(config.curate_sft, base), parent_mlflow_run_id=run.run_id)
        sft_config = config.sft.model_copy(update={"dataset": sft, "base_model": base})
        sft_model = sft_flow(sft_config, parent_mlflow_run_id=run.run_id)
        for label, model in (("base", base), ("sft", sft_model)):
            probe = probe_checkpoint(model, bench, config.probe, config.rewards, run.run_id)
            print(
                f"{label} model probe on {bench}: accuracy={probe['accuracy']:.3f} "
                f"format={probe['format']:.3f} "
                f"zero-variance groups={probe['zero_variance_groups']:.2f}"
            )
        refs = {
            "base_model": base,
            "benchmark": bench,
            "rl_pool": rl_pool,
            "sft": sft,
            "sft_model": sft_model,
        }
        run.record_writes([rl_pool, sft, sft_model])
        run.set_tags({f"mmr1.output.{key}": value for key, value in refs.items()})
        return refs | {"mlflow_run_id": run.run_id}
