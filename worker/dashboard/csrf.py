"""Double-submit CSRF tokens: a random nonce signed with a secret of this
process (HMAC-SHA256), set as a cookie and repeated in each action form.
A POST is taken only when both are there, equal, and signed by us: a page
elsewhere can neither read the cookie nor make a token this process signed.
A restart makes a new secret, so an old page's forms are refused (403)."""

from __future__ import annotations

import hashlib
import hmac
import secrets

COOKIE = "flowworker_csrf"
FIELD = "csrf_token"


class CsrfTokens:
    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or secrets.token_bytes(32)

    def new(self) -> str:
        nonce = secrets.token_urlsafe(18)
        return f"{nonce}.{self._sign(nonce)}"

    def valid(self, token: str | None) -> bool:
        """Signed by this process (not merely well formed)."""
        nonce, dot, signature = (token or "").partition(".")
        return bool(nonce and dot) and hmac.compare_digest(signature, self._sign(nonce))

    def accepts(self, cookie: str | None, field: str | None) -> bool:
        """The form's token is the cookie's, and it is valid."""
        if not cookie or not field:
            return False
        return hmac.compare_digest(cookie, field) and self.valid(cookie)

    def _sign(self, nonce: str) -> str:
        return hmac.new(self._secret, nonce.encode(), hashlib.sha256).hexdigest()
