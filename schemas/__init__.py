"""Pydantic models: stage configs, records and catalog rows. Imports nothing of ours.

Every setting of the pipeline has exactly one home here; presets under
``deployments/presets/`` are data validated by these models.
"""
