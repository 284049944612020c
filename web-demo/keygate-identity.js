// Generated from clients/js/src/identity.js (package keygate-client) by
// clients/js/scripts/vendor.js: edit the package and run that script, not this file.

// Identity strings (docs/protocol.md, "Identity strings"): the canonical form is the
// letter "b" followed by RFC 4648 base32, lower case, unpadded, of the libp2p protobuf
// encoding of the public key. For Ed25519 that is 08 01 12 20 ‖ key(32). The same key
// also has a libp2p PeerId (base58btc of the identity multihash of those 36 bytes,
// "12D3KooW…") and a did:key ("did:key:z" + base58btc of ed 01 ‖ key).

const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567';
const BASE58 = '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz';
const ED25519_PREFIX = [0x08, 0x01, 0x12, 0x20];

/** RFC 4648 base32, lower case, without padding. */
export function base32Lower(bytes) {
  let out = '';
  let bits = 0;
  let value = 0;
  for (const byte of bytes) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
    value &= (1 << bits) - 1; // keep only the bits not yet written
  }
  if (bits > 0) out += BASE32[(value << (5 - bits)) & 31];
  return out;
}

/** Bytes of RFC 4648 base32 (lower case, unpadded), or null when `text` is not that. */
export function fromBase32Lower(text) {
  const out = [];
  let bits = 0;
  let value = 0;
  for (const c of text) {
    const v = BASE32.indexOf(c);
    if (v < 0) return null;
    value = ((value << 5) | v) & 0xfff;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  if (bits >= 5 || (value & ((1 << bits) - 1)) !== 0) return null; // non-canonical tail
  return new Uint8Array(out);
}

/** base58btc (the Bitcoin alphabet), as PeerIds and did:key use it. */
export function base58btc(bytes) {
  let zeros = 0;
  while (zeros < bytes.length && bytes[zeros] === 0) zeros++;
  const digits = []; // little-endian base-58 digits of the number after the zeros
  for (let k = zeros; k < bytes.length; k++) {
    let carry = bytes[k];
    for (let i = 0; i < digits.length; i++) {
      carry += digits[i] * 256;
      digits[i] = carry % 58;
      carry = Math.floor(carry / 58);
    }
    while (carry > 0) {
      digits.push(carry % 58);
      carry = Math.floor(carry / 58);
    }
  }
  return '1'.repeat(zeros) + digits.reverse().map((d) => BASE58[d]).join('');
}

/** base64url without padding (RFC 4648 §5), as the protocol wants signatures. */
export function base64url(bytes) {
  let binary = '';
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** Bytes of base64url (padded or not). Throws on anything else. */
export function fromBase64url(text) {
  const b64 = text.replace(/-/g, '+').replace(/_/g, '/');
  return Uint8Array.from(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4)), (c) => c.charCodeAt(0));
}

/** Canonical identity of a raw 32-byte Ed25519 public key. */
export function identityFromRawKey(raw) {
  const key = new Uint8Array(raw);
  if (key.length !== 32) throw new Error(`an Ed25519 public key has 32 bytes, not ${key.length}`);
  return 'b' + base32Lower(new Uint8Array([...ED25519_PREFIX, ...key]));
}

/** The raw 32-byte Ed25519 key of a canonical identity, or null if it is not one. */
export function rawKeyFromIdentity(identity) {
  if (typeof identity !== 'string' || identity.length !== 59 || identity[0] !== 'b') return null;
  const bytes = fromBase32Lower(identity.slice(1));
  if (!bytes || bytes.length !== 36 || ED25519_PREFIX.some((b, i) => bytes[i] !== b)) return null;
  return bytes.slice(4);
}

/** Canonical identity of a WebCrypto Ed25519 public key (public keys always export). */
export async function identityOf(publicKey) {
  return identityFromRawKey(await crypto.subtle.exportKey('raw', publicKey));
}

/** The libp2p PeerId ("12D3KooW…") of a canonical identity. */
export function peerIdOf(identity) {
  const raw = rawKeyFromIdentity(identity);
  if (!raw) throw new Error('not a canonical Ed25519 identity');
  return base58btc(new Uint8Array([0x00, 0x24, ...ED25519_PREFIX, ...raw]));
}

/** The did:key of a canonical identity. */
export function didKeyOf(identity) {
  const raw = rawKeyFromIdentity(identity);
  if (!raw) throw new Error('not a canonical Ed25519 identity');
  return 'did:key:z' + base58btc(new Uint8Array([0xed, 0x01, ...raw]));
}
