"""The vqa module."""
