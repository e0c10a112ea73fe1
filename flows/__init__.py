"""Prefect flows: compose tasks, choose presets, nothing else."""
