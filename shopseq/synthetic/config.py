"""Configuration of the synthetic shop: sizes, time range, seeds and the planted user types."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime

from pydantic import BaseModel, ConfigDict, Field, model_validator

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MINUTE_MS = 60_000
SECOND_MS = 1_000


class UserTypeProfile(BaseModel):
    """Behaviour parameters of one planted shopper type. Every type has every knob, so new types
    are pure configuration; the defaults below make each type visibly different in the logs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    share: float = Field(gt=0, description="relative share of users of this type")
    session_rate: float = Field(1.0, gt=0, description="multiplier on mean sessions per user")
    views_per_session: float = Field(3.0, ge=1, description="mean item views per session")
    p_cart: float = Field(0.08, ge=0, le=1, description="P(add to cart | view)")
    p_fav: float = Field(0.03, ge=0, le=1, description="P(favourite | view)")
    p_buy: float = Field(0.5, ge=0, le=1, description="P(purchase | cart), checked out at session end")
    related_follow: float = Field(0.45, ge=0, le=1, description="P(next view is a 'related item' click)")
    category_stickiness: float = Field(
        0.5, ge=0, le=1, description="P(session category follows the category Markov chain, not taste)"
    )
    taste_size: int = Field(3, ge=1, le=6, description="number of home categories")
    drift: float = Field(0.4, ge=0, le=1, description="share of sessions drawn from the drifted taste at the end")
    tail_exploration: float = Field(0.1, ge=0, le=1, description="P(pick uniformly in category, not by popularity)")
    price_candidates: int = Field(1, ge=1, le=6, description="picks the cheapest of this many popular candidates")
    brand_loyalty: float = Field(0.0, ge=0, le=1, description="P(restrict a pick to the favourite brand)")
    consumable_affinity: float = Field(0.0, ge=0, description="taste boost for consumable-heavy categories")
    campaign_response: float = Field(0.15, ge=0, le=1, description="P(responding to a campaign)")
    complement_follow: float = Field(0.5, ge=0, le=1, description="P(coming back for a bought item's complement)")
    restock_keep: float = Field(0.5, ge=0, le=1, description="P(rebuying a consumable again at its interval)")
    review_rate: float = Field(0.05, ge=0, le=1, description="P(review | purchase)")


def default_user_types() -> dict[str, UserTypeProfile]:
    return {
        "casual": UserTypeProfile(share=0.30),
        "bargain_hunter": UserTypeProfile(
            share=0.18, session_rate=1.1, views_per_session=4.5, p_cart=0.07, p_fav=0.05, p_buy=0.45,
            related_follow=0.40, category_stickiness=0.4, taste_size=4, drift=0.3, tail_exploration=0.15,
            price_candidates=4, campaign_response=0.45, complement_follow=0.4, restock_keep=0.4,
            review_rate=0.04,
        ),
        "brand_loyal": UserTypeProfile(
            share=0.14, session_rate=0.9, views_per_session=2.6, p_cart=0.13, p_fav=0.04, p_buy=0.6,
            related_follow=0.5, category_stickiness=0.6, taste_size=2, drift=0.2, tail_exploration=0.05,
            brand_loyalty=0.85, campaign_response=0.06, complement_follow=0.6, restock_keep=0.6,
            review_rate=0.10,
        ),
        "explorer": UserTypeProfile(
            share=0.14, session_rate=1.2, views_per_session=5.0, p_cart=0.04, p_fav=0.06, p_buy=0.35,
            related_follow=0.3, category_stickiness=0.25, taste_size=5, drift=0.7, tail_exploration=0.5,
            campaign_response=0.25, complement_follow=0.35, restock_keep=0.3, review_rate=0.04,
        ),
        "restocker": UserTypeProfile(
            share=0.12, session_rate=0.9, views_per_session=2.0, p_cart=0.16, p_fav=0.01, p_buy=0.7,
            related_follow=0.45, category_stickiness=0.6, taste_size=2, drift=0.15, tail_exploration=0.05,
            brand_loyalty=0.3, consumable_affinity=6.0, campaign_response=0.1, complement_follow=0.5,
            restock_keep=0.92, review_rate=0.06,
        ),
        "window_shopper": UserTypeProfile(
            share=0.12, session_rate=1.3, views_per_session=5.5, p_cart=0.03, p_fav=0.10, p_buy=0.15,
            related_follow=0.5, category_stickiness=0.4, taste_size=3, drift=0.5, tail_exploration=0.2,
            campaign_response=0.2, complement_follow=0.2, restock_keep=0.2, review_rate=0.01,
        ),
    }


