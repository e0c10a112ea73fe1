"""mmr1: the library behind the MMR1 pipeline. Never imports Prefect."""

__version__ = "0.1.0"
