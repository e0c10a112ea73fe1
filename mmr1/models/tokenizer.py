"""The tiny model's tokenizer: a byte-level BPE with Qwen2.5-VL's special tokens.

Only ``assets/tokenizer.json`` and ``assets/chat_template.jinja`` ship with the
package; the ``transformers`` wrapper is built in code by :func:`load_tokenizer`
(a ``tokenizer_config.json`` saved by one transformers major does not load in
another, the raw ``tokenizers`` file does).

Design choices:

* Pre-tokenisation is Qwen's: a regex split (contractions, letter runs, single
  digits, punctuation runs, newlines, spaces) followed by byte-level mapping,
  so every string encodes and decodes losslessly. Unlike Qwen there is no NFC
  normaliser: a tokenizer that never rewrites its input round-trips any text.
* ``<|...|>`` control tokens are *special* (dropped by ``skip_special_tokens``).
  ``<think>``, ``</think>``, ``<answer>``, ``</answer>`` are *added, non-special*
  tokens: single ids, but kept in decoded text because the format reward reads
  them.

Rebuild the shipped file with ``python -m mmr1.data.tokenizer_corpus`` (the
corpus adds the synthetic tasks' texts, which this module does not know of).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

ASSETS_DIR = Path(__file__).parent / "assets"
TOKENIZER_FILE = ASSETS_DIR / "tokenizer.json"
CHAT_TEMPLATE_FILE = ASSETS_DIR / "chat_template.jinja"

# Qwen2 pre-tokenizer split: contractions, letters (with one leading non-letter),
# single digits, punctuation runs, newline runs, whitespace.
QWEN_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen2.5-VL's control tokens, in Qwen's id order (ids here start at 0).
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# Reasoning-format tags: one id each, but visible in decoded text.
FORMAT_TOKENS = ["<think>", "</think>", "<answer>", "</answer>"]

EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"
IMAGE_TOKEN = "<|image_pad|>"
VIDEO_TOKEN = "<|video_pad|>"
VISION_START_TOKEN = "<|vision_start|>"
VISION_END_TOKEN = "<|vision_end|>"
VISION_PAD_TOKEN = "<|vision_pad|>"

_GENERIC_TEXT = """\
The quick brown fox jumps over the lazy dog. A picture shows several shapes on a plain background.
There are three red circles, two blue squares and one green triangle in the image.
What is the colour of the largest shape? Count the objects and give the total number.
Which option is correct? Answer with the letter of the correct choice.
Let x be a real number such that 2x + 3 = 11. Then 2x = 8, so x = 4.
The area of a rectangle with width 5 and height 7 is 5 * 7 = 35 square units.
The sum of the interior angles of a triangle is 180 degrees.
If a = 3 and b = 4, the hypotenuse is sqrt(a^2 + b^2) = sqrt(9 + 16) = 5.
The probability of rolling an even number with a fair die is 3/6 = 1/2 = 0.5.
Solve for y: y^2 - 5y + 6 = 0 factors as (y - 2)(y - 3) = 0, so y = 2 or y = 3.
The mean of 4, 8, 15, 16, 23 and 42 is 108 / 6 = 18.
A circle of radius r has circumference 2\\pi r and area \\pi r^2.
\\frac{1}{2} + \\frac{1}{3} = \\frac{5}{6}. The answer is \\boxed{\\frac{5}{6}}.
First, I look at the image. Next, I read the question carefully. Then I check my reasoning.
Wait, let me reconsider: the shape on the left is smaller than the one on the right.
Therefore the final answer is \\boxed{B}. So the answer is \\boxed{12}.
<think>There are 3 circles and 2 squares, so 5 shapes.</think> <answer>\\boxed{5}</answer>
<think>The biggest shape is a blue square.</think><answer>\\boxed{A}</answer>
Options: (A) red (B) green (C) blue (D) yellow (E) purple (F) orange (G) black (H) white
Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 25 30 50 100 1000
left right top bottom above below inside outside larger smaller bigger biggest smallest
circle square triangle rectangle star hexagon pentagon line point angle edge vertex
"""


def builtin_corpus() -> list[str]:
    """Prompt texts and generic math/English, always available."""
    from mmr1 import prompts

    texts = [prompts.TRAIN_INSTRUCTION, prompts.EVAL_INSTRUCTION, *_GENERIC_TEXT.splitlines()]
    # The chat frame around every prompt, so its words are single tokens.
    texts += ["system\nYou are a helpful assistant.\n", "user\n", "assistant\n"] * 4
    texts.append(prompts.training_prompt("How many circles are there?", ["1", "2", "3", "4"]))
    texts.append(prompts.evaluation_prompt("What colour is the big shape?", ["red", "blue"]))
    return texts


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 1024) -> Tokenizer:
    """Train a byte-level BPE on ``corpus`` with Qwen's pre-tokenizer and control tokens.

    ``vocab_size`` counts the 256 byte symbols and the special tokens; the four
    format tags are added on top. Ids: specials first (``<|endoftext|>`` = 0),
    then bytes and merges, then the format tags. Training is deterministic for a
    given corpus.
    """
    tokenizer = Tokenizer(models.BPE(fuse_unk=False, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )

    # Tokens that always get their own id, and the request-level "<image>" placeholder
    # (replaced by vision tokens before tokenisation), are cut out of the training text
    # so no merges are spent on them.
    reserved = re.compile(
        "|".join(re.escape(t) for t in [*SPECIAL_TOKENS, *FORMAT_TOKENS, "<image>"])
    )

    def batches() -> Iterator[list[str]]:
        batch: list[str] = []
        for text in corpus:
            batch.extend(piece for piece in reserved.split(text) if piece)
            if len(batch) >= 256:
                yield batch
                batch = []
        if batch:
            yield batch

    tokenizer.train_from_iterator(batches(), trainer=trainer)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in FORMAT_TOKENS])
    return tokenizer


def load_tokenizer(path: str | Path | None = None) -> PreTrainedTokenizerFast:
    """The transformers wrapper around a ``tokenizer.json`` and its chat template.

    ``path`` is a ``tokenizer.json`` file or a directory holding one (and
    optionally ``chat_template.jinja``); None means the shipped assets. The
    shipped template is used when the directory has none.
    """
    path = Path(path) if path is not None else TOKENIZER_FILE
    tokenizer_file = path / "tokenizer.json" if path.is_dir() else path
    if not tokenizer_file.is_file():
        raise FileNotFoundError(f"no tokenizer.json at {tokenizer_file}")
    template_file = tokenizer_file.parent / "chat_template.jinja"
    if not template_file.is_file():
        template_file = CHAT_TEMPLATE_FILE
    backend = Tokenizer.from_file(str(tokenizer_file))
    # A tokenizer.json saved after use carries the padding/truncation state of its last
    # call; drop it, or a checkpoint reloaded from a save would save a different config
    # (and hash differently) than one loaded from the shipped asset.
    backend.no_padding()
    backend.no_truncation()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        padding_side="left",
        model_input_names=["input_ids", "attention_mask"],
        chat_template=template_file.read_text(encoding="utf-8"),
        clean_up_tokenization_spaces=False,
    )
