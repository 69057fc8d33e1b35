"""User-facing errors: each prints as one `error:` line and makes the command exit with code 2."""


class CamelidError(Exception):
    """A problem the user can fix; the message names the offending file or value and what to do."""


class ConfigError(CamelidError):
    """A bad model or job configuration value."""


class CheckpointError(CamelidError):
    """A missing, truncated or malformed checkpoint file."""


class TokenizerError(CamelidError):
    """A missing or malformed tokenizer file, or bad tokenizer training input."""


class InputError(CamelidError):
    """Bad input to a command: a prompt that does not fit, an unknown option value."""
