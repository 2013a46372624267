"""Errors that reach the user as one actionable line (the CLI prints ``error: <message>`` and exits 2)."""


class SepoError(Exception):
    """A problem with the user's input, files or configuration. The message says what is wrong and how
    to fix it, on one line; the CLI shows it without a traceback."""


class ConfigError(SepoError):
    """An invalid configuration field (unknown name, wrong type, impossible value)."""


class DataError(SepoError):
    """Invalid input data: bad characters, wrong lengths, empty files, wrong vocabulary."""


class CheckpointError(SepoError):
    """A missing, corrupt or mismatched checkpoint."""


class RewardError(SepoError):
    """A reward function raised or returned NaN / inf / a wrongly shaped value."""


class TrainingError(SepoError):
    """Training cannot go on (e.g. every update of several iterations was NaN/inf); the saved state is intact."""
