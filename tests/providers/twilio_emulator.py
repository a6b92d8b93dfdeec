"""A local emulator of Twilio's Messages API (`POST /2010-04-01/Accounts/{sid}/Messages.json`) for the tests.

Basic auth (account SID, auth token) checked (401 code 20003, another account's path 404
20404); the form validated as Twilio does: To an E.164 number (21211), From one of the
account's numbers (21606) or a messaging service (21703), Body present (21602) and at
most 1600 characters (21617); errors as `{"code", "message", "more_info", "status"}`.
A message is answered 201 with its resource (sid SM..., status queued). `script` holds
answers to give first, in turn (a 429 with code 20429, a 500, a 503).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from tests.providers.asgi_server import Answer

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "twilio-Auth-Token-Very-Secret-42"
FROM_NUMBER = "+15005550006"
MESSAGING_SERVICE = "MG" + "fedcba9876543210" * 2
E164 = re.compile(r"\+[1-9]\d{1,14}")


def error(status: int, code: int, message: str) -> Answer:
    return Answer(status, {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status})


@dataclass
class TwilioEmulator:
    url: str = ""
    accepted: list[dict[str, str]] = field(default_factory=list)
    requests: int = 0
    script: list[Answer] = field(default_factory=list)
    account_status: str = "active"  # or suspended, closed
    down: bool = False  # every authenticated request answered 503 (an outage)
    sids: list[str] = field(default_factory=list)  # the SID of each accepted message, in order

    def callback(self, n: int, status: str, error_code: str | None = None, token: str = AUTH_TOKEN) -> tuple[str, dict[str, str], dict[str, str]]:
        """The status callback of the n-th accepted message, as Twilio posts it: (the StatusCallback URL it was given,
        the form, the headers with X-Twilio-Signature made with `token`)."""
        message = self.accepted[n]
        url = message["StatusCallback"]
        form = {"AccountSid": ACCOUNT_SID, "ApiVersion": "2010-04-01", "From": message.get("From", FROM_NUMBER),
                "MessageSid": self.sids[n], "MessageStatus": status, "SmsSid": self.sids[n], "SmsStatus": status,
                "To": message["To"]}
        if error_code is not None:
            form["ErrorCode"] = error_code
        data = url + "".join(k + v for k, v in sorted(form.items()))
        signature = base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()
        return url, form, {"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded",
                           "User-Agent": "TwilioProxy/1.1"}

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes, http_version: str) -> Answer:
        expected = "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
        account = re.fullmatch(r"/2010-04-01/Accounts/([^/]+)\.json", path)
        if method == "GET" and account is not None:  # the account's resource (herald providers check)
            if headers.get("authorization") != expected:
                return error(401, 20003, "Authenticate")
            if account.group(1) != ACCOUNT_SID:
                return error(404, 20404, f"The requested resource {path} was not found")
            return Answer(200, {"sid": ACCOUNT_SID, "status": self.account_status, "type": "Full"})
        match = re.fullmatch(r"/2010-04-01/Accounts/([^/]+)/Messages\.json", path)
        if method != "POST" or match is None:
            return error(404, 20404, "The requested resource was not found")
        self.requests += 1
        if headers.get("authorization") != expected:
            return error(401, 20003, "Authenticate")
        if match.group(1) != ACCOUNT_SID:
            return error(404, 20404, f"The requested resource {path} was not found")
        if self.script:
            return self.script.pop(0)
        if self.down:
            return error(503, 20503, "Service Unavailable")
        if not headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return error(400, 20001, "Invalid content type")
        form = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        return self._message(form)

    def _message(self, form: dict[str, str]) -> Answer:
        to = form.get("To", "")
        if not E164.fullmatch(to):
            return error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if "From" in form and form["From"] != FROM_NUMBER:
            return error(400, 21606, f"The From phone number {form['From']} is not a valid, SMS-capable inbound phone number "
                                     "or short code for your account.")
        if "From" not in form and form.get("MessagingServiceSid") != MESSAGING_SERVICE:
            return error(400, 21703, "The Messaging Service does not exist or is not available.")
        text = form.get("Body", "")
        if not text:
            return error(400, 21602, "Message body is required.")
        if len(text) > 1600:
            return error(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
        self.accepted.append(form)
        sid = "SM" + uuid.uuid4().hex
        self.sids.append(sid)
        resource: dict[str, Any] = {
            "sid": sid, "account_sid": ACCOUNT_SID, "to": to, "from": form.get("From"),
            "messaging_service_sid": form.get("MessagingServiceSid"), "body": text, "status": "queued",
            "num_segments": str(1 + len(text) // 160), "direction": "outbound-api", "error_code": None,
        }
        return Answer(201, resource)
