"""The one exception type the CLI turns into a one-line error and a non-zero exit."""


class UserError(Exception):
    """Bad input from the user: a missing file, an unknown key, a corrupt checkpoint.

    The message must name the offending file, key or field; the CLI prints it on one line
    as ``cyclegan: error: <message>`` and exits with status 2.
    """
