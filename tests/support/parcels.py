"""A parcel body with only the fields `POST /api/v2/parcels` requires (add integration_id)."""

from __future__ import annotations

PARCEL = {
    "name": "Jan Jansen",
    "address": "Stadhuisplein",
    "house_number": "10",
    "city": "Eindhoven",
    "postal_code": "5611 EM",
    "country": "NL",
}
