"""The parcel statuses of Sendcloud's v2 numbering."""

from __future__ import annotations

from enum import IntEnum


class ParcelStatus(IntEnum):
    """A parcel status id; its `message` is the text Sendcloud shows."""

    ANNOUNCED = 1
    EN_ROUTE_TO_SORTING_CENTER = 3
    DELIVERY_DELAYED = 4
    SORTED = 5
    NOT_SORTED = 6
    BEING_SORTED = 7
    DELIVERY_ATTEMPT_FAILED = 8
    DELIVERED = 11
    AWAITING_CUSTOMER_PICKUP = 12
    ANNOUNCED_NOT_COLLECTED = 13
    ERROR_COLLECTING = 15
    SHIPMENT_PICKED_UP_BY_DRIVER = 22
    UNABLE_TO_DELIVER = 80
    PARCEL_EN_ROUTE = 91
    DRIVER_EN_ROUTE = 92
    SHIPMENT_COLLECTED_BY_CUSTOMER = 93
    PARCEL_CANCELLATION_FAILED = 94
    NO_LABEL = 999
    READY_TO_SEND = 1000
    BEING_ANNOUNCED = 1001
    ANNOUNCEMENT_FAILED = 1002
    UNKNOWN_STATUS = 1337
    CANCELLED_UPSTREAM = 1998
    CANCELLATION_REQUESTED = 1999
    CANCELLED = 2000
    SUBMITTING_CANCELLATION_REQUEST = 2001
    AT_CUSTOMS = 62989
    AT_SORTING_CENTRE = 62990
    REFUSED_BY_RECIPIENT = 62991
    RETURNED_TO_SENDER = 62992
    DELIVERY_METHOD_CHANGED = 62993
    DELIVERY_DATE_CHANGED = 62994
    DELIVERY_ADDRESS_CHANGED = 62995
    EXCEPTION = 62996
    ADDRESS_INVALID = 62997

    @property
    def message(self) -> str:
        return STATUS_MESSAGES[self.value]


STATUS_MESSAGES: dict[int, str] = {
    1: "Announced",
    3: "En route to sorting center",
    4: "Delivery delayed",
    5: "Sorted",
    6: "Not sorted",
    7: "Being sorted",
    8: "Delivery attempt failed",
    11: "Delivered",
    12: "Awaiting customer pickup",
    13: "Announced: not collected",
    15: "Error collecting",
    22: "Shipment picked up by driver",
    80: "Unable to deliver",
    91: "Parcel en route",
    92: "Driver en route",
    93: "Shipment collected by customer",
    94: "Parcel cancellation failed.",
    999: "No label",
    1000: "Ready to send",
    1001: "Being announced",
    1002: "Announcement failed",
    1337: "Unknown status - check carrier track & trace page for more insights",
    1998: "Cancelled upstream",
    1999: "Cancellation requested",
    2000: "Cancelled",
    2001: "Submitting cancellation request",
    62989: "At Customs",
    62990: "At sorting centre",
    62991: "Refused by recipient",
    62992: "Returned to sender",
    62993: "Delivery method changed",
    62994: "Delivery date changed",
    62995: "Delivery address changed",
    62996: "Exception",
    62997: "Address invalid",
}


def is_known_status(status_id: int) -> bool:
    """True for the status ids of the v2 numbering (the 35 SPEC §3 lists)."""
    return status_id in STATUS_MESSAGES
