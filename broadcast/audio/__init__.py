"""The radio's audio layer: clip preparation and text to speech, decoding, the
player with its preemption, the sinks (ALSA, WAV files) and the amplifier relay.

The queue's spoken calls use it too; it knows nothing of schedules or hosts.
"""
