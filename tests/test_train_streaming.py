"""Streaming SFT data: lazy rows, batches and weights equal to the in-memory path, exact resume.

The dataset is written twice: as ``data.parquet`` in one row group, and split
over two files in row groups of 5 rows. The in-memory reference reads every
record with the eager reader, encodes them all up front and applies the
documented data plan (hashed split, seeded epoch permutations, too-long samples
left out of their micro-batch); the recipe reads the split copy lazily in
DataLoader workers. Both must produce the same tensors, and the same weights.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from job_specs import job_command, sft_job, write_job
from safetensors.torch import load_file
from sft_layout import write_sft_layout_parquet

from mmr1.data.io import read_sft_dataset, write_sft_dataset
from mmr1.data.synthetic import generate_items, to_sft_record
from mmr1.models import load_policy
from mmr1.sft.data import MicroBatch, SFTCollator, SFTEncoder
from mmr1.sft.recipe import SFTRecipe, run_sft
from mmr1.sft.rows import SFTRows
from mmr1.sft.sampling import SampleStream, micro_batches_for_step, split_train_eval
from mmr1.sft.stream import SFTData
from schemas.records import ChatTurn, SFTRecord
from schemas.sft import SFTConfig, SFTResult
from schemas.synthetic import SyntheticConfig

ROOT = Path(__file__).resolve().parents[1]
CUTOFF = 160


def _records() -> list[SFTRecord]:
    """24 records: every 4th text-only, every 3rd with a reply too long for CUTOFF tokens."""
    out = []
    items = generate_items(SyntheticConfig(n_items=24, families=["shape_color", "bar_chart"]))
    for i, item in enumerate(items):
        record = to_sft_record(item)
        turns = [{"from": t.from_, "value": t.value} for t in record.conversations]
        images = record.images
        if i % 4 == 0:
            turns[0]["value"] = turns[0]["value"].replace("<image>", "(no image)")
            images = []
        if i % 3 == 0:
            turns[1]["value"] = "<think>" + "so on and so forth, " * 40 + turns[1]["value"][7:]
        conversations = [ChatTurn.model_validate(t) for t in turns]
        out.append(record.model_copy(update={"conversations": conversations, "images": images}))
    return out


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(one file, one row group)`` and ``(two files, row groups of 5)``, same rows."""
    root = tmp_path_factory.mktemp("streaming")
    single = root / "single"
    write_sft_dataset(_records(), single)
    table = pq.read_table(single / "data.parquet")
    split = root / "split"
    split.mkdir()
    pq.write_table(table.slice(0, 13), split / "part-0.parquet", row_group_size=5)
    pq.write_table(table.slice(13), split / "part-1.parquet", row_group_size=5)
    return single, split


@pytest.fixture(scope="module")
def policy(tiny_dir: Path):
    return load_policy(tiny_dir, device="cpu", dtype="float32", for_training=False)


def sft_config(**overrides) -> SFTConfig:
    base = dict(
        lr=1e-3,
        micro_batch_size=2,
        grad_accum=4,
        max_steps=6,
        warmup_ratio=0.0,
        cutoff_len=CUTOFF,
        eval_fraction=0.1,
        eval_every=1000,
        eval_max_items=0,
        save_every=1000,
        log_every=1,
        torch_threads=1,
        num_workers=2,
    )
    return SFTConfig(**{**base, **overrides})


