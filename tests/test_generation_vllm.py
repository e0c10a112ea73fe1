"""The vLLM backend without vLLM: the import error, and our conversion code.

vLLM is GPU-only and never installed on CPU machines. Conversion tests use
stand-ins with the attributes of vLLM's ``RequestOutput`` / ``CompletionOutput``
/ ``Logprob``; the real engine is exercised only under ``-m vllm``.
"""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from PIL import Image

from mmr1.generation import get_backend
from mmr1.generation.vllm import (
    VISION_SPECIAL_TOKENS,
    VLLMBackend,
    build_prompt_input,
    colocated_engine_kwargs,
    colocated_environment,
    completion_output_to_sample,
    engine_kwargs,
    format_prompt,
    request_output_to_completion,
    sampled_token_logprobs,
    sampling_kwargs,
    vision_token_ids,
)
from schemas.generation import GenerationRequest, SamplingParams, VLLMBackendConfig


def _lp(value: float) -> SimpleNamespace:
    return SimpleNamespace(logprob=value, rank=1, decoded_token=None)


def _output(
    index: int, token_ids: list[int], logprobs: Any, finish: str | None = "stop"
) -> SimpleNamespace:
    return SimpleNamespace(
        index=index,
        text=f"sample {index}",
        token_ids=token_ids,
        logprobs=logprobs,
        finish_reason=finish,
    )


# -- the import error --------------------------------------------------------------------


def test_missing_vllm_raises_helpful_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # "not installed", even where it is
    with pytest.raises(ImportError) as info:
        get_backend(VLLMBackendConfig(model="x"))
    message = str(info.value)
    assert "pip install 'mmr1-pipeline[gpu]'" in message
    assert "trainer environment" in message
    assert "Prefect" in message and "cannot share an environment" in message
    assert "vllm serve" in message and "'openai' backend" in message and "subprocess" in message


