"""The built-in synthetic shop: a realistic, seeded e-commerce log with planted, documented structure.

It is the default data set and the test fixture of shopseq. Planted structure (all recorded in the
ground-truth tables and ``truth.json``): shopper types, drifting category tastes, a category Markov
chain across sessions, "related item" clicks inside sessions, complements bought after an item,
consumables restocked at a per-item interval, weekly and daily seasonality, and promotion campaigns
with per-user responsiveness.
"""

from shopseq.synthetic.config import SyntheticShopConfig, UserTypeProfile, default_user_types
from shopseq.synthetic.shop import (
    EVENTS_SCHEMA,
    ITEMS_SCHEMA,
    ShopChunk,
    SyntheticShop,
    generate_shop,
    generate_to_parquet,
    iter_shop_chunks,
    write_shop,
)

__all__ = [
    "EVENTS_SCHEMA",
    "ITEMS_SCHEMA",
    "ShopChunk",
    "SyntheticShop",
    "SyntheticShopConfig",
    "UserTypeProfile",
    "default_user_types",
    "generate_shop",
    "generate_to_parquet",
    "iter_shop_chunks",
    "write_shop",
]
