"""What each pattern of the API's schemas means, in words. Pure data.

A value that does not match a schema's pattern is refused with this sentence ("an E.164
number such as +14155550100"), never with the regex (actors/api/errors.py `readable`).
tests/api/test_pattern_sentences.py checks that every pattern a request body or a client
frame can hold is here.
"""

from __future__ import annotations

from .ids import NOTIFICATION_ID_RE, USER_ID_RE, USER_ID_RULE
from .locales import LOCALE_PATTERN, LOCALE_SENTENCE
from .parsing import PATTERN_SENTENCES as TEXT_SENTENCES
from .preferences import CATEGORY_PATTERN, E164_PATTERN, EMAIL_PATTERN, HHMM_PATTERN, MARKED_CHANNEL_PATTERN
from .template_schemas import TEMPLATE_ID_RE, VARIANT_RE
from .topics import TOPIC_PATTERN, TOPIC_RULE
from .webhook_url import WEBHOOK_URL_PATTERN

PATTERN_SENTENCES: dict[str, str] = {
    **TEXT_SENTENCES,
    E164_PATTERN: "an E.164 number such as +14155550100 (a +, the country code, then the number: 7 to 15 digits)",
    EMAIL_PATTERN: "an email address such as alice@example.org",
    LOCALE_PATTERN: LOCALE_SENTENCE,
    CATEGORY_PATTERN: "a category such as marketing: 1-64 characters of a-z 0-9 _ . -, starting with a letter or digit",
    HHMM_PATTERN: "a time of day as HH:MM, 00:00 to 23:59",
    MARKED_CHANNEL_PATTERN: "email or sms (the channels with an address a receipt can mark)",
    USER_ID_RE.pattern: f"a user id: {USER_ID_RULE}",
    NOTIFICATION_ID_RE.pattern: "a notification id: 26 characters, Crockford base32",
    TEMPLATE_ID_RE.pattern: "a template id: 1-100 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit",
    VARIANT_RE.pattern: "a variant name: 1-32 characters of A-Z a-z 0-9 _ -",
    TOPIC_PATTERN: f"a topic: {TOPIC_RULE}",
    WEBHOOK_URL_PATTERN: "an http(s) URL such as https://hooks.example.org/herald, without spaces or control characters",
}


def readable(message: str) -> str:
    """A msgspec validation message with every pattern it names said in words."""
    if "matching regex" not in message:
        return message
    for pattern, sentence in PATTERN_SENTENCES.items():
        message = message.replace(f"`str` matching regex {pattern!r}", sentence)
    return message
