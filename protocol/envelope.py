"""The signed envelope: build it (controller) and open it (edge).

``open_envelope`` does every check that needs no memory of the past; the
stateful ones (replay, rollback) belong to the receiver, which holds the
state. The order of checks is fixed so that a refusal names the first fault.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from plumbing.validation import convert, problems
from protocol.commands import DeviceOrGroupId, Strict, body_model, dump_body, is_document
from protocol.errors import ProtocolError, Refusal, RefusalReason
from protocol.signing import Keyring, SigningKey, b64url, canonical_json, unb64url
from protocol.topics import INBOUND_LEAVES, TopicRef

ENVELOPE_VERSION = 1
MAX_PAYLOAD_BYTES = 256 * 1024
MAX_FUTURE_SKEW_MS = 5 * 60 * 1000
DEFAULT_COMMAND_TTL_MS = 60 * 1000
_COMMAND_ID = r"^[A-Za-z0-9_.:-]{1,64}\Z"
CommandId = Annotated[str, Meta(min_length=1, max_length=64, pattern=_COMMAND_ID)]
_COMMAND_ID_RE = re.compile(_COMMAND_ID)


class Target(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Whom a message is for, inside what is signed: the topic it must arrive on,
    less the root (``{"scope": "dev", "id": "loa-1", "leaf": "cmd"}``)."""

    scope: Literal["dev", "grp"]
    id: DeviceOrGroupId
    leaf: Literal["cmd", "config", "schedule", "bookings"]

    @classmethod
    def of(cls, to: TopicRef | str) -> Target:
        ref = TopicRef.of(to) if isinstance(to, str) else to
        if ref.leaf not in INBOUND_LEAVES:
            raise ProtocolError(f"the controller signs nothing for a {ref.leaf!r} topic")
        return msgspec.convert({"scope": ref.scope, "id": ref.id, "leaf": ref.leaf}, cls)

    def matches(self, ref: TopicRef) -> bool:
        return (self.scope, self.id, self.leaf) == (ref.scope, ref.id, ref.leaf)

    def __str__(self) -> str:
        return f"{self.scope}/{self.id}/{self.leaf}"


