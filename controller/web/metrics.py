"""Prometheus metrics: the only importer of prometheus_client.

Each app has its own registry (two apps in one test process do not clash).
Requests are counted and timed per route template (`/api/users/{username}`,
not each user), a path no route matches is "(unmatched)", and a method
outside `METHODS` is "other", so the number of series stays bounded
whatever a client sends. Another area adds
its own figures to the same registry:

    from controller.web.metrics import Gauge
    online = Gauge("xaso_devices_online", "Devices online now", registry=metrics.registry)

where `metrics` is `request.app.state.metrics` (or passed in by `create_app`).
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Counter", "Gauge", "Histogram", "Metrics", "MetricsMiddleware", "metrics_router"]

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    """The method as a label: one of `METHODS`, else "other" (any token is a valid method)."""
    return method if method in METHODS else "other"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "xaso_http_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "xaso_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template",
            ["route", "method"],
            registry=self.registry,
        )

    def observe(self, route: str, method: str, status: int, elapsed_s: float) -> None:
        method = method_label(method)
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(elapsed_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def metrics_router(metrics: Metrics) -> APIRouter:
    router = APIRouter()

    @router.get(
        "/metrics",
        response_class=Response,
        summary="Prometheus metrics",
        responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
    )
    def scrape() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router


class MetricsMiddleware:
    """Each HTTP answer counted and timed by route template (plain ASGI: see
    controller/web/language.py for why not ``BaseHTTPMiddleware``)."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_seen(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_seen)
        finally:
            route = getattr(scope.get("route"), "path", None) or "(unmatched)"
            self.metrics.observe(route, scope["method"], status, time.perf_counter() - start)
