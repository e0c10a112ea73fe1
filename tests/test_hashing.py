"""mmr1.hashing: the code version in every stage key (sources, assets, library versions)."""

from __future__ import annotations

import importlib.metadata
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from mmr1 import hashing
from mmr1.hashing import code_version, distribution_versions, source_version

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def fresh_caches() -> Iterator[None]:
    """The versions are cached per process; every test starts and ends with empty caches."""
    source_version.cache_clear()
    distribution_versions.cache_clear()
    yield
    source_version.cache_clear()
    distribution_versions.cache_clear()


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_assets_count_and_caches_hidden_files_and_excluded_dirs_do_not(tmp_path: Path) -> None:
    _write(tmp_path / "pkg" / "__init__.py", "")
    _write(tmp_path / "pkg" / "assets" / "vocab.json", '{"a": 0}')
    _write(tmp_path / "pkg" / "presets" / "demo.yaml", "lr: 1")
    before = source_version("pkg", root=tmp_path, exclude_dirs=("presets",))

    def again() -> str:
        source_version.cache_clear()
        return source_version("pkg", root=tmp_path, exclude_dirs=("presets",))

    # Byte-code, hidden files (editor swap files, staging copies) and excluded folders.
    _write(tmp_path / "pkg" / "__pycache__" / "x.cpython-311.pyc", "junk")
    _write(tmp_path / "pkg" / ".vocab.json.swp", "junk")
    _write(tmp_path / "pkg" / ".staging-1" / "w.bin", "junk")
    _write(tmp_path / "pkg" / "presets" / "demo.yaml", "lr: 2")
    assert again() == before
    # A package asset changes the version, as does a renamed or an added source file.
    _write(tmp_path / "pkg" / "assets" / "vocab.json", '{"a": 1}')
    changed = again()
    assert changed != before
    (tmp_path / "pkg" / "assets" / "vocab.json").rename(tmp_path / "pkg" / "assets" / "v.json")
    assert again() not in {before, changed}
    _write(tmp_path / "pkg" / "extra.py", "")
    assert len({before, changed, again()}) == 3


def test_cached_per_process_and_root(tmp_path: Path) -> None:
    _write(tmp_path / "a" / "pkg" / "m.py", "x = 1")
    _write(tmp_path / "b" / "pkg" / "m.py", "x = 2")
    first = source_version("pkg", root=tmp_path / "a")
    _write(tmp_path / "a" / "pkg" / "m.py", "x = 3")
    assert source_version("pkg", root=tmp_path / "a") == first  # cached: no second walk
    assert source_version("pkg", root=tmp_path / "b") != first


def test_editing_the_tiny_models_chat_template_changes_the_code_version(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "mmr1", tmp_path / "mmr1", ignore=shutil.ignore_patterns("__pycache__"))
    template = tmp_path / "mmr1" / "models" / "assets" / "chat_template.jinja"
    assert template.is_file()
    before = code_version(("mmr1",), root=tmp_path)
    assert before == code_version(("mmr1",), root=tmp_path)
    template.write_text(template.read_text() + "\n")
    source_version.cache_clear()
    assert code_version(("mmr1",), root=tmp_path) != before


def test_library_versions_are_part_of_the_code_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path / "pkg" / "m.py", "")
    installed = dict(distribution_versions("torch", "surely-not-installed-mmr1"))
    assert installed == {"torch": importlib.metadata.version("torch")}  # missing: left out
    before = code_version(("pkg",), ("torch",), root=tmp_path)
    assert before != code_version(("pkg",), (), root=tmp_path)

    real = importlib.metadata.version
    monkeypatch.setattr(
        hashing.importlib.metadata,
        "version",
        lambda name: "999.0" if name == "torch" else real(name),
    )
    distribution_versions.cache_clear()
    assert code_version(("pkg",), ("torch",), root=tmp_path) != before


def test_pipeline_stage_keys_follow_library_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    from schemas.vas import VPSEstimateConfig
    from tasks.versions import KEY_DISTRIBUTIONS, stage_key

    assert {"torch", "transformers", "accelerate", "vllm", "mmr1-pipeline"} <= set(
        KEY_DISTRIBUTIONS
    )
    config = VPSEstimateConfig()
    before = stage_key("estimate_vps", config)
    assert stage_key("estimate_vps", config) == before
    real = importlib.metadata.version
    monkeypatch.setattr(
        hashing.importlib.metadata,
        "version",
        lambda name: "0.0.0+other" if name == "transformers" else real(name),
    )
    distribution_versions.cache_clear()
    assert stage_key("estimate_vps", config) != before
