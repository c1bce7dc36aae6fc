"""Staging file for the binary family's case-table entries (merged into cases.py later)."""

CASES: list = []
