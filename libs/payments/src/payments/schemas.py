"""Request and response bodies of the payments routes (strict: unknown fields are refused).

Money is an integer amount in minor units plus an ISO 4217 code, in and out; never a float.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from api_kit import StrictId, StrictInt8
from payments.tables import PriceInterval

MAX_AMOUNT_MINOR = 10**12

# strict: JSON 10 only; "10", 10.0 and true are refused rather than coerced.
AmountMinor = Annotated[StrictInt8, Field(ge=0, le=MAX_AMOUNT_MINOR)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Id = StrictId
ProductCode = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")
]
Name = Annotated[str, StringConstraints(min_length=1, max_length=255)]
Description = Annotated[str, StringConstraints(max_length=5000)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ProductIn(Strict):
    code: ProductCode
    name: Name
    description: Description | None = None


class PriceIn(Strict):
    amount_minor: AmountMinor
    currency: Currency
    interval: PriceInterval


class PriceOut(BaseModel):
    id: int
    product_id: int
    amount_minor: int
    currency: str
    interval: PriceInterval
    is_active: bool


class ProductOut(BaseModel):
    id: int
    code: str
    name: str
    description: str | None
    is_active: bool
    prices: list[PriceOut]


class SubscribeIn(Strict):
    price_id: Id


class CancelIn(Strict):
    # false: end it now; true: keep it until the paid period ends.
    at_period_end: Annotated[bool, Field(strict=True)] = True


class SubscriptionOut(BaseModel):
    id: int
    price_id: int
    product_id: int
    status: str
    amount_minor: int
    currency: str
    interval: PriceInterval
    current_period_start: datetime
    current_period_end: datetime
    cancel_at_period_end: bool
    canceled_at: datetime | None
    created_at: datetime
