"""A new user's path with real-layout inputs, on tiny local files (no hub):

register a hub-layout Qwen2.5-VL from the local HF cache, curate SFT data from a
parquet in the released MMR1-SFT layout keeping its own chains of thought, run
SFT from the registered model, and read the lineage of the result.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hub_fixtures import TINY_REPO, hub_cache_dir, install_in_hf_cache, write_hub_layout_checkpoint
from sft_layout import write_sft_layout_parquet

from mmr1.catalog import Catalog
from schemas.curation import CurateSFTConfig
from schemas.home import HomeConfig
from schemas.presets import load_config
from schemas.sft_flow import SFTStageConfig


@pytest.fixture(scope="module")
def cached_hub_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    files = write_hub_layout_checkpoint(tmp_path_factory.mktemp("hub") / "files")
    return install_in_hf_cache(files, TINY_REPO, hub_cache_dir())


def _lineage_refs(node) -> set[str]:
    return {parent.ref for parent in node.parents} | {
        ref for parent in node.parents for ref in _lineage_refs(parent)
    }


def test_register_curate_and_fine_tune_real_layout_inputs(
    prefect_harness, cached_hub_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.curate import curate_sft
    from flows.sft import sft
    from mmr1.models.registry import register_model

    monkeypatch.setenv("MMR1_HOME", str(tmp_path / "home"))
    home = HomeConfig().ensure()
    catalog = Catalog(home.catalog)
    base = register_model(catalog, TINY_REPO, name="qwen-3b")
    data = write_sft_layout_parquet(tmp_path / "mmr1-sft" / "train.parquet")
    curated = curate_sft(
        CurateSFTConfig.model_validate(
            {
                "output_name": "mmr1-sft",
                "sources": [{"kind": "local", "name": "mmr1-sft", "path": str(data.parent)}],
                "difficulty": {"enabled": False},
                "cot": {"teacher": {"kind": "existing"}},
            }
        )
    )
    assert curated == "dataset:mmr1-sft@1"
    config = load_config(
        SFTStageConfig,
        "sft-demo",
        [
            f"dataset={curated}",
            "base_model=qwen-3b",
            "output_name=qwen-3b-sft",
            "train.max_steps=2",
            "train.micro_batch_size=2",
            "train.eval_every=2",
            "train.eval_max_items=1",
            "train.eval_max_new_tokens=8",
            "train.save_every=2",
        ],
    )
    ref = sft(config)
    entry = catalog.get_checkpoint(ref)
    assert (entry.stage, entry.step) == ("sft", 2)
    lineage = catalog.lineage(entry.ref, kind="checkpoint")
    assert {"mmr1-sft@1", base.ref, "source-mmr1-sft@1"} <= _lineage_refs(lineage)
    # The fine-tuned checkpoint keeps the hub model's tokenizer and loads again.
    from mmr1.models import load_policy

    policy = load_policy(entry.uri, device="cpu")
    assert type(policy.tokenizer).__name__ == "Qwen2Tokenizer"


@pytest.mark.slow
def test_the_same_path_through_the_mmr1_command(cached_hub_model: Path, tmp_path: Path) -> None:
    env = {**os.environ, "MMR1_HOME": str(tmp_path / "home")}

    def mmr1(*args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout

    assert "checkpoint:qwen-3b@1" in mmr1("model", "register", TINY_REPO, "--name", "qwen-3b")
    data = write_sft_layout_parquet(tmp_path / "mmr1-sft.parquet")
    mmr1(
        "curate",
        "sft",
        "--set",
        "output_name=mmr1-sft",
        "--set",
        f"sources=[{{kind: local, name: mmr1-sft, path: {data}}}]",
        "--set",
        "difficulty.enabled=false",
        "--set",
        "cot={teacher: {kind: existing}}",
    )
    shown = mmr1("catalog", "show", "mmr1-sft")
    assert "cot_rejected" in shown  # the row whose CoT lacks the format, with its reason
    mmr1(
        "sft",
        "--config",
        "sft-demo",
        "--set",
        "dataset=mmr1-sft",
        "--set",
        "base_model=qwen-3b",
        "--set",
        "train.max_steps=2",
        "--set",
        "train.eval_every=2",
        "--set",
        "train.eval_max_items=1",
        "--set",
        "train.save_every=2",
    )
    lineage = mmr1("catalog", "lineage", "tiny-sft")
    assert "mmr1-sft@1" in lineage and "qwen-3b@1" in lineage
