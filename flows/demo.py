"""The ``demo`` flow: every existing stage on the tiny offline model and synthetic data.

Stages so far: base model -> synthetic RL pool, SFT CoT data (teacher traces
kept only when they verify) and benchmark -> a probe of the base model. Every
output is a catalog ref; the flow's MLflow run is tagged with all of them.
"""

from prefect import flow

from schemas.demo import DemoConfig
from tasks.context import flow_tracking
from tasks.datasets import synthesize_benchmark, synthesize_rl_pool, synthesize_sft_cot
from tasks.models import build_base_model
from tasks.probe import probe_checkpoint


@flow(name="demo", log_prints=True)
def demo(config: DemoConfig | None = None) -> dict[str, str]:
    """Run the pipeline end to end on the embedded default and return the refs it wrote."""
    config = config or DemoConfig()
    with flow_tracking("demo", config) as run:
        base = build_base_model(config.base_model_name, config.base_model, run.run_id)
        rl_pool = synthesize_rl_pool("synthetic-rl", config.rl_pool, run.run_id)
        sft = synthesize_sft_cot("synthetic-sft", config.sft_pool, config.rewards, run.run_id)
        bench = synthesize_benchmark(
            "synthetic-bench", config.benchmark_seed, config.benchmark_items, run.run_id
        )
        probe = probe_checkpoint(base, bench, config.probe, config.rewards, run.run_id)
        print(
            f"base model probe: accuracy={probe['accuracy']:.3f} format={probe['format']:.3f} "
            f"zero-variance groups={probe['zero_variance_groups']:.2f}"
        )
        refs = {"base_model": base, "rl_pool": rl_pool, "sft": sft, "benchmark": bench}
        run.set_tags({f"mmr1.output.{key}": value for key, value in refs.items()})
        return refs | {"mlflow_run_id": run.run_id}
