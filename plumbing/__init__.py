"""Plumbing that every program shares: the MQTT client's setup, reconnect
backoff, the durable SQLite opener, the TOML loader with friendly errors, and
the clock. A leaf: it imports nothing of ours, so the agent and the controller
can both use it without knowing each other.
"""
