"""Staging file for the binary family's modules (merged into modules.py later)."""

__all__: list[str] = []
