"""Staging file for the probabilistic family's modules (merged into modules.py later)."""

__all__: list[str] = []