class Envelope(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    v: int
    id: CommandId
    type: Annotated[str, Meta(min_length=1, max_length=64)]
    ts: Annotated[int, Meta(ge=0, le=2**53)]
    exp: Annotated[int, Meta(ge=0, le=2**53)] | None = None
    to: Target
    body: dict[str, Any]
    kid: Annotated[str, Meta(min_length=1, max_length=64)]
    sig: Annotated[str, Meta(min_length=1, max_length=200)]

    @property
    def version(self) -> int:
        """The document version (documents only)."""
        return int(self.body["version"])


class Opened(msgspec.Struct, frozen=True):
    """A verified envelope and its validated body."""

    envelope: Envelope
    body: Strict


def seal(
    msg_type: str,
    body: Strict | dict[str, Any],
    key: SigningKey,
    now_ms: int,
    *,
    to: TopicRef | str,
    ttl_ms: int | None = DEFAULT_COMMAND_TTL_MS,
    cmd_id: str | None = None,
) -> bytes:
    """Sign a command or document for one topic and return the payload to publish there.

    ``to`` is that topic (or its parsed ``TopicRef``): the edge refuses the
    payload on any other topic (``wrong_target``).
    """
    model = body_model(msg_type)
    if model is None:
        raise ValueError(f"unknown message type {msg_type!r}")
    # checked here whatever built it: nothing the edge would refuse is ever signed
    body = convert(body if isinstance(body, dict) else msgspec.to_builtins(body), model)
    doc: dict[str, Any] = {
        "v": ENVELOPE_VERSION,
        "id": cmd_id or uuid.uuid4().hex,
        "type": msg_type,
        "ts": now_ms,
        "to": msgspec.to_builtins(Target.of(to)),
        "body": dump_body(body),
        "kid": key.kid,
    }
    if not is_document(msg_type) and ttl_ms is not None:
        doc["exp"] = now_ms + ttl_ms
    doc["sig"] = b64url(key.sign(canonical_json(doc)))
    return canonical_json(doc)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _loads(payload: str) -> Any:
    return json.loads(payload, parse_constant=_reject_constant)


def open_envelope(
    payload: bytes, keyring: Keyring, now_ms: int, *, legacy_to: TopicRef | None = None
) -> Opened:
    """Verify a payload from the wire; raise ``Refusal`` naming the first fault.

    Nothing else escapes: an unforeseen error is a ``bad_envelope`` refusal too,
    with the id when one can be read.

    ``legacy_to`` is for the edge's restore of its own stored documents only: one
    stored before the envelope carried ``to`` was verified on arrival on the topic
    it is stored under, so it is taken as addressed to that topic (``legacy_to``).
    Its signature (over what was signed: no ``to``), version, type, body and time
    rules are checked as for any other. A message from the wire never gets this:
    without ``to`` it is ``bad_envelope``.
    """
    doc: dict[str, Any] | None = None
    try:
        doc, env = _parse(payload, legacy_to)
        model = body_model(env.type)
        if model is None:
            raise Refusal(RefusalReason.UNKNOWN_TYPE, f"type {env.type!r}", env.id)
        _check_signature(doc, env, keyring)
        _check_time(env, now_ms)
        try:
            body = msgspec.convert(env.body, model)
        except msgspec.ValidationError:
            raise Refusal(RefusalReason.BAD_BODY, _first_error(env.body, model), env.id) from None
        except Exception as exc:  # a check that raised something msgspec does not wrap
            raise Refusal(RefusalReason.BAD_BODY, _describe(exc), env.id) from None
        return Opened(envelope=env, body=body)
    except Refusal:
        raise
    except Exception as exc:
        raise Refusal(RefusalReason.BAD_ENVELOPE, _describe(exc), readable_id(doc)) from None


def readable_id(doc: object) -> str | None:
    """The envelope's id if it is one (so that an ack can name it), else None."""
    cmd_id = doc.get("id") if isinstance(doc, dict) else None
    return cmd_id if isinstance(cmd_id, str) and _COMMAND_ID_RE.fullmatch(cmd_id) else None


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")[:500]


def _parse(payload: bytes, legacy_to: TopicRef | None) -> tuple[dict[str, Any], Envelope]:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise Refusal(RefusalReason.TOO_LARGE, f"{len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
    try:
        # strict UTF-8 only: json.loads(bytes) would also guess UTF-16 and UTF-32, and
        # Python's decoder refuses encoded surrogates (CESU-8) and overlong forms
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Refusal(
            RefusalReason.NOT_JSON,
            f"payload is not UTF-8: {exc.reason} at byte {exc.start}",
        ) from None
    if text.startswith("\ufeff"):
        raise Refusal(RefusalReason.NOT_JSON, "payload starts with a byte order mark")
    try:
        doc = _loads(text)
    except (ValueError, RecursionError) as exc:
        raise Refusal(RefusalReason.NOT_JSON, f"payload is not JSON: {exc}") from None
    try:
        canonical_json(doc)  # a "\ud800" escape decodes to a lone surrogate: not Unicode text
    except UnicodeEncodeError:
        raise Refusal(
            RefusalReason.NOT_JSON, "payload has a lone UTF-16 surrogate", readable_id(doc)
        ) from None
    except (ValueError, RecursionError) as exc:
        raise Refusal(RefusalReason.NOT_JSON, f"payload is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise Refusal(RefusalReason.BAD_ENVELOPE, "payload is not a JSON object")
    cmd_id = readable_id(doc)
    if doc.get("v") != ENVELOPE_VERSION:
        raise Refusal(RefusalReason.UNKNOWN_VERSION, f"envelope v={doc.get('v')!r}", cmd_id)
    fields = doc
    if legacy_to is not None and "to" not in doc:
        # signed before the envelope named its target: the signature is checked on
        # ``doc`` as it is; only the parsed envelope gets the topic it was stored under
        fields = {**doc, "to": msgspec.to_builtins(Target.of(legacy_to))}
    try:
        return doc, msgspec.convert(fields, Envelope)
    except msgspec.ValidationError:
        raise Refusal(RefusalReason.BAD_ENVELOPE, _first_error(fields, Envelope), cmd_id) from None


def _check_signature(doc: dict[str, Any], env: Envelope, keyring: Keyring) -> None:
    key = keyring.get(env.kid)
    if key is None:
        raise Refusal(RefusalReason.UNKNOWN_KID, f"key id {env.kid!r} is not trusted", env.id)
    try:
        signature = unb64url(env.sig)
    except ProtocolError:
        raise Refusal(RefusalReason.BAD_SIGNATURE, "signature is not base64url", env.id) from None
    signed = {k: v for k, v in doc.items() if k != "sig"}
    if len(signature) != 64 or not key.verify(signature, canonical_json(signed)):
        raise Refusal(RefusalReason.BAD_SIGNATURE, "signature does not verify", env.id)


def _check_time(env: Envelope, now_ms: int) -> None:
    if is_document(env.type):
        if env.exp is not None:
            raise Refusal(RefusalReason.BAD_ENVELOPE, "documents carry no 'exp'", env.id)
    elif env.exp is None:
        raise Refusal(RefusalReason.BAD_ENVELOPE, "commands must carry 'exp'", env.id)
    elif env.exp <= now_ms:
        raise Refusal(RefusalReason.EXPIRED, f"expired {now_ms - env.exp} ms ago", env.id)
    if env.ts > now_ms + MAX_FUTURE_SKEW_MS:
        raise Refusal(
            RefusalReason.FROM_FUTURE, f"ts is {env.ts - now_ms} ms ahead of this clock", env.id
        )


def _first_error(data: Any, model: type[Any]) -> str:
    return str(problems(data, model)[0])
