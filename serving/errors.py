"""The one exception type serving turns into a one-line error: a 4xx over HTTP, or
``cyclegan serve: error: ...`` and exit status 2 on the command line.

The message must name the offending file, field or setting (``serve.provider: ...``).
"""


class ServingError(Exception):
    """Bad input to the server or its command: a missing model, a bad setting, a bad image."""
