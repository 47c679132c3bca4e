"""The one storage seam: domain operations in, domain records out."""

from parcelhook.store.queue import DeliveryQueue
from parcelhook.store.store import Store
from parcelhook.store.tx import Tx

__all__ = ["DeliveryQueue", "Store", "Tx"]
