"""The shipping-method catalogue: what each method carries, where to, and at what price.

A realistic default (the methods parcels already know); an operator may load another one
from a JSON file of the same shape (`load_catalogue`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from parcelhook.domain.countries import COUNTRIES
from parcelhook.domain.errors import InvalidInput
from parcelhook.domain.parcels import SHIPMENT_METHODS


@dataclass(frozen=True, slots=True)
class ShippingMethod:
    id: int
    name: str
    carrier: str
    # kilograms, inclusive; Sendcloud shows them as strings with three decimals
    min_weight: Decimal
    max_weight: Decimal
    # destination ISO-2 code → price in EUR
    prices: Mapping[str, Decimal] = field(default_factory=dict)
    service_point_input: str = "none"
    lead_time_hours: int | None = 24

    def fits(self, weight: Decimal, country: str) -> str | None:
        """Why a parcel of `weight` kg to `country` cannot go by this method, or None."""
        if not self.min_weight <= weight <= self.max_weight:
            return (
                f"{self.name} carries {self.min_weight:.3f} to {self.max_weight:.3f} kg, "
                f"not {weight:.3f} kg."
            )
        if country not in self.prices:
            return f"{self.name} does not ship to {country}."
        return None

    def price_to(self, country: str) -> Decimal:
        return self.prices.get(country, Decimal(0))


_EU_HOME = ("NL", "BE", "DE", "FR", "LU", "AT", "DK", "ES", "IT", "PL")


def _prices(base: str, step: str, countries: tuple[str, ...]) -> dict[str, Decimal]:
    # the first country is home; each further one costs a little more
    return {c: Decimal(base) + Decimal(step) * min(i, 1) for i, c in enumerate(countries)}


DEFAULT_CATALOGUE: tuple[ShippingMethod, ...] = (
    ShippingMethod(
        8, "Unstamped letter", "sendcloud", Decimal("0.001"), Decimal("2.001"),
        {c: Decimal("0.00") for c in _EU_HOME},
    ),
    ShippingMethod(
        1343, "PostNL Standard 0-23kg", "postnl", Decimal("0.001"), Decimal("23.001"),
        _prices("6.95", "6.00", ("NL", "BE", "DE", "FR", "LU")),
    ),
    ShippingMethod(
        1315, "DHL Parcel Connect 0-2kg", "dhl", Decimal("0.001"), Decimal("2.001"),
        _prices("5.45", "3.50", ("DE", "NL", "BE", "AT", "FR")),
        service_point_input="required",
    ),
    ShippingMethod(
        1460, "DPD Home 0-31.5kg", "dpd", Decimal("0.001"), Decimal("31.501"),
        _prices("7.25", "5.25", ("NL", "BE", "DE", "LU", "FR", "AT")),
        lead_time_hours=48,
    ),
    ShippingMethod(
        2281, "UPS Standard 0-70kg", "ups", Decimal("0.001"), Decimal("70.001"),
        _prices("9.80", "8.20", (*_EU_HOME, "GB", "CH", "NO", "SE", "FI", "IE", "PT", "US")),
        lead_time_hours=72,
    ),
)  # fmt: skip

CARRIER_NAMES: Mapping[str, str] = {
    "sendcloud": "Sendcloud",
    "postnl": "PostNL",
    "dhl": "DHL",
    "dpd": "DPD",
    "ups": "UPS",
}


def carrier_name(code: str) -> str:
    return CARRIER_NAMES.get(code, code.upper())


def load_catalogue(text: str) -> tuple[ShippingMethod, ...]:
    """A catalogue from JSON: a list of `{id, name, carrier, min_weight, max_weight, prices}`."""
    try:
        raw = json.loads(text)
        methods = tuple(_method(m) for m in raw)
    except (ValueError, TypeError, KeyError, InvalidOperation) as exc:
        raise InvalidInput(f"The shipping-method catalogue is not valid: {exc}.") from None
    if not methods or len({m.id for m in methods}) != len(methods):
        raise InvalidInput("The shipping-method catalogue needs methods with distinct ids.")
    unknown = sorted(m.id for m in methods if m.id not in SHIPMENT_METHODS)
    if unknown:
        # parcels name their method by id: the catalogue prices and limits the known ones
        known = ", ".join(str(i) for i in SHIPMENT_METHODS)
        raise InvalidInput(f"Shipping method {unknown[0]} is not one of {known}.")
    return methods


def _method(m: Any) -> ShippingMethod:
    prices = {str(c).upper(): Decimal(str(p)) for c, p in dict(m["prices"]).items()}
    unknown = sorted(set(prices) - set(COUNTRIES))
    if unknown:
        raise ValueError(f"unknown country {unknown[0]}")
    return ShippingMethod(
        id=int(m["id"]),
        name=str(m["name"]),
        carrier=str(m["carrier"]),
        min_weight=Decimal(str(m["min_weight"])),
        max_weight=Decimal(str(m["max_weight"])),
        prices=prices,
        service_point_input=str(m.get("service_point_input", "none")),
        lead_time_hours=m.get("lead_time_hours", 24),
    )