def test_vllm_is_imported_lazily() -> None:
    import mmr1.generation.vllm as module

    with open(module.__file__, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    top_level = [line for line in lines if line.startswith(("import vllm", "from vllm"))]
    assert top_level == []  # only VLLMBackend.__init__ imports it


# -- engine and sampling arguments ---------------------------------------------------------


def test_engine_kwargs() -> None:
    config = VLLMBackendConfig(
        model="/ckpt/policy",
        tensor_parallel_size=2,
        gpu_memory_utilization=0.5,
        max_model_len=4096,
        dtype="float16",
        limit_images_per_prompt=3,
        enforce_eager=True,
    )
    assert engine_kwargs(config, seed=7) == {
        "model": "/ckpt/policy",
        "tensor_parallel_size": 2,
        "gpu_memory_utilization": 0.5,
        "max_model_len": 4096,
        "dtype": "float16",
        "limit_mm_per_prompt": {"image": 3},
        "enforce_eager": True,
        "seed": 7,
        "logprobs_mode": "processed_logprobs",
    }


def test_colocated_engine_kwargs() -> None:
    config = VLLMBackendConfig(model="/ckpt/policy", gpu_memory_utilization=0.4)
    alone = colocated_engine_kwargs(config, seed=3)
    assert alone == engine_kwargs(config, seed=3)  # vLLM's one-worker executor, in process
    launched = colocated_engine_kwargs(config, seed=3, sleep_mode=True, world_size=8)
    assert launched == {
        **engine_kwargs(config, seed=3),
        "distributed_executor_backend": "external_launcher",
        "enable_sleep_mode": True,
    }


def test_colocated_environment_keeps_the_engine_in_process() -> None:
    env = {"WORLD_SIZE": "8", "RANK": "3"}
    assert colocated_environment(env) == 8
    assert env == {"WORLD_SIZE": "8", "RANK": "3", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    plain: dict[str, str] = {}
    assert colocated_environment(plain) == 1
    assert plain == {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    with pytest.raises(ValueError, match="VLLM_ENABLE_V1_MULTIPROCESSING is set to '1'"):
        colocated_environment({"VLLM_ENABLE_V1_MULTIPROCESSING": "1"})


def test_sampling_kwargs() -> None:
    sampling = SamplingParams(n=8, temperature=1.0, top_p=0.95, max_new_tokens=64, seed=3)
    assert sampling_kwargs(sampling, suppress_token_ids=[151655, 151652]) == {
        "n": 8,
        "temperature": 1.0,
        "top_p": 0.95,
        "max_tokens": 64,
        "seed": 3,
        "logprobs": 0,
        "logit_bias": {151655: -100.0, 151652: -100.0},
    }
    plain = sampling_kwargs(SamplingParams(return_logprobs=False))
    assert plain["logprobs"] is None
    assert "logit_bias" not in plain


def test_vision_token_ids_only_known_tokens() -> None:
    vocab = {"<|vision_start|>": 10, "<|image_pad|>": 12, "hello": 1}
    tokenizer = SimpleNamespace(get_vocab=lambda: vocab)
    assert vision_token_ids(tokenizer) == [10, 12]
    assert "<|image_pad|>" in VISION_SPECIAL_TOKENS


# -- prompt formatting ---------------------------------------------------------------------

# Written for this test in the shape of Qwen2.5-VL's template: image items become
# the vision markers, text items are copied, string contents are copied.
QWEN_LIKE_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _tiny_tokenizer() -> Any:
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    backend.add_special_tokens(["<|im_start|>", "<|im_end|>", *VISION_SPECIAL_TOKENS])
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>"
    )
    tokenizer.chat_template = QWEN_LIKE_TEMPLATE
    return tokenizer


def test_format_prompt_places_vision_markers_in_placeholder_order() -> None:
    tokenizer = _tiny_tokenizer()
    request = GenerationRequest(
        prompt="<image>\nIs it bigger than <image>?",
        images=[Image.new("RGB", (4, 4)), Image.new("RGB", (6, 6))],
        system="You are careful.",
    )
    marker = "<|vision_start|><|image_pad|><|vision_end|>"
    assert format_prompt(tokenizer, request) == (
        "<|im_start|>system\nYou are careful.<|im_end|>\n"
        f"<|im_start|>user\n{marker}\nIs it bigger than {marker}?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert len(vision_token_ids(tokenizer)) == len(VISION_SPECIAL_TOKENS)


def test_build_prompt_input() -> None:
    images = [Image.new("RGB", (4, 4)), Image.new("RGB", (6, 6))]
    built = build_prompt_input("templated", images)
    assert built["prompt"] == "templated"
    assert built["multi_modal_data"]["image"] == images
    assert build_prompt_input("text only", []) == {"prompt": "text only"}


# -- output conversion ---------------------------------------------------------------------


def test_request_output_to_completion() -> None:
    first = _output(
        0,
        [5, 9, 2],
        # logprobs=0 still returns the sampled token; extra candidates are ignored.
        [{5: _lp(-0.1)}, {9: _lp(-1.5), 4: _lp(-0.3)}, {2: _lp(-0.05)}],
        finish="stop",
    )
    second = _output(1, [7, 7], [{7: _lp(-2.0)}, {7: _lp(-0.5)}], finish="length")
    third = _output(2, [3], [{3: _lp(0.0)}], finish="abort")
    request_output = SimpleNamespace(
        request_id="0", prompt_token_ids=list(range(42)), outputs=[third, first, second]
    )
    completion = request_output_to_completion(
        request_output, request_id="item-3", want_logprobs=True
    )
    assert completion.request_id == "item-3"
    assert completion.prompt_tokens == 42
    assert [s.text for s in completion.samples] == ["sample 0", "sample 1", "sample 2"]
    assert [s.token_ids for s in completion.samples] == [[5, 9, 2], [7, 7], [3]]
    assert [s.logprobs for s in completion.samples] == [[-0.1, -1.5, -0.05], [-2.0, -0.5], [0.0]]
    assert [s.finish_reason for s in completion.samples] == ["stop", "length", "stop"]


def test_logprobs_off_or_absent_give_none() -> None:
    out = _output(0, [1, 2], [{1: _lp(-1.0)}, {2: _lp(-1.0)}])
    assert completion_output_to_sample(out, want_logprobs=False).logprobs is None
    assert completion_output_to_sample(_output(0, [1], None), want_logprobs=True).logprobs is None
    no_prompt = SimpleNamespace(outputs=[_output(0, [1], None, finish=None)])
    completion = request_output_to_completion(no_prompt, request_id=None, want_logprobs=True)
    assert completion.prompt_tokens is None
    assert completion.samples[0].finish_reason == "stop"


def test_sampled_token_logprobs_rejects_inconsistent_outputs() -> None:
    with pytest.raises(ValueError, match="2 positions but 3 tokens"):
        sampled_token_logprobs([1, 2, 3], [{1: _lp(-1.0)}, {2: _lp(-1.0)}])
    with pytest.raises(ValueError, match="position 1 lack the sampled token 2"):
        sampled_token_logprobs([1, 2], [{1: _lp(-1.0)}, {8: _lp(-1.0)}])


# -- wiring, with a stand-in engine --------------------------------------------------------


class _StandInLLM:
    """Records what VLLMBackend hands to ``vllm.LLM``; answers in input order."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.multiprocessing = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
        self.calls: list[tuple[list[dict[str, Any]], Any]] = []
        self.applied: list[Any] = []
        self.events: list[str] = []

    def get_tokenizer(self) -> Any:
        return _tiny_tokenizer()

    def generate(
        self, inputs: list[dict[str, Any]], params: Any, use_tqdm: bool = True
    ) -> list[Any]:
        self.calls.append((inputs, params))
        self.events.append("generate")
        return [
            SimpleNamespace(
                prompt_token_ids=[0] * (i + 1), outputs=[_output(0, [4], [{4: _lp(-0.7)}])]
            )
            for i in range(len(inputs))
        ]

    def apply_model(self, func: Any) -> list[Any]:
        model = SimpleNamespace(loaded=[])
        model.load_weights = lambda weights: model.loaded.extend(weights)
        func(model)
        self.applied.append(model.loaded)
        self.events.append("apply_model")
        return [None]

    def reset_prefix_cache(self) -> None:
        self.events.append("reset_prefix_cache")

    def sleep(self, level: int) -> None:
        self.events.append(f"sleep({level})")

    def wake_up(self) -> None:
        self.events.append("wake_up")


def _stand_in_vllm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", SimpleNamespace(LLM=_StandInLLM, SamplingParams=dict))
    # colocated_environment sets it; monkeypatch restores the variable afterwards.
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def test_backend_wiring_with_stand_in_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    _stand_in_vllm(monkeypatch)
    backend = VLLMBackend(VLLMBackendConfig(model="m", limit_images_per_prompt=2), seed=1)
    llm = backend._llm
    assert llm.kwargs == engine_kwargs(backend.config, seed=1)

    image = Image.new("RGB", (4, 4))
    requests = [
        GenerationRequest(prompt="<image> what?", images=[image], request_id="a"),
        GenerationRequest(prompt="text only", request_id="b"),
    ]
    completions = backend.generate(requests, SamplingParams(n=1, seed=9))
    ((inputs, params),) = llm.calls
    assert inputs[0]["multi_modal_data"] == {"image": [image]}
    assert "<|vision_start|><|image_pad|><|vision_end|> what?" in inputs[0]["prompt"]
    assert "multi_modal_data" not in inputs[1]
    assert params["seed"] == 9 and params["logprobs"] == 0
    assert set(params["logit_bias"]) == set(vision_token_ids(_tiny_tokenizer()))
    assert [c.request_id for c in completions] == ["a", "b"]
    assert [c.prompt_tokens for c in completions] == [1, 2]
    assert completions[0].samples[0].logprobs == [-0.7]
    # A separate engine would need the weights serialised: refused.
    with pytest.raises(RuntimeError, match="needs a colocated engine"):
        backend.update_weights(iter([]))
    backend.close()
    backend.close()  # idempotent


def test_colocated_engine_loads_weights_in_process_and_sleeps_between_rollouts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _stand_in_vllm(monkeypatch)
    monkeypatch.setenv("WORLD_SIZE", "2")
    config = VLLMBackendConfig(model="m")
    backend = VLLMBackend(config, seed=4, colocated=True, sleep_between_rollouts=True)
    llm = backend._llm
    assert llm.multiprocessing == "0"  # set before the engine was built
    assert llm.kwargs == colocated_engine_kwargs(config, seed=4, sleep_mode=True, world_size=2)

    backend.generate([GenerationRequest(prompt="hi")], SamplingParams(seed=1))
    weights = [("model.layers.0.mlp.up_proj.weight", torch.zeros(3, 2, dtype=torch.bfloat16))]
    sent = backend.update_weights(iter(weights))
    assert llm.applied == [weights]
    assert sent == {"tensors": 1.0, "bytes": 12.0}
    backend.generate([GenerationRequest(prompt="hi")], SamplingParams(seed=2))
    assert llm.events == [
        "generate", "sleep(1)",
        "wake_up", "apply_model", "reset_prefix_cache",  # weights are loaded awake
        "generate", "sleep(1)",  # already awake: no second wake-up
    ]  # fmt: skip
    backend.close()
    with pytest.raises(ValueError, match="needs a colocated engine"):
        VLLMBackend(config, sleep_between_rollouts=True)


# -- the real engine (GPU trainer environment only) ----------------------------------------


@pytest.mark.vllm
@pytest.mark.gpu
def test_real_vllm_generates_with_an_image() -> None:
    pytest.importorskip("vllm")
    model = os.environ.get("MMR1_VLLM_TEST_MODEL")
    if not model:
        pytest.skip("set MMR1_VLLM_TEST_MODEL to a local Qwen2.5-VL checkpoint directory")
    backend = VLLMBackend(VLLMBackendConfig(model=model, max_model_len=2048, enforce_eager=True))
    try:
        request = GenerationRequest(
            prompt="<image>\nWhat colour is this?", images=[Image.new("RGB", (56, 56), "red")]
        )
        (completion,) = backend.generate([request], SamplingParams(n=2, max_new_tokens=8, seed=0))
    finally:
        backend.close()
    assert len(completion.samples) == 2
    for sample in completion.samples:
        assert len(sample.token_ids) == len(sample.logprobs or []) > 0
        assert all(lp <= 0.0 for lp in sample.logprobs or [])
