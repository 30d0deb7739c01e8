"""``cyclegan serve``: resolve the model, open and warm up its sessions, run uvicorn.

Readiness turns true only after every session ran once. On SIGTERM/SIGINT the server
reports not-ready at once (so a load balancer stops sending), stops accepting
connections, lets requests in flight finish for up to ``serve.graceful_timeout_s`` and
drains the batch queues before exiting.

Connections go through :mod:`serving.connections` (header and body deadlines, a
connection cap).
"""
from __future__ import annotations

import logging
import os

from training.config import ServeConfig

log = logging.getLogger("cyclegan.serving")


def load_app(model_uri: str, cfg: ServeConfig, tracking_uri: str | None = None):
    """(app, ModelInfo): the sessions are loaded and warmed up here, before any port opens."""
    from .app import create_app
    from .model_store import resolve_model
    from .session import load_session

    info = resolve_model(model_uri, cfg.variant, tracking_uri)
    sessions = {direction: load_session(path, cfg.provider, cfg.threads, warm_up=True)
                for direction, path in info.files.items()}
    log.info("model resolved", extra={"fields": {
        **info.describe(), "provider": cfg.provider, "variant": cfg.variant,
        "files": {d: str(p) for d, p in info.files.items()},
        "providers_in_use": {d: s.providers_in_use for d, s in sessions.items()}}})
    return create_app(sessions, cfg, info.describe()), info


def serve(model_uri: str, cfg: ServeConfig, tracking_uri: str | None = None) -> None:
    import uvicorn

    from .connections import guarded_protocol
    from .logs import setup_logging

    setup_logging(os.environ.get("CYCLEGAN_LOG_LEVEL", "INFO"))
    app, _ = load_app(model_uri, cfg, tracking_uri)

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
