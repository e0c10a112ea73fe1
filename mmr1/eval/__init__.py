"""Evaluation: benchmark adapters, scorers, leaderboards, and the quick policy probe."""
