"""Staging file for the multi-class margin family's modules (merged into modules.py later)."""

__all__: list[str] = []
