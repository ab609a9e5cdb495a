"""The wire contract between the controller and the edge agents (docs/protocol.md)."""
