"""Outside checkpoints: a hub-layout Qwen2.5-VL in a local HF cache (offline) or a directory,
registered in the catalog and loaded without torchvision."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hub_fixtures import TINY_REPO, hub_cache_dir, install_in_hf_cache, write_hub_layout_checkpoint

from mmr1.catalog import Catalog, CatalogNotFoundError
from mmr1.models.hub import ModelSourceError, checkpoint_content_hash
from mmr1.models.registry import check_checkpoint_source, register_model, resolve_checkpoint


@pytest.fixture(scope="module")
def hub_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model in the hub layout, also installed in the session's HF cache."""
    files = write_hub_layout_checkpoint(tmp_path_factory.mktemp("hub") / "files")
    install_in_hf_cache(files, TINY_REPO, hub_cache_dir())
    return files


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return Catalog(tmp_path / "catalog.duckdb")


def test_register_a_cached_hub_model_offline(hub_files: Path, catalog: Catalog) -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    entry = register_model(catalog, TINY_REPO, name="qwen-3b")
    assert (entry.ref, entry.stage) == ("qwen-3b@1", "base")
    snapshot = Path(entry.uri)
    assert snapshot.parent.name == "snapshots" and snapshot.is_relative_to(hub_cache_dir())
    assert entry.config["source"] == "hub" and entry.config["hub_id"] == TINY_REPO
    assert (
        entry.config["revision"] == snapshot.name and entry.config["requested_revision"] == "main"
    )
    # Identity is the content: the hub snapshot hashes like a plain copy of its files.
    assert entry.content_hash == checkpoint_content_hash(hub_files)
    assert register_model(catalog, TINY_REPO, name="qwen-3b") == entry  # idempotent
    pinned = register_model(catalog, TINY_REPO, name="qwen-3b", revision=snapshot.name)
    assert pinned.ref == "qwen-3b@1"


def test_register_a_local_directory_and_a_copy(
    hub_files: Path, catalog: Catalog, tmp_path: Path
) -> None:
    local = tmp_path / "My-Model"
    shutil.copytree(hub_files, local)
    entry = register_model(catalog, str(local))
    assert entry.name == "my-model" and entry.config == {
        "source": "local",
        "path": str(local.resolve()),
        "copied": False,
    }
    copied = register_model(
        catalog, str(local), name="kept", copy=True, checkpoints_dir=tmp_path / "ck"
    )
    assert (
        Path(copied.uri).is_relative_to(tmp_path / "ck")
        and copied.content_hash == entry.content_hash
    )
    assert (Path(copied.uri) / "model.safetensors.index.json").is_file()
    with pytest.raises(ModelSourceError, match="not a copy"):
        register_model(catalog, str(local), copy=True, checkpoints_dir=tmp_path / "ck")


def test_checkpoint_fields_register_outside_sources_on_the_fly(
    hub_files: Path, catalog: Catalog
) -> None:
    first = resolve_checkpoint(catalog, TINY_REPO)
    assert first.ref == "qwen2.5-vl-3b-instruct@1"  # the repo name: what paper presets read
    assert resolve_checkpoint(catalog, f"hf:{TINY_REPO}") == first
    assert resolve_checkpoint(catalog, "qwen2.5-vl-3b-instruct") == first
    # The same files under another name resolve to the entry that holds them already.
    assert resolve_checkpoint(catalog, str(hub_files)) == first
    with pytest.raises(CatalogNotFoundError, match="no checkpoint named 'missing'"):
        resolve_checkpoint(catalog, "missing")


def test_cheap_checks_name_the_problem(hub_files: Path, catalog: Catalog, tmp_path: Path) -> None:
    assert check_checkpoint_source(catalog, TINY_REPO) is None
    assert check_checkpoint_source(catalog, str(hub_files)) is None
    assert "not in the local HF cache" in (check_checkpoint_source(catalog, "Org/Absent") or "")
    assert "is not a directory" in (check_checkpoint_source(catalog, "/no/such/dir") or "")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no config.json" in (check_checkpoint_source(catalog, str(empty)) or "")
    (empty / "config.json").write_text(
        json.dumps({"model_type": "qwen2_5_vl", "vision_config": {}})
    )
    assert "no weights" in (check_checkpoint_source(catalog, str(empty)) or "")
    assert "no checkpoint named 'tiny-sft'" in (check_checkpoint_source(catalog, "tiny-sft") or "")


def test_load_policy_from_a_hub_id_without_torchvision(hub_files: Path) -> None:
    from PIL import Image
    from transformers.utils import is_torchvision_available

    from mmr1.models import load_policy
    from mmr1.models.processor import ImageOnlyQwenVLProcessor, build_messages

    assert not is_torchvision_available()  # the situation this path exists for
    policy = load_policy(TINY_REPO, device="cpu")
    processor = policy.processor
    assert isinstance(processor, ImageOnlyQwenVLProcessor) and policy.is_vlm
    assert type(processor.tokenizer).__name__ == "Qwen2Tokenizer"
    assert processor.tokenizer.padding_side == "left"
    text = processor.apply_chat_template(
        build_messages("<image>\nWhat?", 1), add_generation_prompt=True
    )
    assert text.endswith("<|im_start|>assistant\n") and "<|vision_start|><|image_pad|>" in text
    batch = processor(text=[text], images=[Image.new("RGB", (56, 56), (255, 0, 0))])
    assert batch["image_grid_thw"].tolist() == [[1, 4, 4]]
    assert int(batch["mm_token_type_ids"].sum()) == 4
    with pytest.raises(ValueError, match="video inputs need"):
        processor(text=[text], images=[Image.new("RGB", (56, 56))], videos=[[]])


def _mmr1(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MMR1_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_mmr1_model_register_command(hub_files: Path, tmp_path: Path) -> None:
    out = _mmr1("model", "register", TINY_REPO, "--name", "qwen-3b", home=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("checkpoint:qwen-3b@1")
    again = _mmr1("model", "register", TINY_REPO, "--name", "qwen-3b", "--json", home=tmp_path)
    assert json.loads(again.stdout)["version"] == 1
    shown = json.loads(_mmr1("catalog", "show", "qwen-3b", "--json", home=tmp_path).stdout)
    assert shown["config"]["hub_id"] == TINY_REPO
    bad = _mmr1("model", "register", "Org/Absent", home=tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert bad.stderr.startswith("mmr1: error: hub model 'Org/Absent'")
