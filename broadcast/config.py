"""The radio's section of an agent's configuration: ``[speaker]``.

The feature owns its schema; the agent's configuration (edge/config.py)
composes it with the host's own sections.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from msgspec import Meta

from broadcast.audio.lateness import CALL_MAX_AGE_MS
from broadcast.audio.relay import RelayPolicy
from plumbing.config_files import Section
from protocol.commands import DeviceOrGroupId as DeviceId


def _fallback_clip(value: Path | None) -> Path | None:
    if value is not None and not value.is_file():
        raise ValueError(f"no file {value}: copy the clip onto the device, or leave it out")
    return value


def _calls_from(value: list[str]) -> list[str]:
    twice = sorted({k for k in value if value.count(k) > 1})
    if twice:
        raise ValueError(f"list each kiosk once; repeated: {', '.join(twice)}")
    return value


class SpeakerSection(Section, frozen=True, kw_only=True):
    """The loudspeaker cluster: where sound goes, the amplifier relay, the clip cache."""

    sink: Literal["alsa", "wav"] = "alsa"
    alsa_device: str = "default"
    wav_dir: Path | None = None  # the "wav" sink's recordings; default: <state dir>/played
    amp_pin: Annotated[int, Meta(ge=0, le=53)] | None = None  # BCM number; None: no relay
    amp_active_high: bool = True
    amp_preroll_ms: Annotated[int, Meta(ge=0, le=30_000)] = 1500
    amp_hold_s: Annotated[float, Meta(ge=0, le=3600)] = 10.0
    cache_budget_mb: Annotated[int, Meta(ge=10)] = 2048
    prefetch_days: Annotated[float, Meta(gt=0, le=31)] = 3.0
    resume_preempted: bool = True  # a cut bulletin plays its rest after what cut in
    # the waiting spare decoder (an idle ffmpeg, more memory than the agent) goes after
    # this long with nothing to play, and is started again when something is queued
    # (seconds ahead of a scheduled item, within an emergency's lead)
    spare_decoder_keep_s: Annotated[float, Meta(ge=0, le=86_400)] = 120.0
    # MP3 and Opus clips through mpg123 and opusdec when installed: a few MiB each, and
    # no spare ffmpeg waits (false: ffmpeg for every clip, with its spare)
    native_decoders: bool = True
    # the hall speaker of these kiosks: plays their calls (`xaso device add --calls-from`)
    calls_from: list[DeviceId] = []
    # a call is said late rather than never (the kiosk's outbox after a network drop, other
    # audio first), until it is this old; older, the counter has moved on: it is reported
    # as missed (broadcast.audio.lateness.call_fate)
    call_max_age_s: Annotated[float, Meta(ge=1, le=600)] = CALL_MAX_AGE_MS / 1000
    # a relayed stream (broadcast.audio.relay) reconnects for as long as it is scheduled,
    # the waits spread up to this; connected but below the level this long is dead air,
    # in which the fallback clip plays (none: the relay stops)
    relay_retry_max_s: Annotated[float, Meta(ge=1, le=300)] = 10.0
    relay_dead_air_s: Annotated[float, Meta(ge=1, le=600)] = 15.0
    relay_dead_air_dbfs: Annotated[float, Meta(ge=-90, le=-20)] = -50.0
    relay_fallback_clip: Path | None = None
    field_checks = {"relay_fallback_clip": _fallback_clip, "calls_from": _calls_from}

    def relay_policy(self) -> RelayPolicy:
        return RelayPolicy(
            retry_cap_s=self.relay_retry_max_s,
            dead_air_s=self.relay_dead_air_s,
            dead_air_dbfs=self.relay_dead_air_dbfs,
            fallback_clip=self.relay_fallback_clip,
        )
