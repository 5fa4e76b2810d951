"""The researcher's command."""
