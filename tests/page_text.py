"""What a commune user must not read on a page: English code words and raw error text.

The browser tests check a page's main content with ``plain_vietnamese``: a
code word (a role, a clip's source, an outcome, a reason, a Python or JSON
value, the group "all" every speaker is in) means developer text reached an
official; so does a library's message, a traceback or a server path.
"""

from __future__ import annotations

import re

from playwright.sync_api import Page

CODE_WORDS = re.compile(  # a whole word: "kiosk-1" or "thon-all" is an id, not a code
    r"(?<![\w-])(schedule|pending|approv\w*|reject\w*|review\w*|play\w*|emergency|upload\w*|tts"
    r"|speaker|kiosk|broadcast\w*|relay|stream|device_down|quiet_hours|power_loss"
    r"|completed|missed|failed|preempted|normal|priority|None|null|undefined|NaN"
    r"|true|false|Traceback|all)(?![\w-])"
)
RAW_ERRORS = re.compile(
    r"Exception|Error\b|\berror\b|errno|pydantic|sqlalchemy|Field required|value_error"
    r"|Internal Server Error|Not Found|ffmpeg|ffprobe|espeak|/tmp/|/home/|/work/|--\w"
    r'|\{"|\\u[0-9a-f]{4}'
)


def plain_vietnamese(page: Page) -> str:
    """The page's main text, checked for code words and raw error text."""
    text = page.locator("main").inner_text()
    for pattern in (CODE_WORDS, RAW_ERRORS):
        found = pattern.search(text)
        assert found is None, f"{page.url}: {found.group(0)!r} in\n{text}"
    return text
