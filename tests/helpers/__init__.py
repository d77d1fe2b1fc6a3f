"""Shared helpers for lamina's tests."""
