"""Study names: what a name may hold, and the folder name a name becomes on disk.

A study's name is a key in every store (Optuna's `study_name` column: 512 characters, and
PostgreSQL refuses a NUL in text) and the name of folders (checkpoints, reports, exports),
whose names a file system bounds at 255 bytes and where `/` and `..` would lead elsewhere.
New names are checked (`problem`); a name already stored, whatever it holds, still becomes
a safe folder (`folder_name`).

    >>> from lrsweep import names
    >>> names.folder_name("ex1-cpu"), names.folder_name("../../escape")
    ('ex1-cpu', 'escape-efbf103bce')
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

# Characters, far below the stores' 512 and a file name's 255 bytes: a safe name (ASCII) is
# its own folder name, and `NAME-best` (rerun's default) still fits beside it.
MAX_LENGTH = 128
# Control and invisible formatting characters, line and paragraph separators: they break
# one-line messages and make names that look alike but differ.
_REFUSED = {"Cc", "Cf", "Cs", "Zl", "Zp"}
_SAFE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_FOLDER_PREFIX = 60  # characters of the name kept in front of the hash of an unsafe one


def problem(name: str, limit: int = MAX_LENGTH) -> str | None:
    """Why `name` cannot name a new study (one phrase), or None when it can; with `limit`,
    for other names the same characters are refused (a [[run]]'s label)."""
    if len(name) > limit:
        return f"{len(name)} characters; at most {limit}"
    for char in name:
        if unicodedata.category(char) in _REFUSED:
            code = f"U+{ord(char):04X}"
            label = unicodedata.name(char, "a control character")
            return f"holds {code} ({label.lower()}); use printable characters"
    return None


def folder_name(name: str) -> str:
    """The folder a study's files go in: the name itself when it is made of letters, digits,
    `.`, `_` and `-` (not `.` or `-` first) and short enough; else its safe characters (others
    become `_`, at most 60) and a hash of the whole name, so two names never share a folder
    and no name leaves its parent folder or overflows a file name."""
    if _SAFE.fullmatch(name) and len(name) <= MAX_LENGTH:
        return name
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name).strip("._-")[:_FOLDER_PREFIX]
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{safe}-{digest}" if safe else f"study-{digest}"
