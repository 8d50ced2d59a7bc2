"""argparse value types shared by the command lines: numbers that must be
finite and in range, refused at parse time (exit 2) rather than after the
work. Standard library only."""
import argparse
import math


class OneLineParser(argparse.ArgumentParser):
    """An argument error is one line on stderr (``error: ...``), exit 2."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message} (--help for the usage)\n")


def _number(text, kind):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"not a number: '{text}'") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, not '{text}'")
    return value


def positive_float(text):
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def non_negative_float(text):
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def positive_int(text):
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def non_negative_int(text):
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value
