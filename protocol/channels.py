"""Delivery channels and priorities."""

from __future__ import annotations

import enum


class Channel(str, enum.Enum):
    EMAIL = "email"
    SMS = "sms"
    PUSH = "push"
    WEB = "web"

    def topic(self) -> str:
        """The bus topic that carries this channel's deliveries."""
        return f"herald.{self.value}"


class Priority(str, enum.Enum):
    CRITICAL = "critical"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"
