"""The fleet: ingest of what devices send, alerts, roll-ups and retention, page queries, reports."""
