"""Evaluation: benchmark adapters, official scorers, resumable runs and the leaderboard."""
