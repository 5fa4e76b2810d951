"""The plan_update module."""
