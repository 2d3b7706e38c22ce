"""Errors shown to people: one line each."""


def one_line(err: BaseException, limit: int | None = None) -> str:
    """The error's text on one line (cut to `limit` characters if given), or its type's name."""
    return " ".join(str(err).split())[:limit] or type(err).__name__
