"""The tasks: what each kind of model learns from, and how it is rebuilt for inference.

lm     the next character of one continuous text (truncated BPTT over streams)
lines  whole records, one per line, optionally given their class (one-to-many)
classify  the class of each record (many-to-one)
seq2seq  a target text for each source text: an encoder, attention and a decoder (many-to-many)
"""

from __future__ import annotations

from typing import Any

from torch import nn


def model_from_record(task: str, record: dict) -> tuple[nn.Module, Any]:
    """(untrained model of the record's shape, its vocabulary) for a checkpoint of `task`."""
    if task == "lm":
        from charlm.tasks.lm.model import model_from_record as build
    elif task == "lines":
        from charlm.tasks.lines.model import model_from_record as build
    elif task == "classify":
        from charlm.tasks.classify.model import model_from_record as build
    elif task == "seq2seq":
        from charlm.tasks.seq2seq.model import model_from_record as build
    else:
        raise ValueError(f"unknown task {task!r}")
    return build(record)
