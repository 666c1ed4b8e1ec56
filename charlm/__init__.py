"""charlm: character-level RNN/LSTM/GRU language models, trained from the command line."""

__version__ = "0.1.0"
