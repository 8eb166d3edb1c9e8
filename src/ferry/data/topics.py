"""The topics of the bundled tweets, by keyword (../shared/DRIFT.md): the corpus is several topic collections
glued together, and a model trained without one of them, then served it, shows a real drift.

First match wins, case-insensitive, on the raw text; 99.6% agreement with the CSV's source blocks. A text that
matches no pattern has no topic (None).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_PATTERNS = {
    "airline": r"@(united|southwestair|jetblue|usairways|americanair|virginamerica)\b"
               r"|\b(airline|airlines|flight|flights|flightled|cancelled flight)\b",
    "coachella": r"coachella",
    "deflategate": r"deflate|inflategate|ballghazi|\bbrady\b|belichick|belicheat|patriots|\bpats\b|\bnfl\b"
                   r"|super ?bowl|\bsb ?49\b|seahawks|footballs?\b",
    "driverless": r"driverless|driver-less|self[- ]?driving|autonomous|automous|google car|robot car|robocar",
    "claritin": r"claritin|allerg|zyrtec|sudafed|benadryl|antihistamine",
    "apple": r"\bapple|\baapl\b|iphone|\bipad|\bios ?[0-9]|\bimac\b|macbook|itunes|\bicloud\b|tim cook"
             r"|steve ?jobs|\bsiri\b|apple ?watch",
}
TOPICS: dict[str, re.Pattern[str]] = {name: re.compile(pattern, re.IGNORECASE) for name, pattern in _PATTERNS.items()}


def topic_of(text: str) -> str | None:
    """The first topic whose pattern matches `text`, in the order of TOPICS; None when none does."""
    for name, pattern in TOPICS.items():
        if pattern.search(text):
            return name
    return None


def check_topics(names: Iterable[str]) -> tuple[str, ...]:
    """`names` as a tuple, each a known topic; an unknown one is a ValueError naming the known ones."""
    names = tuple(names)
    unknown = [name for name in names if name not in TOPICS]
    if unknown:
        raise ValueError(f"unknown topic {unknown[0]!r}; the topics are {', '.join(TOPICS)}")
    return names
