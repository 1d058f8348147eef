#!/usr/bin/env python3
"""An independent verifier of orderlog's Merkle proofs and signed checkpoints, written from
RFC 9162 (section 2.1.3.2, inclusion; 2.1.4.2, consistency) with the standard library, and
Ed25519 (RFC 8032) signatures checked with the `cryptography` package.

Reads a JSON array of checks on stdin and writes a JSON array of verdicts (true when the
proof or signature holds), one per check, in order:

  {"kind": "inclusion", "index": I, "size": N, "leaf": HEX, "proof": [HEX...], "root": HEX}
  {"kind": "consistency", "old_size": M, "new_size": N, "old_root": HEX,
   "new_root": HEX, "proof": [HEX...]}
  {"kind": "checkpoint", "public_key": HEX, "checkpoint": {"tree_size": N, "root_hash": HEX,
   "time": RFC3339, "key_id": HEX, "signature": HEX}}

`leaf` is the leaf hash (SHA-256 of 0x00 and the leaf's data). A checkpoint's signature
covers the text "orderlog checkpoint v1", then tree_size, root_hash, time and key_id, each
on its own line ending in a newline; key_id is the first 8 bytes of the SHA-256 of the
public key, hex.
"""

import hashlib
import json
import sys


def node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_inclusion(index, size, leaf, proof, root):
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(old_size, new_size, old_root, new_root, proof):
    if old_size > new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof
    if old_size & (old_size - 1) == 0:
        proof = [old_root] + proof
    if not proof:
        return False
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node(c, fr)
            sr = node(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


def verify_checkpoint(public_key, cp):
    # Imported here: proofs need only the standard library.
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if cp["key_id"] != hashlib.sha256(public_key).hexdigest()[:16]:
        return False
    text = "orderlog checkpoint v1\n%d\n%s\n%s\n%s\n" % (cp["tree_size"], cp["root_hash"], cp["time"], cp["key_id"])
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(bytes.fromhex(cp["signature"]), text.encode())
        return True
    except (InvalidSignature, ValueError):
        return False


def check(c):
    h = bytes.fromhex
    if c["kind"] == "checkpoint":
        return verify_checkpoint(h(c["public_key"]), c["checkpoint"])
    proof = [h(p) for p in c["proof"]]
    if c["kind"] == "inclusion":
        return verify_inclusion(c["index"], c["size"], h(c["leaf"]), proof, h(c["root"]))
    if c["kind"] == "consistency":
        return verify_consistency(c["old_size"], c["new_size"], h(c["old_root"]), h(c["new_root"]), proof)
    raise ValueError("unknown check kind: %r" % c["kind"])


if __name__ == "__main__":
    json.dump([check(c) for c in json.load(sys.stdin)], sys.stdout)
