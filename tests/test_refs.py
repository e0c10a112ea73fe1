"""The one reference grammar: catalog refs, model sources, and the ref fields of configs."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas.refs import Ref, parse_model_source, parse_ref, ref_fields
from schemas.sft_flow import SFTStageConfig


@pytest.mark.parametrize(
    ("text", "kind", "ref", "path", "hub", "revision"),
    [
        ("tiny-sft", "catalog", Ref(None, "tiny-sft", None), None, None, None),
        ("tiny-sft@2", "catalog", Ref(None, "tiny-sft", 2), None, None, None),
        ("checkpoint:tiny-sft@3", "catalog", Ref("checkpoint", "tiny-sft", 3), None, None, None),
        ("/abs/model", "local", None, "/abs/model", None, None),
        ("./rel/model", "local", None, "./rel/model", None, None),
        ("~/models/qwen", "local", None, "~/models/qwen", None, None),
        ("hf:Qwen/Qwen2.5-VL-7B-Instruct", "hub", None, None, "Qwen/Qwen2.5-VL-7B-Instruct", None),
        (
            "hf:Qwen/Qwen2.5-VL-3B-Instruct@v1.0",
            "hub",
            None,
            None,
            "Qwen/Qwen2.5-VL-3B-Instruct",
            "v1.0",
        ),
        # ORG/NAME: a catalog name if one exists, else a relative directory, else a hub id.
        (
            "Qwen/Qwen2.5-VL-7B-Instruct",
            "name",
            Ref(None, "Qwen/Qwen2.5-VL-7B-Instruct", None),
            "Qwen/Qwen2.5-VL-7B-Instruct",
            "Qwen/Qwen2.5-VL-7B-Instruct",
            None,
        ),
        ("org/model@main", "name", None, "org/model@main", "org/model", "main"),
    ],
)
def test_model_sources(text, kind, ref, path, hub, revision) -> None:
    source = parse_model_source(text)
    assert (source.kind, source.ref, source.path, source.hub_id, source.revision) == (
        kind,
        ref,
        path,
        hub,
        revision,
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "a checkpoint must be"),
        ("dataset:rl-pool", "names a dataset, not a checkpoint"),
        ("weird:thing", "unknown kind 'weird'"),
        ("hf:not-a-repo", "malformed hub id"),
        ("two words", "is not a catalog ref"),
        ("a/b/c@", "is not a catalog ref"),
    ],
)
def test_invalid_model_sources(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_model_source(text)


def test_catalog_refs_and_bare_form() -> None:
    assert parse_ref("vps:pool-vps@4") == Ref("vps", "pool-vps", 4)
    assert parse_ref("dataset:org/set").bare() == "org/set"
    with pytest.raises(ValueError, match="versions start at 1"):
        parse_ref("x@0")


def test_config_fields_validate_and_declare_their_refs() -> None:
    with pytest.raises(ValidationError, match="base_model"):
        SFTStageConfig(base_model="not a ref")
    config = SFTStageConfig(dataset="dataset:sft@2", base_model="Qwen/Qwen2.5-VL-3B-Instruct")
    found = {(f.path, f.kind, f.role, f.value) for f in ref_fields(config)}
    assert found == {
        ("dataset", "dataset", "input", "dataset:sft@2"),
        ("base_model", "checkpoint", "input", "Qwen/Qwen2.5-VL-3B-Instruct"),
        ("output_name", "checkpoint", "output", "sft"),
    }
