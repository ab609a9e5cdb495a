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
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["Counter", "Gauge", "Histogram", "Metrics", "metrics_router"]

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

    async def middleware(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            template = getattr(route, "path", None) or "(unmatched)"
            elapsed = time.perf_counter() - start
            method = method_label(request.method)
            self.requests.labels(template, method, str(status)).inc()
            self.latency.labels(template, method).observe(elapsed)

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
