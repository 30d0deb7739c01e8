"""What ``cyclegan serve`` and ``cyclegan translate --model`` run.

The ``cyclegan`` command (``training/commands/``) parses the arguments and the params file,
then hands over here by module path with the raw ``serve:`` section, so the server needs
nothing from the training package (the serve image has no torch). Every ``ServingError`` ends
as one line on stderr and exit status 2, like the training package's errors.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

from .config import load_serve_config
from .errors import ServingError


def _one_line_errors(command: str, body: Callable[[], int]) -> int:
    try:
        return body()
    except ServingError as e:
        print(f"cyclegan {command}: error: {e}", file=sys.stderr)
        return 2


def serve(model_uri: str, section: dict[str, Any] | None, tracking_uri: str | None, source: str = "params") -> int:
    """Resolve, load and serve the model until SIGTERM/SIGINT."""
    def body() -> int:
        from .server import serve as run_server

        run_server(model_uri, load_serve_config(section, source), tracking_uri)
        return 0

    return _one_line_errors("serve", body)


def translate(model_uri: str, direction: str, input: str | Path, output: str | Path, section: dict[str, Any] | None,
              tracking_uri: str | None, progress: bool = True, source: str = "params", quality: bool = False) -> int:
    """Translate local files with an exported generator; prints how many were written."""
    def body() -> int:
        from .translate import translate_model

        written = translate_model(model_uri, direction, input, output, progress,
                                  load_serve_config(section, source), tracking_uri, quality)
        print(f"translated {len(written)} image(s) into {output}")
        return 0

    return _one_line_errors("translate", body)
