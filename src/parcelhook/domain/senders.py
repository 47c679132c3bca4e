"""Sender addresses: where an account ships from (and what its labels print as "From")."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from parcelhook.domain.countries import COUNTRIES
from parcelhook.domain.errors import InvalidInput
from parcelhook.domain.text import check_text

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True, slots=True)
class SenderAddressFields:
    """What a merchant types for a sender address."""

    company_name: str = ""
    contact_name: str = ""
    email: str = ""
    telephone: str = ""
    street: str = ""
    house_number: str = ""
    postal_box: str = ""
    postal_code: str = ""
    city: str = ""
    country: str = "NL"
    country_state: str = ""
    vat_number: str = ""
    eori_number: str = ""
    label: str = ""


@dataclass(frozen=True, slots=True)
class SenderAddress:
    id: int
    account_id: int
    address: SenderAddressFields
    is_default: bool = False


FIELD_NAMES = tuple(f.name for f in fields(SenderAddressFields))
_REQUIRED = ("contact_name", "street", "postal_code", "city", "country")


def parse_sender_address(data: Mapping[str, Any]) -> SenderAddressFields:
    """Validate a sender address as typed; every error names its field."""
    values: dict[str, str] = {}
    for name in FIELD_NAMES:
        value = data.get(name, "")
        if not isinstance(value, str):
            raise InvalidInput(f"{name} must be text.", field=name)
        if len(value) > 255:
            raise InvalidInput(f"{name} must be at most 255 characters.", field=name)
        values[name] = check_text(value, name).strip()
    for name in _REQUIRED:
        if not values[name]:
            raise InvalidInput(f"{name} is required.", field=name, code="required")
    values["country"] = values["country"].upper()
    if values["country"] not in COUNTRIES:
        raise InvalidInput(
            "country must be an ISO 3166-1 alpha-2 code such as NL.", field="country"
        )
    if values["email"] and not _EMAIL.match(values["email"]):
        raise InvalidInput("email is not a valid e-mail address.", field="email")
    return SenderAddressFields(**values)


def sender_address_object(a: SenderAddress) -> dict[str, Any]:
    """A sender address as Sendcloud's `GET /user/addresses/sender` shows it."""
    f = a.address
    return {
        "id": a.id,
        "company_name": f.company_name,
        "contact_name": f.contact_name,
        "email": f.email,
        "telephone": f.telephone,
        "street": f.street,
        "house_number": f.house_number,
        "postal_box": f.postal_box,
        "postal_code": f.postal_code,
        "city": f.city,
        "country": f.country,
        "country_state": f.country_state or None,
        "vat_number": f.vat_number,
        "eori_number": f.eori_number,
        "brand_id": None,
        "label": f.label,
        "signature_full_name": f.contact_name,
        "signature_initials": "".join(w[0] for w in f.contact_name.split() if w)[:5],
        "is_default": a.is_default,
    }
