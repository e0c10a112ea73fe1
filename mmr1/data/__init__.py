"""Datasets: the synthetic multimodal task generator and parquet files on disk."""
