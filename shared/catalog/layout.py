"""How a blob's path says which product, colour and kind of picture it is.

A layout is one or more patterns separated by ``|``, tried in order, e.g. the default
``{item_id}/{color_id}/{name}|{item_id}/{name}``, or flat files ``{item_id}_{color_id}_{sort}.{ext}``.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from ..errors import ConfigError

# Wallie's image types. 99 = unknown.
TYPE_FRONT, TYPE_BACK, TYPE_ALTERNATE, TYPE_ZOOM, TYPE_LIFESTYLE, TYPE_PACKAGING = 0, 1, 2, 3, 4, 5
TYPE_UNKNOWN = 99
VALID_TYPES = frozenset({0, 1, 2, 3, 4, 5, 99})
TYPE_NAMES = {0: "front", 1: "back", 2: "alternate view", 3: "zoom", 4: "lifestyle", 5: "packaging",
              99: "image"}
TYPE_WORDS = {
    "front": 0,
    "back": 1,
    "alternate": 2, "alt": 2, "side": 2, "detail": 2,
    "zoom": 3,
    "lifestyle": 4, "model": 4, "mood": 4,
    "packaging": 5, "package": 5,
}

# What each placeholder may match. Ids stop at "/" so a pattern never spans folders by accident, and an id
# is never "." or "..": web clients remove such path segments, and they name nothing.
_ID = r"(?!\.\.?(?:/|$))[^/]+?"
_PLACEHOLDERS = {
    "item_id": _ID,
    "color_id": _ID,
    "type": _ID,
    "sort": r"[0-9]+",
    "name": r"[^/]+",
    "ext": r"[A-Za-z0-9]+",
}
_TOKEN = re.compile(r"\{([^{}]*)\}")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
_WORD_SPLIT = re.compile(r"[^a-z0-9]+|(?<=[a-z])(?=[0-9])|(?<=[0-9])(?=[a-z])")


@dataclass(frozen=True, slots=True)
class PathFields:
    """What a path told us. Missing fields are None."""

    item_id: str
    color_id: str | None = None
    type: str | None = None
    sort: str | None = None


class PathLayout:
    """A compiled IMAGE_PATH_PATTERN."""

    def __init__(self, pattern: str):
        self.pattern = pattern
        self._regexes = [self._compile(p) for p in pattern.split("|")]
        self._separator = self._item_prefix_separator()

    @staticmethod
    def _compile(pattern: str) -> re.Pattern[str]:
        stray = _TOKEN.sub("", pattern)
        if "{" in stray or "}" in stray:
            brace = "an unclosed '{'" if "{" in stray else "a '}' without its '{'"
            raise ConfigError(f"IMAGE_PATH_PATTERN={pattern!r} is invalid: it has {brace}; expected placeholders "
                              "written {like_this}, e.g. {item_id}/{color_id}/{name}")
        if "{item_id}" not in pattern:
            raise ConfigError(f"IMAGE_PATH_PATTERN={pattern!r} is invalid: every pattern needs {{item_id}}")
        parts, pos, seen = [], 0, set()
        for m in _TOKEN.finditer(pattern):
            name = m.group(1)
            if name not in _PLACEHOLDERS:
                raise ConfigError(f"IMAGE_PATH_PATTERN={pattern!r} is invalid: unknown placeholder "
                                  f"{{{name}}}; expected {', '.join('{' + p + '}' for p in _PLACEHOLDERS)}")
            if name in seen:
                raise ConfigError(f"IMAGE_PATH_PATTERN={pattern!r} is invalid: {{{name}}} appears twice")
            seen.add(name)
            parts.append(re.escape(pattern[pos:m.start()]))
            parts.append(f"(?P<{name}>{_PLACEHOLDERS[name]})")
            pos = m.end()
        parts.append(re.escape(pattern[pos:]))
        return re.compile("".join(parts))

    @property
    def item_prefix_separator(self) -> str | None:
        """The literal text after a leading {item_id}, when the layout starts with it in every pattern.

        Lets a one-product sync list only ``<item_id><separator>`` instead of the whole container.
        """
        return self._separator

    def _item_prefix_separator(self) -> str | None:
        seps = set()
        for p in self.pattern.split("|"):
            if not p.startswith("{item_id}"):
                return None
            rest = p[len("{item_id}"):]
            lit = rest.split("{", 1)[0]
            if not lit:
                return None
            seps.add(lit)
        return seps.pop() if len(seps) == 1 else None

    def match(self, blob_name: str) -> PathFields | None:
        for regex in self._regexes:
            m = regex.fullmatch(blob_name)
            if m:
                g = m.groupdict()
                return PathFields(item_id=g["item_id"], color_id=g.get("color_id"),
                                  type=g.get("type"), sort=g.get("sort"))
        return None


@functools.lru_cache(maxsize=16384)
def type_from_words(text: str) -> int:
    """The first word in ``text`` that names a kind of picture, left to right; 99 when none does."""
    text = _CAMEL.sub(" ", text)  # "ModelShot" reads as "Model Shot"
    for word in _WORD_SPLIT.split(text.lower()):
        if word in TYPE_WORDS:
            return TYPE_WORDS[word]
    return TYPE_UNKNOWN


class InvalidValue(ValueError):
    """A value that is not valid for its field: ``expected`` (the same for every blob) says what is."""

    def __init__(self, field: str, value: str, expected: str):
        super().__init__(f"{field} {value!r} is not {expected}")
        self.field, self.value, self.expected = field, value, expected


TYPE_EXPECTED = f"a Wallie type: a number (0-5, 99) or a kind word ({', '.join(sorted(TYPE_WORDS))})"
SORT_EXPECTED = "a whole number from 0 to 1000000"


def parse_type(raw: str) -> int:
    """A type given explicitly (metadata or a {type} path field): a Wallie number or a kind word."""
    value = raw.strip().lower()
    digits = value.lstrip("-")
    if digits.isascii() and digits.isdigit() and len(digits) <= 9:
        number = int(value)
        if number in VALID_TYPES:
            return number
        raise InvalidValue("type", raw, TYPE_EXPECTED)
    if value in TYPE_WORDS:
        return TYPE_WORDS[value]
    raise InvalidValue("type", raw, TYPE_EXPECTED)


def parse_sort(raw: str, field: str = "sort") -> int:
    value = raw.strip()
    if not (value.isascii() and value.isdigit() and len(value) <= 7) or not (0 <= int(value) <= 1_000_000):
        raise InvalidValue(field, raw, SORT_EXPECTED)
    return int(value)
