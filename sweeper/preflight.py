"""Every check that runs before Ray starts, and :class:`BadInputError`, the error each one raises.

Filled in by the launch's order: the spec against the file system, the folders, the machine.
"""

from __future__ import annotations

import tempfile
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sweeper.paths import SweepPaths


class BadInputError(ValueError):
    """The data set, the folders or the machine cannot run the sweep; raised before Ray starts, naming the file,
    folder or field and the fix (README "Bad input")."""


def check_writable(paths: SweepPaths) -> None:
    """Raises BadInputError unless the results folder and the (local) sweep folder can be created and written."""
    for what, folder in (("results folder (--results)", paths.results),
                         ("sweep folder (--storage / the spec's storage, then name)", paths.sweep)):
        if folder == paths.sweep and paths.storage_uri:
            continue
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".sweeper-write-test-"):
                pass
        except OSError as err:
            raise BadInputError(f"{what} {folder} is not a writable folder ({err.strerror or err}); "
                                "pass a folder you can write to, or fix its permissions") from None
