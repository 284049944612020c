#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets into fuzz/corpus/<target>/.

The seeds are real protocol values made against the fixed keys and times of
fuzz/src/lib.rs (user key seed [7; 32], nonce key [42; 32], token key seed
[3; 32], API secret [5; 32], now 2026-11-23T10:46:49Z), computed here from the
documented formats with Python's `cryptography` package (pip install
cryptography), independently of keygate's own code. Run it again after changing
a fixture: `python3 fuzz/make_seeds.py`. The output is deterministic.
"""

import base64
import hashlib
import hmac
import json
import pathlib
import shutil
import struct
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

NOW = 1_795_430_809
APP = "kgk_fuzzapp"
AUDIENCE = "http://localhost:8080"
ISSUER = "http://127.0.0.1:8080"
NONCE_KEY = bytes([42] * 32)
API_SECRET = bytes([5] * 32)
HEADER = "keygate sign-in challenge v1"
MAC_DOMAIN = b"keygate challenge nonce v1\0"

OUT = pathlib.Path(__file__).resolve().parent / "corpus"


def key(seed_byte):
    return Ed25519PrivateKey.from_private_bytes(bytes([seed_byte] * 32))


def public(sk):
    return sk.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def b64url(b):
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


def b32lower(b):
    return base64.b32encode(b).decode().lower().rstrip("=")


B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def b58(b):
    n = int.from_bytes(b, "big")
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = B58[r] + out
    return "1" * (len(b) - len(b.lstrip(b"\0"))) + out


def proto(pk):
    return bytes([0x08, 0x01, 0x12, 0x20]) + pk


def canonical(pk):
    return "b" + b32lower(proto(pk))


def peer_id(pk):
    return b58(bytes([0x00, 36]) + proto(pk))


def did_key(pk):
    return "did:key:z" + b58(bytes([0xED, 0x01]) + pk)


def rfc3339(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def challenge(app, audience, pk, issued_at, ttl, random):
    ident = canonical(pk)
    expires_at = issued_at + ttl
    mac = hmac.new(NONCE_KEY, MAC_DOMAIN, hashlib.sha256)
    for part in (app, audience, ident):
        raw = part.encode()
        mac.update(struct.pack(">I", len(raw)) + raw)
    mac.update(struct.pack(">q", issued_at) + struct.pack(">q", expires_at) + random)
    nonce = b64url(random + mac.digest()[:16])
    return "\n".join(
        [
            HEADER,
            "audience: " + audience,
            "identity: " + ident,
            "nonce: " + nonce,
            "issued-at: " + rfc3339(issued_at),
            "expires-at: " + rfc3339(expires_at),
        ]
    )


def sign(sk, text):
    return b64url(sk.sign(text.encode()))


def jwk_kid(pk):
    x = b64url(pk)
    canonical_jwk = '{"crv":"Ed25519","kty":"OKP","x":"%s"}' % x
    return b64url(hashlib.sha256(canonical_jwk.encode()).digest())


def jwt(sk, header, claims):
    h = b64url(json.dumps(header, separators=(",", ":")).encode())
    p = b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = h + "." + p
    return signing_input + "." + b64url(sk.sign(signing_input.encode()))


def api_sig(msg):
    return "b" + b32lower(hmac.new(API_SECRET, msg.encode(), hashlib.sha256).digest())


def write(target, name, content):
    d = OUT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(content if isinstance(content, bytes) else content.encode())


def join(*fields):
    return "\0".join(fields)


def main():
    if OUT.exists():
        shutil.rmtree(OUT)
    user, other, token_key = key(7), key(8), key(3)
    upk, opk, tpk = public(user), public(other), public(token_key)

    # identity: the three spellings, and raw payloads the target wraps in each.
    write("identity", "canonical", canonical(upk))
    write("identity", "canonical_other", canonical(opk))
    write("identity", "peer_id", peer_id(upk))
    write("identity", "did_key", did_key(upk))
    write("identity", "raw_key", upk)
    write("identity", "raw_protobuf", proto(upk))
    write("identity", "raw_multihash", bytes([0x00, 36]) + proto(upk))
    write("identity", "raw_multicodec", bytes([0xED, 0x01]) + upk)
    write("identity", "did_key_private", "did:key:z" + b58(bytes([0x80, 0x26]) + bytes([7] * 32) + upk))
    write("identity", "small_order", canonical(bytes([1]) + bytes(31)))
    write("identity", "upper_case", "B" + b32lower(proto(upk)).upper())

    # challenge: text \0 sig \0 audience \0 app
    c = challenge(APP, AUDIENCE, upk, NOW, 60, bytes([1] * 16))
    write("challenge", "valid", join(c, sign(user, c), AUDIENCE, APP))
    write("challenge", "valid_text_sig_only", join(c, sign(user, c)))
    old = challenge(APP, AUDIENCE, upk, NOW - 120, 60, bytes([2] * 16))
    write("challenge", "expired", join(old, sign(user, old), "kgk_other", "kgk_other"))
    backend = challenge(APP, APP, upk, NOW, 600, bytes([3] * 16))
    write("challenge", "audience_is_app", join(backend, sign(user, backend), APP, ""))
    theirs = challenge(APP, AUDIENCE, opk, NOW, 60, bytes([4] * 16))
    write("challenge", "other_identity", join(theirs, sign(other, theirs), "https://example.com:8443", "a"))
    sig = sign(user, c)
    write("challenge", "sig_trailing_bits", join(c, sig[:-1] + ("B" if sig[-1] == "A" else "A")))
    write("challenge", "long_audience", join("", "", "h" * 256, APP))

    # token: JWTs the fixed verifier trusts, and some it must refuse.
    header = {"alg": "EdDSA", "typ": "at+jwt", "kid": jwk_kid(tpk)}

    def claims(**over):
        c = {
            "iss": ISSUER,
            "sub": canonical(upk),
            "aud": APP,
            "iat": NOW,
            "nbf": NOW,
            "exp": NOW + 3600,
            "jti": "jti-1",
            "sid": "sid-1",
            "scope": "read write",
        }
        c.update(over)
        return c

    write("token", "valid", jwt(token_key, header, claims()))
    write("token", "valid_client_role", jwt(token_key, header, claims(client_id="cli", role="admin")))
    write("token", "expired", jwt(token_key, header, claims(iat=NOW - 7200, nbf=NOW - 7200, exp=NOW - 3600)))
    write("token", "not_yet_valid", jwt(token_key, header, claims(nbf=NOW + 600)))
    write("token", "other_audience", jwt(token_key, header, claims(aud="kgk_other")))
    write("token", "other_issuer", jwt(token_key, header, claims(iss="http://evil.example")))
    write("token", "typ_application", jwt(token_key, dict(header, typ="application/at+jwt"), claims()))
    write("token", "unknown_kid", jwt(other, dict(header, kid=jwk_kid(opk)), claims()))
    h_none = b64url(b'{"alg":"none","typ":"at+jwt"}')
    write("token", "alg_none", h_none + "." + b64url(json.dumps(claims()).encode()) + ".")
    h_hs = b64url(b'{"alg":"HS256","typ":"at+jwt","kid":"%s"}' % jwk_kid(tpk).encode())
    write("token", "alg_hs256", h_hs + "." + b64url(json.dumps(claims()).encode()) + ".c2ln")
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url(tpk), "kid": jwk_kid(tpk), "alg": "EdDSA", "use": "sig"}
    write("token", "jwks", json.dumps({"keys": [jwk, dict(jwk, x="AAAA", kid="short")]}))

    # signin_frame: one frame per line; the mirrored dispatch runs the lines in order.
    flow_challenge = challenge(APP, APP, upk, NOW, 60, bytes([7] * 16))
    token_frame = json.dumps({"type": "token", "pubkey": canonical(upk)})
    write("signin_frame", "token", token_frame)
    write("signin_frame", "flow", token_frame + "\n" + json.dumps({"type": "challenge", "sig": sign(user, flow_challenge)}))
    write(
        "signin_frame",
        "token_options",
        json.dumps(
            {
                "type": "token",
                "pubkey": did_key(upk),
                "audience": AUDIENCE,
                "client_id": "cli",
                "access_type": "offline",
                "scope": "read write",
                "expiration": 600,
            }
        ),
    )
    write("signin_frame", "renew", json.dumps({"type": "token", "pubkey": peer_id(upk), "session_id": "s" * 22}))
    write("signin_frame", "challenge_first", json.dumps({"type": "challenge", "sig": sign(user, c)}))
    write("signin_frame", "server_challenge", json.dumps({"type": "challenge", "value": c, "expires_at": rfc3339(NOW + 60)}))
    write(
        "signin_frame",
        "server_token",
        json.dumps(
            {
                "type": "token",
                "value": jwt(token_key, header, claims()),
                "token_type": "Bearer",
                "expires_at": rfc3339(NOW + 3600),
                "expires_in": 3600,
                "session_id": "sid-1",
                "refresh_token": "kgr_x",
            }
        ),
    )
    write("signin_frame", "server_error", json.dumps({"type": "error", "code": "invalid_identity", "message": "no"}))
    write("signin_frame", "wrong_types", '{"type":1,"pubkey":null,"expiration":"60"}')

    # apikey: msg \0 sig \0 secret \0 key_id
    secret = "b" + b32lower(API_SECRET)
    key_id = "kgk_" + b32lower(bytes(range(10)))
    msg = rfc3339(NOW + 600)
    write("apikey", "valid", join(msg, api_sig(msg), secret, key_id))
    stale = rfc3339(NOW - 1)
    write("apikey", "expired", join(stale, api_sig(stale), secret, key_id))
    far = rfc3339(NOW + 7200)
    write("apikey", "too_far_ahead", join(far, api_sig(far), "b" + b32lower(bytes(31)), "kgk_"))
    offset = time.strftime("%Y-%m-%dT%H:%M:%S+02:00", time.gmtime(NOW + 7200 + 600))
    write("apikey", "offset_time", join(offset, api_sig(offset), secret.upper(), key_id.upper()))
    frac = rfc3339(NOW + 60)[:-1] + ".123456789Z"
    write("apikey", "fraction", join(frac, api_sig(frac), secret + "a", "kgk_" + "a" * 61))
    write("apikey", "upper_sig", join(msg, api_sig(msg).upper(), "z" + secret[1:], "kgk_abc8"))


if __name__ == "__main__":
    main()
