"""Prefect tasks: thin wrappers over ``mmr1`` functions (retries, logging, artifacts).

Tasks pass catalog refs (``name@version``) and paths, never large objects.
"""
