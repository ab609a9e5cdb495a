"""The site: signing keys, device registry and configurations, broker files, signed documents."""
