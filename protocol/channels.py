"""Delivery channels, priorities, and the lanes priorities travel in."""

from __future__ import annotations

import enum


class Lane(str, enum.Enum):
    """A channel's bus lane (docs/reliability.md, "Priority lanes"): critical traffic never queues behind bulk."""

    CRITICAL = "critical"  # priorities critical and high: topic herald.<channel>.critical
    BULK = "bulk"  # priorities normal and low: topic herald.<channel> (the topic every delivery used before lanes)


class Channel(str, enum.Enum):
    EMAIL = "email"
    SMS = "sms"
    PUSH = "push"
    WEB = "web"
    WEBHOOK = "webhook"  # an HMAC-signed POST to the user's URL (actors/clients/webhook.py)

    def topic(self, lane: Lane = Lane.BULK) -> str:
        """The bus topic that carries this channel's deliveries of `lane` (the bulk lane's is the channel's own topic)."""
        return f"herald.{self.value}" if lane is Lane.BULK else f"herald.{self.value}.{lane.value}"


class Priority(str, enum.Enum):
    CRITICAL = "critical"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def lane(self) -> Lane:
        """critical and high go in the critical lane, normal and low in the bulk lane."""
        return _LANE_OF[self]


_LANE_OF = {Priority.CRITICAL: Lane.CRITICAL, Priority.HIGH: Lane.CRITICAL, Priority.NORMAL: Lane.BULK, Priority.LOW: Lane.BULK}
LANES = tuple(Lane)
