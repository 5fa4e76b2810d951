"""The annotation pipeline around the modules."""
