"""Locales: one rule for every field that names one. Pure data.

The fields: a send's and a preview's `locale`, a user's preferred `locale`, a template's
`locales` keys and `default_locale`. A locale is a BCP 47 language tag as people write
them: a language of 2 or 3 letters, then up to four subtags of 1 to 8 letters or digits
(script, region, variants: `fr-CA`, `zh-Hant-TW`, `es-419`, `de-CH-1996`), joined by `-`.
`_` (`fr_CA`, as POSIX and Java spell it) is read as `-` everywhere: accepted by every
field, and normalised (`normalize_locale`, BCP 47's casing too) where a locale is kept for
the user: the preferences store `fr-CA`, a send and a preview use it. Templates keep their
locale keys as spelled (a problem names the key you sent) and match them case-insensitively,
with `_` read as `-` (actors/domain/template_choice.py), so `fr_CA` and `fr-CA` are the same locale there
too (both in one template is a 422).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

LOCALE_PATTERN = r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8}){0,4}(?!\n)$"
LOCALE_SENTENCE = "a locale: a BCP 47 language tag such as fr-CA or zh-Hant-TW (fr_CA is read as fr-CA)"

Locale = Annotated[str, msgspec.Meta(pattern=LOCALE_PATTERN, examples=["fr-CA"])]


def normalize_locale(tag: str) -> str:
    """`fr_ca` -> `fr-CA`, `ZH_hant_tw` -> `zh-Hant-TW`: `-` between subtags, BCP 47's casing (RFC 5646 2.1.1)."""
    subtags = tag.replace("_", "-").split("-")
    out = [subtags[0].lower()]
    extension = False  # after a singleton (`-u-`, `-x-`) every subtag is lower case
    for subtag in subtags[1:]:
        extension = extension or len(subtag) == 1
        if not extension and len(subtag) == 2 and subtag.isalpha():
            out.append(subtag.upper())  # a region
        elif not extension and len(subtag) == 4 and subtag.isalpha():
            out.append(subtag.title())  # a script
        else:
            out.append(subtag.lower())
    return "-".join(out)
