"""What a view looks at: a run's model, and a text as its token ids (a file, a string, or the validation split).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# The one place the report imports checkpoint loading.
from charlm.runs import load_checkpoint as load_model  # noqa: F401  (path | None -> Checkpoint)
from charlm.errors import CorpusError
from charlm.tasks.lm.evaluate import split_ids
from charlm.text.encoding import encode_files
from charlm.text.sources import SourceFile


def text_ids(checkpoint, path: Path | None = None, text: str | None = None, skip_unknown: bool = False,
             max_tokens: int | None = None, cache_dir: Path | None = None) -> tuple[np.ndarray, str]:
    """(ids, a description of where they came from), at most max_tokens of them, from the start.

    Without a path or a text: the run's validation split, rebuilt from its
    recorded corpus as `charlm eval` rebuilds it (an error if the corpus is gone).
    """
    vocab = checkpoint.vocab
    if text is not None:
        ids, _ = vocab.encode(text, skip_unknown=skip_unknown)
        ids, where = ids.numpy(), "the given text"
    elif path is not None:
        if not path.exists():
            raise CorpusError(f"text file {path} does not exist; check the path")
        if path.is_dir():
            raise CorpusError(f"{path} is a directory; give the path of a text file")
        ids, _ = encode_files([SourceFile(path, named=True)], vocab, checkpoint.config.normalize_newlines,
                              skip_unknown)
        where = str(path)
    else:
        ids = split_ids(checkpoint, "val", cache_dir)
        where = f"the validation split of {checkpoint.record.get('corpus', {}).get('name', 'its corpus')}"
    ids = np.asarray(ids[:max_tokens] if max_tokens else ids, dtype=np.int64)
    if len(ids) < 2:
        raise CorpusError(f"{where} has fewer than two characters the model knows; give a longer text")
    return ids, where
