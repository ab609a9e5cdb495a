"""IP radio: clips, schedules, the player and its sinks, the amplifier relay."""
