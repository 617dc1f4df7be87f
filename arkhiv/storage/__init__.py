"""Stores: put/get/head/list/delete of byte streams under keys. Knows nothing of AIPs or
policies."""

from arkhiv.storage.base import Store, StoredObject, StoreHealth
from arkhiv.storage.local import LocalStore

__all__ = ["LocalStore", "Store", "StoreHealth", "StoredObject"]
