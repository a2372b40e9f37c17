"""Conditions on request attributes: what a route's ``match`` and a segment test."""

from __future__ import annotations

import re

from pydantic import Field, model_validator

from turnout.config.attributes import parse_attr
from turnout.config.base import Strict

__all__ = ["Match", "Scalar"]

Scalar = str | int | float | bool

_COMBINATORS = ("all", "any", "not_")
_OPERATORS = ("equals", "in_", "prefix", "regex", "exists", "gt", "gte", "lt", "lte")


class Match(Strict):
    """Either a combinator (``all``, ``any``, ``not``) or one condition on ``attr``."""

    all: list[Match] | None = None
    any: list[Match] | None = None
    not_: Match | None = Field(None, alias="not")
    attr: str | None = Field(None, description="attribute reference, e.g. header:x-tier")
    equals: Scalar | None = None
    in_: list[Scalar] | None = Field(None, alias="in")
    prefix: str | None = None
    regex: str | None = Field(None, description="Python regex, searched anywhere in the value")
    exists: bool | None = None
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None

    @model_validator(mode="after")
    def _shape(self) -> Match:
        combinators = [c for c in _COMBINATORS if getattr(self, c) is not None]
        operators = [o for o in _OPERATORS if getattr(self, o) is not None]
        shown = [n.rstrip("_") for n in combinators + operators]
        if self.attr is None:
            if len(combinators) != 1 or operators:
                raise ValueError(
                    "a match needs exactly one of all / any / not, or attr with one operator;"
                    f" got {shown or 'nothing'}"
                )
            return self
        if combinators or len(operators) != 1:
            raise ValueError(
                "a condition on attr takes exactly one operator of equals, in, prefix, regex,"
                f" exists, gt, gte, lt, lte; got {shown or 'none'}"
            )
        parse_attr(self.attr)
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except (re.error, OverflowError, RecursionError) as exc:
                raise ValueError(f"regex {self.regex!r} does not compile: {exc}") from None
        return self
