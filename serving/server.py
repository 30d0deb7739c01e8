"""``cyclegan serve``: resolve the model, open and warm up its sessions, run uvicorn.

Readiness turns true only after every session ran once. On SIGTERM/SIGINT the server
reports not-ready at once (so a load balancer stops sending), stops accepting
connections, lets requests in flight finish for up to ``serve.graceful_timeout_s`` and
drains the batch queues before exiting.

Connections go through :mod:`serving.connections` (header and body deadlines, a
connection cap). A ``models:/`` download lives in a private temporary folder that is
removed on every way out: a normal exit, SIGTERM, SIGINT, and a start that fails. atexit
alone does not do it: uvicorn re-raises the signal it handled once it has shut down, and
a SIGTERM under its default disposition ends the process without running atexit.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal

from .config import ServeConfig

log = logging.getLogger("cyclegan.serving")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class _Stopped(BaseException):
    """A stop signal that arrived outside uvicorn's own handling (while the model loads, or
    re-raised by uvicorn after its graceful shutdown), turned into an exception so that
    the cleanup runs. A BaseException, so that no ``except Exception`` swallows it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _signals_as_exceptions():
    def stop(signum, frame):
        raise _Stopped(signum)

    previous = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def load_app(model_uri: str, cfg: ServeConfig, tracking_uri: str | None = None):
    """(app, ModelInfo): the sessions are loaded and warmed up here, before any port opens."""
    from .app import create_app
    from .model_store import resolve_model
    from .session import load_session

    info = resolve_model(model_uri, cfg.variant, tracking_uri)
    try:
        sessions = {direction: load_session(path, cfg.provider, cfg.threads, warm_up=True, settings=cfg)
                    for direction, path in info.files.items()}
        log.info("model resolved", extra={"fields": {
            **info.describe(), "provider": cfg.provider, "variant": cfg.variant,
            "files": {d: str(p) for d, p in info.files.items()},
            "providers_in_use": {d: s.providers_in_use for d, s in sessions.items()},
            "provider_options": {d: dict(s.provider_options) for d, s in sessions.items()},
            "io_binding": {d: s.io_binding for d, s in sessions.items()}}})
        return create_app(sessions, cfg, info.describe()), info
    except BaseException:  # the caller never gets the info to clean up with
        info.cleanup()
        raise


def serve(model_uri: str, cfg: ServeConfig, tracking_uri: str | None = None) -> None:
    from .logs import setup_logging

    setup_logging(os.environ.get("CYCLEGAN_LOG_LEVEL", "INFO"))
    info = None
    try:
        with _signals_as_exceptions():
            app, info = load_app(model_uri, cfg, tracking_uri)
            _run_uvicorn(app, cfg)
        return
    except _Stopped as stopped:
        signum = stopped.signum
    finally:  # every way out: a normal end, a signal, a failed start (uvicorn's sys.exit), an error
        if info is not None:
            info.cleanup()
    if signum == signal.SIGINT:
        raise KeyboardInterrupt  # the CLI reports "interrupted", exit status 130
    # end as the signal's default would have, so a process manager reads "terminated by SIGTERM"
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)


def _run_uvicorn(app, cfg: ServeConfig) -> None:
    import uvicorn

    from .connections import guarded_protocol

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            if app.state.ready:
                log.info("shutting down", extra={"fields": {"signal": int(sig),
                                                            "grace_s": cfg.graceful_timeout_s}})
            app.state.ready = False  # readiness fails from now on; requests in flight finish
            super().handle_exit(sig, frame)

    cut = app.state.metrics.connections_cut
    protocol = guarded_protocol(cfg.header_timeout_s, cfg.body_timeout_s, cfg.max_connections,
                                on_cut=lambda reason: cut.labels(reason).inc())
    config = uvicorn.Config(app, host=cfg.host, port=cfg.port, http=protocol, log_config=None, access_log=False,
                            timeout_graceful_shutdown=cfg.graceful_timeout_s, lifespan="on",
                            server_header=False)
    log.info("listening", extra={"fields": {"url": f"http://{cfg.host}:{cfg.port}"}})
    Server(config).run()
