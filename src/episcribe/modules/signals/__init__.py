"""The signals module."""
