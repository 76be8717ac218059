"""User-facing errors.

Every problem caused by what the user passed in (a file, a model name, a bit-width) is raised as
:class:`VitqError` (or, for data, ``calib.errors.DataError``). The CLI prints its message as one line
and exits non-zero; anything else is a bug in vitq and keeps its traceback.
"""
from calib.errors import DataError


class VitqError(Exception):
    """Bad input or an unsupported request, explained in one line."""


USER_ERRORS = (VitqError, DataError)
