"""The one family of user-facing errors.

Every problem a user can fix (a bad file, a missing field, a wrong option value) is raised as a
:class:`GasdbError` that says *where* (file, field) and *how to fix it*. The CLI turns these into
``Error: ...`` messages with exit code 1; library callers can catch them by subclass.
"""

from __future__ import annotations

import os

__all__ = [
    "GasdbError",
    "WorkspaceError",
    "FormatError",
    "VideoError",
    "CalibrationError",
    "SubmissionError",
    "ModelError",
]


class GasdbError(Exception):
    """A problem in the user's data or request.

    Parameters
    ----------
    message : str
        What is wrong, in one sentence.
    file : str or os.PathLike, optional
        The file (or folder) the problem is in.
    field : str, optional
        The field, column, key or JSON path inside ``file``.
    fix : str, optional
        What the user should do about it.

    Examples
    --------
    >>> str(GasdbError("polygon has 2 points (needs >= 3)", file="a.json",
    ...                field="shapes[2].points", fix="delete or redraw the shape"))
    'a.json: shapes[2].points: polygon has 2 points (needs >= 3) -> delete or redraw the shape'
    """

    def __init__(self, message: str, *, file=None, field: str | None = None, fix: str | None = None):
        self.message = message
        self.file = os.fspath(file) if file is not None else None
        self.field = field
        self.fix = fix
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ": ".join(p for p in (self.file, self.field) if p)
        text = f"{where}: {self.message}" if where else self.message
        if self.fix:
            text += f" -> {self.fix}"
        return text

    def to_dict(self) -> dict:
        """The error as a JSON-ready dict (for ``--json`` reports)."""
        return {"file": self.file, "field": self.field, "message": self.message, "fix": self.fix}


class WorkspaceError(GasdbError):
    """The workspace (index, layout, settings) is missing or inconsistent."""


class FormatError(GasdbError):
    """A file does not follow its format (image, LabelMe JSON, CSV, release layout, ...)."""


class VideoError(GasdbError):
    """A recording cannot be opened, decoded or paired."""


class CalibrationError(GasdbError):
    """Registration did not produce a trustworthy transform."""


class SubmissionError(GasdbError):
    """A scoring submission is malformed or unsafe."""


class ModelError(GasdbError):
    """A benchmark model, checkpoint or configuration is wrong."""
