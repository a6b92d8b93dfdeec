"""Tokens for alice that no transport may accept: expired, tampered with, signed with another or an
unknown key, and every non-canonical base64 spelling of a valid token (which decodes to the same
bytes, so a lenient decoder accepts it)."""

from __future__ import annotations

import base64
import json

from actors.domain.tokens import SigningKeys, issue_token
from protocol.keys import SigningKey

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def with_trailing_bits(text: str) -> str:
    """The same bytes, spelled with non-zero unused bits in the last character (text must have some)."""
    assert len(text) % 4 in (2, 3), "no unused bits"
    index = ALPHABET.index(text[-1])
    return text[:-1] + ALPHABET[index | 1]


def non_canonical(token: str) -> dict[str, str]:
    """Spellings of `token` whose base64 is not canonical; each decodes to the token's own bytes leniently."""
    kid, body, signature = token.split(".")
    cases = {
        "signature padded": f"{kid}.{body}.{signature}{'=' * (-len(signature) % 4)}",
        "signature over-padded": f"{kid}.{body}.{signature}{'=' * (-len(signature) % 4)}==",
        "signature with trailing bits": f"{kid}.{body}.{with_trailing_bits(signature)}",
        "signature with a character outside the alphabet": f"{kid}.{body}.{signature[:10]}!{signature[10:]}",
        "signature with a space": f"{kid}.{body}.{signature[:10]} {signature[10:]}",
    }
    if "-" in signature or "_" in signature:
        cases["signature in the standard alphabet"] = f"{kid}.{body}.{signature.replace('-', '+').replace('_', '/')}"
    if len(body) % 4 in (2, 3):
        cases["claims with trailing bits"] = f"{kid}.{with_trailing_bits(body)}.{signature}"
    return cases


def good_token(keys: SigningKeys, user: str, expires_ms: int) -> str:
    """A valid token whose signature has a '-' or '_' (so that its standard-alphabet spelling differs)."""
    for shift in range(200):
        token = issue_token(keys, user, expires_ms + shift)
        signature = token.split(".")[2]
        if "-" in signature or "_" in signature:
            return token
    raise AssertionError("no token with a url-safe character in 200 tries")


def refused_tokens(keys: SigningKeys, now_ms: int) -> dict[str, str]:
    """Credentials for alice that must not verify at `now_ms`."""
    good = good_token(keys, "alice", now_ms + 3_600_000)
    kid, body, signature = good.split(".")
    bob_body = b64(json.dumps({"u": "bob", "exp": now_ms + 3_600_000}).encode())
    later_body = b64(json.dumps({"u": "alice", "exp": now_ms + 9_999_999}).encode())
    other = SigningKeys([SigningKey(kid, b"not the node's secret" * 2, 0)], kid)  # the same kid, another secret
    stranger = SigningKeys.generate()
    return {
        "expired": issue_token(keys, "alice", now_ms - 1),
        "signature flipped": f"{kid}.{body}.{signature[:-2]}{'A' if signature[-2] != 'A' else 'B'}{signature[-1]}",
        "claims swapped to bob": f"{kid}.{bob_body}.{signature}",
        "expiry extended": f"{kid}.{later_body}.{signature}",
        "signed with another secret": issue_token(other, "alice", now_ms + 3_600_000),
        "signed with an unknown kid": issue_token(stranger, "alice", now_ms + 3_600_000),
        "kid swapped": f"{stranger.current.kid}.{body}.{signature}",
        "no kid (a token from before key ids, but the ring has no legacy key)": f"{body}.{signature}",
        "no signature": f"{kid}.{body}",
        "garbage": "not-a-token",
        **non_canonical(good),
    }