def in_memory_micro_batches(
    data_dir: Path, policy, cfg: SFTConfig, *, rank: int = 0, world_size: int = 1
) -> list[MicroBatch]:
    """The documented data plan, computed with every record read and encoded up front."""
    records = read_sft_dataset(data_dir)
    encoder = SFTEncoder(policy.processor, is_vlm=True, image_root=data_dir)
    encoded = [encoder.encode(r) for r in records]
    collator = SFTCollator(policy.tokenizer.pad_token_id, is_vlm=True)
    train_rows, _ = split_train_eval(len(records), cfg.eval_fraction, cfg.seed)
    stream = SampleStream(len(train_rows), cfg.seed)
    out = []
    for step in range(cfg.max_steps):
        micro_batches = micro_batches_for_step(
            stream,
            step,
            micro_batch_size=cfg.micro_batch_size,
            grad_accum=cfg.grad_accum,
            rank=rank,
            world_size=world_size,
        )
        per_rank = cfg.micro_batch_size * cfg.grad_accum
        position = (step * world_size + rank) * per_rank  # stream position of the first sample
        for micro in micro_batches:
            samples = [encoded[train_rows[i]] for i in micro]
            kept = [s for s in samples if s.num_tokens <= CUTOFF]
            first_epoch = [
                s for k, s in enumerate(samples) if position + k < len(train_rows)
            ]  # each sample drawn once there: where drops are counted
            position += len(micro)
            out.append(
                MicroBatch(
                    tensors=collator(kept) if kept else None,
                    samples=len(kept),
                    dropped=len(samples) - len(kept),
                    dropped_first_epoch=sum(1 for s in first_epoch if s.num_tokens > CUTOFF),
                )
            )
    return out


def assert_same(got: MicroBatch, want: MicroBatch) -> None:
    assert (got.samples, got.dropped, got.dropped_first_epoch) == (
        want.samples,
        want.dropped,
        want.dropped_first_epoch,
    )
    if want.tensors is None:
        assert got.tensors is None
        return
    assert got.tensors.keys() == want.tensors.keys()
    for key, value in want.tensors.items():
        assert torch.equal(got.tensors[key], value), key


def test_rows_read_lazily_equal_the_eager_reader(datasets, tmp_path: Path) -> None:
    single, split = datasets
    eager = read_sft_dataset(single)
    rows = SFTRows(split)
    assert len(rows) == 24 and rows.files == sorted(split.glob("*.parquet"))
    assert [rows.record(i) for i in range(24)] == eager  # across files and row groups
    assert [r.id for r in rows.records([23, 0, 7])] == [eager[23].id, eager[0].id, eager[7].id]
    assert rows.image_counts().tolist() == [len(r.images) for r in eager]
    with pytest.raises(IndexError, match="row 24 out of range"):
        rows.record(24)
    layout = write_sft_layout_parquet(tmp_path / "layout" / "train.parquet")
    missing = r"train.parquet: missing required column\(s\) \['answer'\]"
    with pytest.raises(ValueError, match=missing):
        SFTRows(layout.parent)


def test_streaming_batches_equal_the_in_memory_batches(datasets, policy) -> None:
    single, split = datasets
    one = sft_config()
    want = in_memory_micro_batches(single, policy, one)
    assert len(want) == 6 * 4
    assert any(mb.tensors is None for mb in want)  # a micro-batch of too-long samples only
    assert any(mb.tensors is not None and mb.dropped for mb in want)
    assert sum(mb.dropped_first_epoch for mb in want) < sum(mb.dropped for mb in want)
    data = SFTData(split, policy, one)
    assert len(data.train) == 22 and len(data.eval) == 2
    got = list(data.train_loader(start_step=0, stop_step=6, rank=0, world_size=1))
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert_same(g, w)

    # Two processes, each with half the accumulation: together the same global batches.
    two = sft_config(grad_accum=2, num_workers=0)
    halves = SFTData(split, policy, two)
    for rank in (0, 1):
        loader = halves.train_loader(start_step=2, stop_step=6, rank=rank, world_size=2)
        expected = in_memory_micro_batches(single, policy, two, rank=rank, world_size=2)[4:]
        for g, w in zip(list(loader), expected, strict=True):
            assert_same(g, w)


