"""The web: routes (pages and the JSON API), templates, static files, charts and metrics."""
