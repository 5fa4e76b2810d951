"""The plan module."""