# Monday..Sunday: weekend evenings are the busiest shopping time in most retail logs.
DEFAULT_WEEKDAY_WEIGHTS = (0.95, 0.90, 0.92, 0.97, 1.00, 1.20, 1.40)
# 00..23 UTC: night trough, lunch bump, evening peak.
DEFAULT_HOUR_WEIGHTS = (
    0.25, 0.15, 0.10, 0.08, 0.08, 0.12, 0.25, 0.45, 0.65, 0.75, 0.80, 0.90,
    1.00, 0.95, 0.85, 0.85, 0.90, 1.00, 1.15, 1.35, 1.50, 1.40, 1.05, 0.55,
)


class SyntheticShopConfig(BaseModel):
    """Everything that determines a synthetic shop. Same config -> byte-identical tables.

    ``scale`` grows the shop without touching the other numbers: users scale linearly (so events do),
    items and brands with the square root (catalogues grow slower than audiences). The default
    (scale 1) gives about 340k events (17 per user); scale 30 about 10M, scale 300 about 100M (stream
    those with ``generate_to_parquet``). ``for_events(n)`` picks the scale for you.
    """

    model_config = ConfigDict(extra="forbid")

    n_users: int = Field(20_000, ge=1)
    n_items: int = Field(5_000, ge=2)
    n_categories: int = Field(60, ge=1, description="number of leaf categories")
    n_brands: int = Field(250, ge=1)
    days: int = Field(91, ge=1, description="length of the log in days")
    start_date: date = date(2024, 1, 1)
    seed: int = Field(0, ge=0)
    scale: float = Field(1.0, gt=0)

    mean_sessions_per_user: float = Field(3.0, gt=0, description="organic visits over the whole log")
    max_sessions_per_user: int = Field(60, ge=1)
    max_views_per_session: int = Field(40, ge=1)
    activity_sigma: float = Field(0.7, ge=0, description="log-normal spread of user activity")

    popularity_exponent: float = Field(1.05, ge=0, description="Zipf exponent of item popularity")
    price_sigma: float = Field(0.45, ge=0, description="log-normal price spread inside a category")
    consumable_share: float = Field(0.15, ge=0, le=1)
    repurchase_median_days: float = Field(21.0, gt=0)
    complement_share: float = Field(0.35, ge=0, le=1, description="share of items with a complement")
    related_per_item: int = Field(5, ge=1, le=20)

    n_campaigns: int = Field(4, ge=0)
    campaign_min_days: int = Field(4, ge=1)
    campaign_max_days: int = Field(10, ge=1)

    weekday_weights: tuple[float, ...] = DEFAULT_WEEKDAY_WEIGHTS
    hour_weights: tuple[float, ...] = DEFAULT_HOUR_WEIGHTS
    user_types: dict[str, UserTypeProfile] = Field(default_factory=default_user_types)

    # Part of the config because the random streams are per chunk: generate_shop and
    # generate_to_parquet give the same events only for the same chunk size.
    chunk_users: int = Field(50_000, ge=1, le=5_000_000)

    @model_validator(mode="after")
    def _check(self) -> SyntheticShopConfig:
        if len(self.weekday_weights) != 7 or min(self.weekday_weights) <= 0:
            raise ValueError("weekday_weights needs 7 positive values (Monday..Sunday)")
        if len(self.hour_weights) != 24 or min(self.hour_weights) <= 0:
            raise ValueError("hour_weights needs 24 positive values (00..23 UTC)")
        if not self.user_types:
            raise ValueError("user_types must not be empty")
        if self.campaign_max_days < self.campaign_min_days:
            raise ValueError("campaign_max_days < campaign_min_days")
        if self.resolved_n_items < 2 * self.n_categories:
            raise ValueError("need at least two items per category (n_items >= 2 * n_categories)")
        return self

    @property
    def resolved_n_users(self) -> int:
        return max(1, round(self.n_users * self.scale))

    @property
    def resolved_n_items(self) -> int:
        return max(2, round(self.n_items * math.sqrt(self.scale)))

    @property
    def resolved_n_brands(self) -> int:
        return max(1, round(self.n_brands * math.sqrt(self.scale)))

    @property
    def start_ms(self) -> int:
        return int(datetime(self.start_date.year, self.start_date.month, self.start_date.day,
                            tzinfo=UTC).timestamp() * 1000)

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.days * DAY_MS

    @property
    def type_names(self) -> list[str]:
        return list(self.user_types)

    def n_chunks(self, chunk_users: int | None = None) -> int:
        size = chunk_users or self.chunk_users
        return -(-self.resolved_n_users // size)

    @classmethod
    def for_events(cls, n_events: float, **overrides: object) -> SyntheticShopConfig:
        """A config whose ``scale`` aims at about ``n_events`` events (within ~15%)."""
        base = cls(**overrides)  # type: ignore[arg-type]
        scale = n_events / (EVENTS_PER_USER_AT_DEFAULTS * base.n_users)
        return cls(**{**base.model_dump(), "scale": scale})


# Calibrated by measurement with the default profiles; used only by ``for_events``.
EVENTS_PER_USER_AT_DEFAULTS = 17.0
