"""Bearer tokens: JWT (HS256) with the claim `tenant`, expiry checked. Shared by the HTTP API and
(later) the websocket gateway. The tenant `*` is the system's own: it may act for every tenant.

Without a configured secret (`LEDGER_JWT_SECRET`) the API is open, as in the embedded default on a
developer's machine; `ledger up` says so when it starts.
"""

from __future__ import annotations

import time

import jwt

from ledger.errors import LedgerError

algorithm = "HS256"
all_tenants = "*"
# A token's default life: long enough for a dashboard session, short enough to matter.
token_ttl_s_default = 3600
# Clock skew tolerated between the issuer and us.
leeway_s = 30


class AuthError(LedgerError):
    """A missing, malformed, badly signed or expired token."""


def issue_token(secret: str, tenant: str, ttl_s: int = token_ttl_s_default) -> str:
    now = int(time.time())
    return jwt.encode(
        {"tenant": tenant, "iat": now, "exp": now + ttl_s}, secret, algorithm=algorithm
    )


# Tokens that verified, so a client's every request does not pay for the signature check and the
# claims' decoding again (~5% of `ledger up`'s CPU at 200 appends/s, one request per event): keyed
# by the secret and the whole token, signature included, so only a token that verified with this
# secret is found. Its signature and its other claims (nbf, iat) stay valid; its expiry is checked
# on every use. Bounded: emptied when full.
verified_tokens_max = 4096
_verified: dict[tuple[str, str], tuple[str, float]] = {}
_clock = time.time


def tenant_of(secret: str, authorization: str | None) -> str:
    """The tenant a `Bearer <jwt>` header speaks for; AuthError with the reason otherwise."""
    if not authorization or not authorization.startswith("Bearer "):
        raise AuthError("send Authorization: Bearer <token> (a JWT with the claim tenant)")
    token = authorization[len("Bearer ") :].strip()
    known = _verified.get((secret, token))
    if known is not None:
        known_tenant, expires = known
        # PyJWT's rule: expired once exp <= now - leeway.
        if expires > _clock() - leeway_s:
            return known_tenant
        del _verified[(secret, token)]
        raise AuthError("the token has expired")
    try:
        claims = jwt.decode(
            token, secret, algorithms=[algorithm], leeway=leeway_s, options={"require": ["exp"]}
        )
    except jwt.ExpiredSignatureError as error:
        raise AuthError("the token has expired") from error
    except jwt.PyJWTError as error:
        raise AuthError(f"the token is not valid: {error}") from error
    tenant = claims.get("tenant")
    if not isinstance(tenant, str) or not tenant:
        raise AuthError("the token has no tenant claim")
    if len(_verified) >= verified_tokens_max:
        _verified.clear()
    _verified[(secret, token)] = (tenant, float(claims["exp"]))
    return tenant


def may_act_for(token_tenant: str, tenant: str) -> bool:
    return token_tenant in (all_tenants, tenant)
