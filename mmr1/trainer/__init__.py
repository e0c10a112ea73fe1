"""What every training recipe (SFT, GRPO) shares: one job core.

- ``job``: the Accelerator, per-rank logging, the vision tower;
- ``checkpoint``: atomic, resumable checkpoints (model, optimizer, RNG, engine state);
- ``deepspeed``: DeepSpeed config "auto" entries, accumulation boundaries, step outcomes;
- ``launch``: the ``accelerate launch`` command line (one or several machines);
- ``nodes``: machines > 0 join machine 0's job;
- ``tracking``: metrics to an MLflow run by id; which stores a trainer can write.

Which recipe a job runs, and the entry point of a launched job, are in
:mod:`mmr1.jobs`, above the recipes.
"""
