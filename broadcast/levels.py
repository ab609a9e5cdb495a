"""The three levels of Circular 39/2020/TT-BTTTT on the contract's priorities 0-9.

0 is background; 1-3 normal (thông thường), 4-6 priority (ưu tiên), 7-9
emergency (khẩn cấp). A higher priority preempts a lower one; an equal one
queues behind it; only an emergency ignores quiet hours.
"""

from __future__ import annotations

from enum import IntEnum


class Level(IntEnum):
    BACKGROUND = 0
    NORMAL = 1
    PRIORITY = 2
    EMERGENCY = 3


# the priority a broadcaster gets when choosing a level rather than a number
DEFAULT_PRIORITY = {Level.BACKGROUND: 0, Level.NORMAL: 2, Level.PRIORITY: 5, Level.EMERGENCY: 9}
LEVEL_NAMES_VI = {
    Level.BACKGROUND: "nền",
    Level.NORMAL: "thông thường",
    Level.PRIORITY: "ưu tiên",
    Level.EMERGENCY: "khẩn cấp",
}


def level_of(priority: int) -> Level:
    if not 0 <= priority <= 9:
        raise ValueError(f"priority {priority} is outside 0-9")
    if priority == 0:
        return Level.BACKGROUND
    if priority <= 3:
        return Level.NORMAL
    if priority <= 6:
        return Level.PRIORITY
    return Level.EMERGENCY


def preempts(new_priority: int, playing_priority: int) -> bool:
    """Strictly higher interrupts; equal queues behind."""
    return new_priority > playing_priority


def ignores_quiet_hours(priority: int) -> bool:
    return level_of(priority) is Level.EMERGENCY
