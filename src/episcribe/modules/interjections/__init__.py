"""The interjections module."""
