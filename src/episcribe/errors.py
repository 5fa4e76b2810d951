"""Errors a user can act on.

Boundary code (dataset reading, config, the model server) raises a ``UserError``
subclass whose message names the file, episode or key at fault and says what to do.
Entry points print that message as one line instead of a traceback.
"""


class UserError(Exception):
    """A problem with the user's input or setup, explained in the message."""


class DatasetError(UserError):
    """The dataset on disk does not match the LeRobot v3 format we can read."""


class ConfigError(UserError):
    """A configuration key has a value we cannot use."""


class ServerError(UserError):
    """The model server could not be started, reached or used."""


class HubError(UserError):
    """A Hugging Face Hub download or upload failed."""
