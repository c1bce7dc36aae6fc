"""Staging file for the probabilistic family's public functions (merged into functional.py later)."""

__all__: list[str] = []
