"""User-facing exceptions.

Every error a person can cause (a bad flag, a missing file, a damaged
checkpoint) is raised as a `CharlmError` whose message is one line written for
people: what is wrong and, where there is one, the way out. The CLI prints the
message and maps the class to an exit code; the library never prints or exits.
"""

# What charlm says when Ctrl-C ends it (the launcher says it before the CLI has loaded).
INTERRUPTED = "\ncharlm: interrupted\n"


class CharlmError(Exception):
    """Base class: a problem the user can fix. Exit status 1."""

    exit_code = 1


class ConfigError(CharlmError):
    """A config file or flag value that is unknown or out of range."""


class CorpusError(CharlmError):
    """A corpus file that cannot be read or is unsuitable for training."""


class CheckpointError(CharlmError):
    """A checkpoint that is missing, damaged or of an unknown format."""


class VocabularyError(CharlmError):
    """Text with characters the model's vocabulary does not contain."""


class RunDirectoryError(CharlmError):
    """An output directory that would be overwritten, or cannot be written."""


class DeviceError(CharlmError):
    """A requested device that this machine does not have."""
