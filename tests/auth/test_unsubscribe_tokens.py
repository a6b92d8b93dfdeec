"""The one-click unsubscribe link's token is decoded as strictly as a subscriber token: a
non-canonical spelling of a valid link, a forged one, and one signed with an unknown key are
all refused with the same 400, and opt nobody out."""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

import httpx

from actors.domain.preferences import UNSUBSCRIBE_PURPOSE
from actors.domain.tokens import SigningKeys, sign_claims
from tests.auth.token_cases import non_canonical
from tests.helpers import http, running_node, wait_final


async def test_unsubscribe_links_refuse_non_canonical_and_forged_tokens_alike(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        sent = await client.post("/v1/notifications", json={
            "user_id": "dave", "channels": ["email"], "category": "marketing", "to": {"email": "dave@example.org"},
            "content": {"email": {"subject": "Sale", "text": "50% off"}},
        })
        nid = sent.json()["notification_id"]
        await wait_final(client, nid)
        eml = (herald.config.outbox_dir / f"{nid}.eml").read_text()
        token = unquote(re.search(r"^List-Unsubscribe: <[^>]*\?token=([^>]+)>", eml, re.MULTILINE).group(1))
        kid, body, signature = token.split(".")
        forged = {
            **non_canonical(token),
            "signature flipped": f"{kid}.{body}.{signature[:-2]}{'A' if signature[-2] != 'A' else 'B'}{signature[-1]}",
            "signed with an unknown kid": sign_claims(SigningKeys.generate(), {"u": "dave", "c": "marketing"}, UNSUBSCRIBE_PURPOSE),
            "no kid": f"{body}.{signature}",
        }
        answers = set()
        async with httpx.AsyncClient(base_url=herald.url, timeout=10) as mail_client:
            for name, bad in forged.items():
                response = await mail_client.post(f"/v1/unsubscribe?token={quote(bad, safe='')}")
                assert response.status_code == 400, (name, response.text)
                assert response.json()["errors"][0]["field"] == "token", name
                answers.add(response.content)
            assert len(answers) == 1, answers  # one answer whatever is wrong with the token
            assert (await client.get("/v1/users/dave/preferences")).json()["opt_out"] == []
            assert (await mail_client.post(f"/v1/unsubscribe?token={quote(token, safe='')}")).status_code == 200
        assert (await client.get("/v1/users/dave/preferences")).json()["opt_out"] == ["marketing"]
