"""Why a message from the wire was refused.

Every refusal carries a machine reason (sent in the ack and counted in
telemetry) and a human detail; an edge never crashes on one.
"""

from __future__ import annotations

from enum import StrEnum


class RefusalReason(StrEnum):
    TOO_LARGE = "too_large"
    NOT_JSON = "not_json"
    BAD_ENVELOPE = "bad_envelope"
    UNKNOWN_VERSION = "unknown_version"
    UNKNOWN_TYPE = "unknown_type"
    UNKNOWN_KID = "unknown_kid"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    FROM_FUTURE = "from_future"
    REPLAY = "replay"
    ROLLBACK = "rollback"
    BAD_BODY = "bad_body"
    WRONG_TOPIC = "wrong_topic"
    WRONG_TARGET = "wrong_target"
    UNSUPPORTED = "unsupported"
    QUIET_HOURS = "quiet_hours"
    HANDLER_FAILED = "handler_failed"


class ProtocolError(Exception):
    """Base of every error raised by the protocol package."""


class Refusal(ProtocolError):
    """A message that the receiver will not act on."""

    def __init__(self, reason: RefusalReason, detail: str, cmd_id: str | None = None) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
        self.cmd_id = cmd_id
