"""charlm: character-level RNN/LSTM/GRU models, trained from the command line or from Python.

    import charlm
    run = charlm.load("checkpoints/tinyshakespeare")
    print(run.generate("ROMEO:", length=300, temperature=0.8, seed=1))

The public names are in __all__; everything else is internal and may change.
"""

__version__ = "0.1.0"

__all__ = ["load", "train", "Run", "Score", "RunStarted", "StepProgress", "Evaluated", "RunFinished",
           "CharlmError", "CheckpointError", "ConfigError", "CorpusError", "DeviceError", "RunDirectoryError",
           "VocabularyError", "__version__"]

_FROM_API = ("load", "train", "Run", "Score")
_EVENTS = ("RunStarted", "StepProgress", "Evaluated", "RunFinished")


def __getattr__(name: str):
    # Imported on first use: `import charlm` stays cheap (no torch) so the console script can import
    # torch itself with Ctrl-C held back (launch.py).
    if name in _FROM_API:
        from charlm import api

        return getattr(api, name)
    if name in _EVENTS:
        from charlm.engine import events

        return getattr(events, name)
    if name in __all__:
        from charlm import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'charlm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
