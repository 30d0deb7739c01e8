"""Prometheus metrics of one app, in its own registry (several apps may live in one process)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self, max_batch_size: int):
        self.registry = CollectorRegistry()
        self.requests = Counter("cyclegan_requests", "HTTP requests by route, model and status code",
                                ["method", "route", "model", "code"], registry=self.registry)
        self.latency = Histogram("cyclegan_request_latency_seconds", "HTTP request latency by route",
                                 ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        batch_buckets = sorted({1, 2, 4, 8, 16, 32, 64, max_batch_size})
        self.batch_size = Histogram("cyclegan_batch_size", "images per model call (dynamic batching)", ["model"],
                                    buckets=[b for b in batch_buckets if b <= max_batch_size], registry=self.registry)
        self.inference = Histogram("cyclegan_inference_seconds", "model call duration", ["model"],
                                   buckets=LATENCY_BUCKETS, registry=self.registry)
        self.connections_cut = Counter("cyclegan_connections_cut", "connections the server cut: header_timeout, "
                                       "body_timeout (serve.*_timeout_s), over_capacity (serve.max_connections)",
                                       ["reason"], registry=self.registry)
        self.ready = Gauge("cyclegan_model_ready", "1 when the model is loaded and warmed up", ["model"],
                           registry=self.registry)
