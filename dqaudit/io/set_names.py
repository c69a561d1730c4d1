"""Label sets from the class names each sample's source gives (a manifest's cells, a FiftyOne
``Classifications``): the one place both set readers turn names into (N, C) sets."""

from __future__ import annotations

import numpy as np

from dqaudit.dataset import SET_SEP
from dqaudit.errors import InputError


def check_set_classes(names: list[str]) -> None:
    """Refuse class names holding ``SET_SEP`` (a set's text would be ambiguous)."""
    joined = [c for c in names if SET_SEP in c]
    if joined:
        raise InputError(f"class {joined[0]!r} holds {SET_SEP!r}, which separates the classes of "
                         "a set in dqaudit's tables; rename the class")


def sets_of_names(parsed: list[set[str]], known: list[str] | None, *, where, fix: str
                  ) -> tuple[list[str], np.ndarray]:
    """(the classes, sorted; (N, C) bool sets) of ``parsed``, one set of normalised class names
    per sample: the classes ``known`` when given (a set naming another is an InputError naming
    its place ``where(i)`` and what to ``fix``), else those the sets name."""
    if known is not None:
        for i, s in enumerate(parsed):
            if s - set(known):
                raise InputError(f"{where(i)} names {sorted(s - set(known))[0]!r}, not one of the "
                                 f"classes given ({', '.join(known[:8])}); fix {fix} or the "
                                 "--classes list")
    names = sorted(known if known is not None else set().union(*parsed))
    check_set_classes(names)
    index = {c: i for i, c in enumerate(names)}
    rows = np.zeros((len(parsed), len(names)), dtype=bool)
    for r, s in enumerate(parsed):
        rows[r, [index[c] for c in s]] = True
    return names, rows
