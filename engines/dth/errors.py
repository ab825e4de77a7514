"""Errors a user can act on. The command line prints their message as one line, without a traceback."""


class DthError(Exception):
    """A problem with input or environment, explained in words a user can act on."""


class SpecError(DthError):
    """A manifest or spec that does not describe a valid task."""


class AccessError(DthError):
    """A bucket, endpoint or credential that does not work."""
