"""Counts in messages: "1 file", "2 files"."""


def plural(count: int, noun: str, plural_noun: str = "") -> str:
    return f"{count} {noun if count == 1 else plural_noun or noun + 's'}"
