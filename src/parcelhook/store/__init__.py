"""The one storage seam: domain operations in, domain records out."""

from parcelhook.store.store import Store, Tx

__all__ = ["Store", "Tx"]
