"""User-facing errors.

Every problem caused by what the user passed in (a file, a model name, a bit-width) is raised as
:class:`VitqError` (or, for data, ``calib.errors.DataError``). The CLI prints its message as one line
and exits with status 1 (130 after Ctrl-C); anything else is a bug in vitq and keeps its traceback.
"""
from calib.errors import DataError


class VitqError(Exception):
    """Bad input or an unsupported request, explained in one line."""


class NonFiniteError(VitqError):
    """A NaN or Inf where vitq needs a finite number: weights, calibration activations, scales."""


USER_ERRORS = (VitqError, DataError)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
