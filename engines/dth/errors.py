"""Errors a user can act on. The command line prints their message as one line, without a traceback."""


class DthError(Exception):
    """A problem with input or environment, explained in words a user can act on."""


class SpecError(DthError):
    """A manifest or spec that does not describe a valid task. `problems` holds each problem as (field path,
    message) when there are several to place beside their fields (the web console's forms)."""

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class AccessError(DthError):
    """A bucket, endpoint or credential that does not work."""
