"""Staging file for the pair family's modules (merged into modules.py later)."""

__all__: list[str] = []
