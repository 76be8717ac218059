"""The one error calib raises for bad data input (missing path, undecodable image, empty split): its
message is one line, and ``vitq``'s command line prints it as it prints its own errors. calib imports
nothing from vitq, so it has an error type of its own."""


class DataError(ValueError):
    """Bad or missing data, explained in one line."""
