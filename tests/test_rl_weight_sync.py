"""Weight sync from the trained policy into a colocated vLLM engine, without vLLM.

The stand-in engine's ``load_weights`` behaves like vLLM's on the points that
matter here: it consumes ``(Hugging Face name, tensor)`` pairs lazily, renames
them with Qwen2.5-VL's prefix mapping and copies each into its own bf16
parameter. It records names, shapes, dtypes, storage pointers and copies.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from mmr1.generation.vllm import VLLMBackend
from mmr1.models.loader import load_policy
from mmr1.rl import rollout as rollout_module
from mmr1.rl.rollout import RolloutSource, policy_weights
from schemas.generation import VLLMBackendConfig

# vLLM's Qwen2_5_VLForConditionalGeneration.hf_to_vllm_mapper, most specific first.
QWEN25VL_PREFIXES = {
    "model.language_model.": "language_model.model.",
    "model.visual.": "visual.",
    "lm_head.": "language_model.lm_head.",
    "model.": "language_model.model.",
}


def vllm_name(name: str) -> str:
    for old, new in QWEN25VL_PREFIXES.items():
        if name.startswith(old):
            return new + name[len(old) :]
    return name


class RecordingEngine:
    """A ``vllm.LLM`` stand-in whose model copies loaded weights into bf16 parameters."""

    instances: list[RecordingEngine] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.params: dict[str, torch.Tensor] = {}
        self.received: list[dict[str, Any]] = []
        self.copies = 0
        self.weights_types: list[type] = []
        self.on_copy: Any = None
        RecordingEngine.instances.append(self)

    def get_tokenizer(self) -> Any:
        return SimpleNamespace(get_vocab=dict)

    def apply_model(self, func: Any) -> list[Any]:
        return [func(SimpleNamespace(load_weights=self.load_weights))]

    def load_weights(self, weights: Any) -> set[str]:
        self.weights_types.append(type(weights))
        loaded = set()
        for name, tensor in weights:  # lazily, like vLLM's AutoWeightsLoader
            target = vllm_name(name)
            self.received.append(
                {
                    "name": name,
                    "target": target,
                    "shape": tuple(tensor.shape),
                    "dtype": tensor.dtype,
                    "ptr": tensor.data_ptr(),
                }
            )
            param = self.params.setdefault(target, torch.empty(tensor.shape, dtype=torch.bfloat16))
            param.copy_(tensor)  # the one copy: into the engine's own tensor, dtype converted
            self.copies += 1
            if self.on_copy is not None:
                self.on_copy(name)
            loaded.add(target)
        return loaded

    def reset_prefix_cache(self) -> None:
        pass


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> VLLMBackend:
    monkeypatch.setitem(sys.modules, "vllm", SimpleNamespace(LLM=RecordingEngine))
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    monkeypatch.setattr(RecordingEngine, "instances", [])
    return VLLMBackend(VLLMBackendConfig(model="m"), colocated=True)


def _refuse_pickling(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Any, protocol: Any) -> Any:
        raise AssertionError("a tensor was pickled during weight sync")

    monkeypatch.setattr(torch.Tensor, "__reduce_ex__", refuse)
    monkeypatch.setattr(torch.nn.Parameter, "__reduce_ex__", refuse)


def test_sync_streams_each_parameter_once_by_reference(
    tiny_dir: Path, engine: VLLMBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = load_policy(tiny_dir, device="cpu", dtype=torch.float32, for_training=True).model
    params = dict(model.named_parameters())
    with torch.no_grad():  # the update that makes the engine stale
        for p in params.values():
            p.add_(0.25)
    # Count what the source has produced each time the engine copies a tensor.
    produced: list[int] = []
    seen = 0

    def counting(module: torch.nn.Module) -> Any:
        nonlocal seen
        for item in policy_weights(module):
            seen += 1
            yield item

    monkeypatch.setattr(rollout_module, "policy_weights", counting)
    llm = RecordingEngine.instances[-1]
    llm.on_copy = lambda name: produced.append(seen)
    source = RolloutSource(engine)
    source.mark_stale()
    _refuse_pickling(monkeypatch)
    assert source.sync(model) > 0.0
    monkeypatch.undo()

    names = [r["name"] for r in llm.received]
    assert names == list(params)  # every parameter, once, in module order
    assert len(names) == len(set(names))
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert ("lm_head.weight" in names) == (not tied)
    assert all(
        r["target"].startswith(("language_model.model.", "language_model.lm_head.", "visual."))
        for r in llm.received
    )
    assert sum(n.startswith("model.visual.") for n in names) > 0
    for r in llm.received:
        p = params[r["name"]]
        assert r["shape"] == tuple(p.shape) and r["dtype"] == p.dtype == torch.float32
        assert r["ptr"] == p.data_ptr()  # handed over by reference: no copy on our side
    assert llm.copies == len(params)  # one copy per tensor, into the engine
    assert produced == list(range(1, len(params) + 1))  # consumed lazily, one at a time
    assert all(t not in (list, tuple, dict) for t in llm.weights_types)
    for r in llm.received:
        expected = params[r["name"]].detach().to(torch.bfloat16)
        assert torch.equal(llm.params[r["target"]], expected)
    assert source.stale is False and source.sync(model) == 0.0  # nothing changed since


def test_zero3_parameters_are_gathered_one_at_a_time(
    engine: VLLMBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("deepspeed")
    import deepspeed

    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    names = {id(p): n for n, p in module.named_parameters()}
    for p in module.parameters():
        p.ds_id = names[id(p)]  # marks a ZeRO-3 partitioned parameter
    events: list[tuple[str, str]] = []

    @contextlib.contextmanager
    def gathered(params: list[torch.nn.Parameter], modifier_rank: Any = None) -> Any:
        (param,) = params  # one parameter per gather
        events.append(("gather", names[id(param)]))
        yield
        events.append(("release", names[id(param)]))

    monkeypatch.setattr(deepspeed.zero, "GatheredParameters", gathered)
    llm = RecordingEngine.instances[-1]
    llm.on_copy = lambda name: events.append(("copy", name))
    engine.update_weights(policy_weights(module))
    expected = []
    for name in ("0.weight", "0.bias", "1.weight", "1.bias"):
        expected += [("gather", name), ("copy", name), ("release", name)]
    assert events == expected
