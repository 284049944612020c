"""A relying party written with Authlib, for tests/oidc/authlib.test.js.

    authlib_rp.py ISSUER CLIENT_ID CLIENT_SECRET REDIRECT_URI APP

Fetches ISSUER's discovery document, prints {"authorize": URL} as one JSON line on
stdout (an authorization URL of Authlib's OAuth2Session, PKCE S256, state and nonce),
reads the URL the browser was sent back to from stdin, then: exchanges the code,
validates the ID token as Authlib's own OpenID client does (joserfc with the JWKS and
the provider's algorithms, authlib.oidc.core.CodeIDToken), calls userinfo, refreshes,
validates the access token with Authlib's RFC 9068 validator (audience APP), revokes the
refresh token and tries it again. Prints one JSON line of results; diagnostics go to
stderr. Every HTTP request has a timeout.
"""

import json
import os
import sys
import traceback

# Plain HTTP to the provider on loopback: Authlib refuses it without this switch.
os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")

import requests  # noqa: E402
from authlib.common.security import generate_token  # noqa: E402
from authlib.integrations.requests_client import OAuth2Session  # noqa: E402
from authlib.oauth2.rfc9068 import JWTBearerTokenValidator  # noqa: E402
from authlib.oauth2.rfc9068.claims import JWTAccessTokenClaims  # noqa: E402
from authlib.oidc.core import CodeIDToken  # noqa: E402
from joserfc import jwt  # noqa: E402
from joserfc.jwk import KeySet  # noqa: E402
from joserfc.jws import JWSRegistry  # noqa: E402

TIMEOUT = 20  # seconds, for every request


def error_of(exc):
    """An Authlib OAuthError's code, else the exception's class and message."""
    code = getattr(exc, "error", None)
    return code if isinstance(code, str) else f"{type(exc).__name__}: {exc}"


def main(issuer, client_id, client_secret, redirect_uri, app):
    out = {}
    res = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=TIMEOUT)
    res.raise_for_status()
    meta = res.json()
    out["issuer_matches"] = meta.get("issuer") == issuer
    jwks = requests.get(meta["jwks_uri"], timeout=TIMEOUT).json()

    session = OAuth2Session(
        client_id,
        client_secret,
        scope="openid profile offline_access",
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
        default_timeout=TIMEOUT,
    )
    code_verifier = generate_token(48)
    nonce = generate_token(20)
    uri, state = session.create_authorization_url(
        meta["authorization_endpoint"], code_verifier=code_verifier, nonce=nonce
    )
    print(json.dumps({"authorize": uri}), flush=True)

    callback = sys.stdin.readline().strip()
    token = session.fetch_token(
        meta["token_endpoint"],
        authorization_response=callback,
        state=state,
        code_verifier=code_verifier,
    )
    out["token_type"] = token.get("token_type")
    out["scope"] = token.get("scope")

    # The ID token, as OpenIDMixin.parse_id_token checks it, and the audience too.
    decoded = jwt.decode(
        token["id_token"],
        key=KeySet.import_key_set(jwks),
        registry=JWSRegistry(
            algorithms=meta["id_token_signing_alg_values_supported"],
            strict_check_header=False,
        ),
    )
    claims = CodeIDToken(
        decoded.claims,
        decoded.header,
        {
            "iss": {"essential": True, "values": [issuer]},
            "aud": {"essential": True, "value": client_id},
        },
        {"nonce": nonce, "client_id": client_id, "access_token": token["access_token"]},
    )
    claims.validate(leeway=120)
    out["id_token"] = {
        "alg": decoded.header.get("alg"),
        "sub": claims["sub"],
        "aud": claims["aud"],
        "nonce": claims.get("nonce") == nonce,
        "did": claims.get("did"),
        "at_hash": "at_hash" in claims,
    }

    info = session.get(meta["userinfo_endpoint"])
    out["userinfo"] = {"status": info.status_code, **(info.json() if info.ok else {})}

    first_refresh = token["refresh_token"]
    refreshed = session.refresh_token(
        meta["token_endpoint"], refresh_token=first_refresh
    )
    out["refreshed"] = {
        "access_token": isinstance(refreshed.get("access_token"), str),
        "rotated": refreshed.get("refresh_token") not in (None, first_refresh),
    }

    # Authlib's RFC 9068 validator, as its documentation has one subclass it: get_jwks.
    class Validator(JWTBearerTokenValidator):
        def get_jwks(self):
            return jwks

    validator = Validator(issuer=issuer, resource_server=app)
    try:
        at = validator.authenticate_token(refreshed["access_token"])
        validator.validate_token(at, scopes=None, request=None)
        out["rfc9068"] = {"ok": True, "sub": at["sub"], "client_id": at["client_id"]}
    except Exception as exc:  # the test reports what the validator said
        cause = exc.__cause__
        out["rfc9068"] = {
            "ok": False,
            "error": error_of(exc),
            "cause": f"{type(cause).__name__}: {cause}" if cause else None,
        }

    # The same checks with EdDSA allowed: Authlib's RFC 9068 claims class and the
    # options its validator uses, the token decoded by joserfc with EdDSA permitted
    # (the stock validator allows only joserfc's "recommended" algorithms).
    try:
        token = jwt.decode(
            refreshed["access_token"],
            key=KeySet.import_key_set(jwks),
            registry=JWSRegistry(algorithms=["EdDSA", "Ed25519"]),
        )
        at = JWTAccessTokenClaims(
            token.claims,
            token.header,
            {
                "iss": {"essential": True, "value": issuer},
                "exp": {"essential": True},
                "aud": {"essential": True, "value": app},
                "sub": {"essential": True},
                "client_id": {"essential": True},
                "iat": {"essential": True},
                "jti": {"essential": True},
            },
        )
        at.validate()
        out["rfc9068_eddsa_allowed"] = {
            "ok": True,
            "alg": token.header.get("alg"),
            "typ": token.header.get("typ"),
            "client_id": at["client_id"],
            "acct": at.get("acct"),
        }
    except Exception as exc:
        out["rfc9068_eddsa_allowed"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}

    revoked = session.revoke_token(
        meta["revocation_endpoint"],
        token=refreshed["refresh_token"],
        token_type_hint="refresh_token",
    )
    out["revoke_status"] = revoked.status_code
    try:
        session.refresh_token(
            meta["token_endpoint"], refresh_token=refreshed["refresh_token"]
        )
        out["refresh_after_revoke"] = "accepted"
    except Exception as exc:  # an OAuthError is what is expected
        out["refresh_after_revoke"] = error_of(exc)
    return out


if __name__ == "__main__":
    try:
        result = main(*sys.argv[1:6])
    except Exception as exc:
        traceback.print_exc()
        print(json.dumps({"failed": f"{type(exc).__name__}: {exc}"}), flush=True)
        sys.exit(1)
    print(json.dumps(result), flush=True)
