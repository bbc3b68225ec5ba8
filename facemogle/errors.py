"""The base of the library's errors that are not ValueErrors: a failure the user can act on (a run folder,
a missing package, another process), which the command line prints as one line, not a traceback."""


class FaceMoGLEError(Exception):
    """An error whose message says what to do; raised by library code, printed by `cli.main`."""
