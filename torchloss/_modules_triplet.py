"""Staging file for the triplet family's modules (merged into modules.py later)."""

__all__: list[str] = []
