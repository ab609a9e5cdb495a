"""The radio: clips and their server, schedules and their calendar, broadcasts, bulletins."""
