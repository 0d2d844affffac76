"""Writing a file all at once, with the mode it must have: the one way the clinic writes the files it
keeps for itself (broker accounts and definitions, the demo's monitor tokens, the development JWKS).

A temporary file in the same directory is written, given its mode, then renamed over the path: a
reader sees the old file or the new one, never half of one, and the mode holds even when the file was
there before with a looser one (os.open's mode applies only to a file it creates).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Readable by its owner only: passwords, their hashes, device tokens.
PRIVATE = 0o600


def write_atomically(path: str | os.PathLike, text: str, mode: int = PRIVATE) -> None:
    """Replace `path` with `text` (UTF-8), leaving it with `mode`; its directory is made when missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        # mkstemp made it 0600: no other user can open it before the chmod below loosens it, if asked to.
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
