"""The SFT recipe: the long-CoT cold start with assistant-only loss.

Modules, one job each:

- ``recipe``: the recipe (:class:`SFTRecipe`, :func:`run_sft`): explicit
  ``_setup_model`` / ``_setup_data`` / ``_setup_optimizer`` steps, the loop,
  evaluation, checkpoints;
- ``data``: records -> chat-templated tokens with assistant-only labels, samples
  encoded when drawn (too-long ones dropped and counted), right-padding collator;
- ``rows``: random access to the rows of a parquet SFT dataset, nothing loaded;
- ``stream``: the recipe's data (hashed split, loaders, the zero-weight filler);
- ``sampling``: which samples each process trains on at each step;
- ``schedule``: warmup + cosine / linear / constant learning rates;
- ``loss``: token cross-entropy, computed in chunks of the output head;
- ``evaluation``: held-out loss and greedy-answer accuracy.

What SFT shares with GRPO (accelerator, checkpoints, DeepSpeed, launch) is in
:mod:`mmr1.trainer`; the job entry point is :mod:`mmr1.jobs`.
"""
