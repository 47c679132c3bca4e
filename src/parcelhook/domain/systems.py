"""The integration systems and which events each may receive."""

from __future__ import annotations

from typing import Final

API: Final = "api"

# display name of every accepted `system`, in the order the panel lists them
SYSTEMS: Final[dict[str, str]] = {
    "api": "API integration",
    "amazon_v2": "Amazon v2",
    "bol": "Bol",
    "ccvshop_v2": "CCVshop v2",
    "ebay_v2": "Ebay v2",
    "epages": "Epages",
    "etsy_v2": "Etsy v2",
    "lightspeed_v2": "Lightspeed v2",
    "magento_v2": "Magento v2",
    "mijnwebwinkel": "Mijnwebwinkel",
    "prestashop": "Prestashop",
    "prestashop_v2": "Prestashop v2",
    "shopify": "Shopify",
    "shopify_v2": "Shopify v2",
    "woocommerce": "Woocommerce",
    "woocommerce_v2": "Woocommerce v2",
}

PARCEL_STATUS_CHANGED: Final = "parcel_status_changed"
INTEGRATION_CONNECTED: Final = "integration_connected"
INTEGRATION_UPDATED: Final = "integration_updated"
INTEGRATION_DELETED: Final = "integration_deleted"
REFUND_REQUESTED: Final = "refund_requested"
TEST_WEBHOOK: Final = "test_webhook"

ACTIONS: Final = (
    PARCEL_STATUS_CHANGED,
    INTEGRATION_CONNECTED,
    INTEGRATION_UPDATED,
    INTEGRATION_DELETED,
    REFUND_REQUESTED,
    TEST_WEBHOOK,
)


def is_known_system(system: str) -> bool:
    return system in SYSTEMS


def can_receive(system: str, action: str) -> bool:
    """Whether an integration of `system` is eligible for events of `action`.

    Shop systems only ever hear about parcel status changes (and the test button);
    API integrations receive everything.
    """
    if system == API:
        return action in ACTIONS
    return system in SYSTEMS and action in (PARCEL_STATUS_CHANGED, TEST_WEBHOOK)
