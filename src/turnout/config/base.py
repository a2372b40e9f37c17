"""What every config model shares: strictness and the shape of names."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")]


class Strict(BaseModel):
    """Frozen, and unknown keys are errors: a typo is reported with its path rather
    than silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)