def test_streaming_reaches_the_weights_of_in_memory_steps(
    datasets, policy, tiny_dir: Path, tmp_path: Path
) -> None:
    single, split = datasets
    cfg = sft_config()
    streamed = run_sft(cfg, model_path=tiny_dir, dataset_path=split, output_dir=tmp_path / "a")

    recipe = SFTRecipe(cfg.model_copy(update={"num_workers": 0}), tiny_dir, single, tmp_path / "b")
    recipe.setup(resume=False)
    batches = in_memory_micro_batches(single, policy, cfg)
    for step in range(cfg.max_steps):
        recipe._optimizer_step(batches[step * 4 : (step + 1) * 4])
    recipe.policy.model.save_pretrained(tmp_path / "b" / "weights")

    want = load_file(tmp_path / "b" / "weights" / "model.safetensors")
    got = load_file(tmp_path / "a" / "final" / "model.safetensors")
    assert want.keys() == got.keys()
    for name in want:
        assert torch.equal(want[name], got[name]), name  # bitwise
    train_drops = sum(mb.dropped_first_epoch for mb in batches)
    assert recipe.state.dropped_too_long == train_drops > 0
    eval_rows = split_train_eval(24, cfg.eval_fraction, cfg.seed)[1].tolist()
    eval_drops = sum(1 for row in eval_rows if row % 3 == 0)
    assert streamed.dropped_too_long == train_drops + eval_drops
    assert streamed.train_samples == 22 and streamed.eval_samples == 2


def test_zero3_text_only_check_reads_one_column(datasets, policy) -> None:
    _, split = datasets
    with pytest.raises(ValueError, match=r"6 training sample\(s\) have no image"):
        SFTData(split, policy, sft_config(eval_fraction=0.0)).check_zero3_images()


_KILL_AT_STEP_3 = """
import os, signal, sys
from pathlib import Path

from mmr1.sft.recipe import run_sft
from schemas.sft import SFTConfig

config, model, data, out = sys.argv[1:]


def die(metrics, step):
    if step == 3 and "loss" in metrics:  # after the step-2 checkpoint, mid-run
        os.kill(os.getpid(), signal.SIGKILL)


run_sft(SFTConfig.model_validate_json(Path(config).read_text()), model_path=Path(model),
        dataset_path=Path(data), output_dir=Path(out), metrics_callback=die)
"""


@pytest.mark.slow
def test_sigkill_then_resume_reaches_the_uninterrupted_weights(
    datasets, tiny_dir: Path, tmp_path: Path
) -> None:
    _, split = datasets
    cfg = sft_config(save_every=2, eval_every=3, eval_max_items=2, eval_max_new_tokens=8)
    whole = run_sft(cfg, model_path=tiny_dir, dataset_path=split, output_dir=tmp_path / "whole")

    config_path = tmp_path / "config.json"
    config_path.write_text(cfg.model_dump_json())
    driver = tmp_path / "driver.py"
    driver.write_text(_KILL_AT_STEP_3)
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [str(config_path), str(tiny_dir), str(split), str(out)]
    killed = subprocess.run([sys.executable, str(driver), *args], env=env, cwd=ROOT, check=False)
    assert killed.returncode == -signal.SIGKILL
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-000002"]
    state = json.loads((out / "checkpoints" / "step-000002" / "trainer_state.json").read_text())
    assert (state["epoch"], state["epoch_offset"]) == (0, 16)

    spec = write_job(tmp_path / "job.json", sft_job(cfg, tiny_dir, split, out))
    subprocess.run(job_command(spec), env=env, cwd=ROOT, check=True)
    resumed = SFTResult.model_validate_json((out / "result.json").read_text())
    want = load_file(tmp_path / "whole" / "final" / "model.safetensors")
    got = load_file(out / "final" / "model.safetensors")
    for name in want:
        assert torch.equal(want[name], got[name]), name  # bitwise
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]
    assert resumed.eval_history == whole.eval_history
    assert resumed.dropped_too_long == whole.dropped_too_long > 0
