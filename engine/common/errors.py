"""User-facing errors.

Anything a user or a network peer controls (files, audio, presets, weights) that is wrong raises
`InputError` with a one-line message that says what is wrong and what to do. Front ends print the
message and exit non-zero instead of showing a traceback.
"""


class InputError(ValueError):
    """A bad input from a user or peer; `str(err)` is a one-line, actionable message."""
