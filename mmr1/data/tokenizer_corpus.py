"""The corpus and build of the tiny model's shipped tokenizer.

Run ``python -m mmr1.data.tokenizer_corpus`` to rebuild it. The corpus is the
built-in prompt and generic texts (``mmr1.models.tokenizer``) plus the synthetic
tasks' questions and answers (``mmr1.data.synthetic``), so the words the demo
uses are single tokens. Training is deterministic for a given corpus; the
result replaces ``mmr1/models/assets/tokenizer.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mmr1.data.synthetic import text_corpus
from mmr1.models.tokenizer import TOKENIZER_FILE, builtin_corpus, train_tokenizer


def corpus() -> list[str]:
    """The shipped tokenizer's training texts."""
    return builtin_corpus() + list(text_corpus())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=TOKENIZER_FILE, help="tokenizer.json to write")
    parser.add_argument("--vocab-size", type=int, default=1024)
    args = parser.parse_args(argv)
    texts = corpus()
    tokenizer = train_tokenizer(texts, vocab_size=args.vocab_size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(args.out), pretty=False)
    print(f"wrote {args.out}: {tokenizer.get_vocab_size()} tokens from {len(texts)} texts")


if __name__ == "__main__":
    main()
