// Identity strings (docs/protocol.md, "Identity strings"): the canonical form is the letter
// "b" followed by RFC 4648 base32, lower case, unpadded, of the libp2p protobuf
// encoding of the public key. For Ed25519 that is 08 01 12 20 ‖ key(32).

const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567';
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

/** base64url without padding (RFC 4648 §5), as the protocol wants signatures. */
export function base64url(bytes) {
  let binary = '';
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** Canonical identity of a raw 32-byte Ed25519 public key. */
export function identityFromRawKey(raw) {
  const key = new Uint8Array(raw);
  if (key.length !== 32) throw new Error(`an Ed25519 public key has 32 bytes, not ${key.length}`);
  return 'b' + base32Lower(new Uint8Array([...ED25519_PREFIX, ...key]));
}

/** Canonical identity of a WebCrypto Ed25519 public key (public keys always export). */
export async function identityOf(publicKey) {
  return identityFromRawKey(await crypto.subtle.exportKey('raw', publicKey));
}
