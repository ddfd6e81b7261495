#!/usr/bin/env python3
"""Checks handshake.json against an independent implementation of PROTOCOL.md.

Written from the spec alone, in another language, with another crypto library (pyca
`cryptography`) and a minimal protobuf reader of its own, so that a mistake shared by the Rust
implementation and its own test cannot hide. Run: python3 verify.py [handshake.json]
Exit status 0 and "N passed, 0 failed" when every check holds.
"""
import base64
import hashlib
import hmac
import json
import pathlib
import struct
import sys

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw


def read_varint(buf, i):
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, i


def parse_proto(buf):
    """Field number -> value (int for varints, bytes for length-delimited); last one wins."""
    fields, i = {}, 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = read_varint(buf, i)
        elif wire == 2:
            n, i = read_varint(buf, i)
            value, i = bytes(buf[i:i + n]), i + n
        else:
            raise ValueError(f"unexpected wire type {wire}")
        fields[number] = value
    return fields


def signed(v):
    return v - (1 << 64) if v >= 1 << 63 else v


def unframe(frame):
    (length,) = struct.unpack(">I", frame[:4])
    assert length == len(frame) - 4, "frame length header"
    return frame[:4], frame[4:]


class Checks:
    def __init__(self):
        self.passed = self.failed = 0

    def eq(self, name, got, want):
        if got == want:
            self.passed += 1
        else:
            self.failed += 1
            print(f"FAIL {name}: got {got!r}, want {want!r}")


def main():
    path = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).with_name("handshake.json"))
    v = json.loads(path.read_text())
    h = bytes.fromhex
    inp, v2, legacy = v["inputs"], v["v2"], v["legacy"]
    c = Checks()

    # Token: AES-256-GCM under the token key, nonce in front, padded URL-safe base64.
    wire = base64.urlsafe_b64decode(inp["token"])
    c.eq("token nonce", wire[:12], h(inp["token_nonce"]))
    claims = AESGCM(h(inp["token_key"])).decrypt(wire[:12], wire[12:], None)
    c.eq("token plaintext", claims, h(inp["token_claims_bytes"]))
    fields = parse_proto(claims)
    want = inp["token_claims"]
    c.eq("claims.rand", fields.get(1, b"").decode(), want["rand"])
    c.eq("claims.color", fields.get(2, b"").decode(), want["color"])
    c.eq("claims.account_id", signed(fields.get(3, 0)), want["account_id"])
    c.eq("claims.server_id", signed(fields.get(4, 0)), want["server_id"])
    c.eq("claims.timeout", signed(fields.get(5, 0)), want["timeout"])
    c.eq("claims.status", fields.get(7, 0), want["status"])

    # Keys.
    server_sk = Ed25519PrivateKey.from_private_bytes(h(inp["server_signing_key_seed"]))
    c.eq("server public key", server_sk.public_key().public_bytes(*RAW), h(inp["server_public_key"]))
    client_eph = X25519PrivateKey.from_private_bytes(h(v2["client_ephemeral_secret"]))
    server_eph = X25519PrivateKey.from_private_bytes(h(v2["server_ephemeral_secret"]))
    client_pub = client_eph.public_key().public_bytes(*RAW)
    server_pub = server_eph.public_key().public_bytes(*RAW)
    c.eq("client public", client_pub, h(v2["client_public"]))
    c.eq("server public", server_pub, h(v2["server_public"]))
    shared = client_eph.exchange(X25519PublicKey.from_public_bytes(server_pub))
    c.eq("shared (server side)", server_eph.exchange(X25519PublicKey.from_public_bytes(client_pub)), shared)
    c.eq("shared secret", shared, h(v2["shared_secret"]))

    # Hello frame: plaintext Packet{mod=1, seq=1, data=CSHandshake}.
    _, payload = unframe(h(v2["client_hello_frame"]))
    packet = parse_proto(payload)
    c.eq("hello mod/seq", (packet.get(4), packet.get(5)), (1, 1))
    hello = parse_proto(packet[1])
    c.eq("hello.pub", hello.get(1), client_pub)
    c.eq("hello.token", hello.get(3, b"").decode(), inp["token"])
    c.eq("hello.timestamp", hello.get(5), inp["client_timestamp"])
    c.eq("hello.cert_version", hello.get(6), inp["cert_version"])
    c.eq("hello.version", hello.get(7), 2)

    # Transcript, signature, reply frame.
    th = hashlib.sha256(b"janus-v2" + client_pub + server_pub + struct.pack(">q", inp["server_timestamp"]) + inp["token"].encode()).digest()
    c.eq("transcript hash", th, h(v2["transcript_hash"]))
    c.eq("server signature", server_sk.sign(th), h(v2["server_signature"]))
    _, payload = unframe(h(v2["server_reply_frame"]))
    packet = parse_proto(payload)
    c.eq("reply mod/seq", (packet.get(4), packet.get(5)), (1, 1))
    reply = parse_proto(packet[1])
    c.eq("reply.pub", reply.get(1), server_pub)
    c.eq("reply.sign", reply.get(2), server_sk.sign(th))
    c.eq("reply.timestamp", reply.get(3), inp["server_timestamp"])
    c.eq("reply.cert_version", reply.get(4), inp["cert_version"])
    c.eq("reply.start_index", reply.get(5), inp["start_index"])

    # HKDF and the per-direction keys.
    okm = HKDF(algorithm=hashes.SHA256(), length=88, salt=th, info=b"janus-v2 session keys").derive(shared)
    keys = {"c2s": (okm[0:32], okm[64:76]), "s2c": (okm[32:64], okm[76:88])}
    for d in ("c2s", "s2c"):
        c.eq(f"{d} key", keys[d][0], h(v2[d]["key"]))
        c.eq(f"{d} iv", keys[d][1], h(v2[d]["iv"]))

    # v2 frames: counter nonce, header as AAD, no nonce on the wire.
    for f in v2["frames"]:
        key, iv = keys[f["direction"]]
        nonce = bytes(a ^ b for a, b in zip(iv, b"\0\0\0\0" + struct.pack(">Q", f["counter"])))
        plain = h(f["packet_bytes"])
        header = struct.pack(">I", len(plain) + 16)
        c.eq(f"v2 {f['direction']} frame", header + AESGCM(key).encrypt(nonce, plain, header), h(f["frame"]))
        p = parse_proto(plain)
        want = f["packet"]
        c.eq(f"v2 {f['direction']} packet", (p.get(4), p.get(5), p.get(3), p.get(7), p.get(1, b"").decode()),
             (want["mod"], want["seq"], want["obj"], want["index"], want["data_utf8"]))

    # Legacy: raw shared secret as key, signature over the server pub, random nonce in front.
    c.eq("legacy key", h(legacy["key"]), shared)
    c.eq("legacy signature", server_sk.sign(server_pub), h(legacy["server_signature"]))
    hello = parse_proto(parse_proto(unframe(h(legacy["client_hello_frame"]))[1])[1])
    c.eq("legacy hello version absent", hello.get(7), None)
    reply = parse_proto(parse_proto(unframe(h(legacy["server_reply_frame"]))[1])[1])
    c.eq("legacy reply.sign", reply.get(2), server_sk.sign(server_pub))
    for f in legacy["frames"]:
        _, payload = unframe(h(f["frame"]))
        c.eq(f"legacy {f['direction']} nonce", payload[:12], h(f["nonce"]))
        p = parse_proto(AESGCM(shared).decrypt(payload[:12], payload[12:], None))
        c.eq(f"legacy {f['direction']} packet data", p.get(1, b"").decode(), f["packet"]["data_utf8"])

    # Session resume (§13): the resume key of the v2 handshake, the proof, the new transcript
    # binding the ticket, the reply naming the next ticket, and fresh keys.
    r = v["resume"]
    resume_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=th, info=b"janus-v2 resume key").derive(shared)
    c.eq("resume key", resume_key, h(r["resume_key"]))
    eph_c = X25519PrivateKey.from_private_bytes(h(r["client_ephemeral_secret"]))
    eph_s = X25519PrivateKey.from_private_bytes(h(r["server_ephemeral_secret"]))
    pub_c = eph_c.public_key().public_bytes(*RAW)
    pub_s = eph_s.public_key().public_bytes(*RAW)
    ticket = h(r["ticket"])
    c.eq("ticket length", len(ticket), 24)
    proof = hmac.new(resume_key, b"janus-v2 resume" + ticket + pub_c + struct.pack(">q", r["client_timestamp"]) + struct.pack(">Q", r["received"]), hashlib.sha256).digest()
    c.eq("resume proof", proof, h(r["proof"]))
    _, payload = unframe(h(r["client_hello_frame"]))
    packet = parse_proto(payload)
    c.eq("resume hello mod/seq", (packet.get(4), packet.get(5)), (1, 1))
    hello = parse_proto(packet[1])
    c.eq("resume hello.pub", hello.get(1), pub_c)
    c.eq("resume hello.token absent", hello.get(3), None)
    c.eq("resume hello.timestamp", hello.get(5), r["client_timestamp"])
    c.eq("resume hello.version", hello.get(7), 2)
    c.eq("resume hello.resumable", hello.get(8), 1)
    c.eq("resume hello.resume_ticket", hello.get(9), ticket)
    c.eq("resume hello.resume_received", hello.get(10), r["received"])
    c.eq("resume hello.resume_proof", hello.get(11), proof)
    new_shared = eph_c.exchange(X25519PublicKey.from_public_bytes(pub_s))
    new_th = hashlib.sha256(b"janus-v2" + pub_c + pub_s + struct.pack(">q", r["server_timestamp"]) + ticket.hex().encode()).digest()
    c.eq("resume transcript hash", new_th, h(r["transcript_hash"]))
    _, payload = unframe(h(r["server_reply_frame"]))
    reply = parse_proto(parse_proto(payload)[1])
    c.eq("resume reply.pub", reply.get(1), pub_s)
    c.eq("resume reply.sign", reply.get(2), server_sk.sign(new_th))
    c.eq("resume reply.timestamp", reply.get(3), r["server_timestamp"])
    c.eq("resume reply.start_index", reply.get(5), r["start_index"])
    c.eq("resume reply.resume_ticket", reply.get(6), h(r["next_ticket"]))
    c.eq("resume reply.resume_window", reply.get(7), r["window_secs"])
    c.eq("resume reply.resumed", reply.get(8), 1)
    okm = HKDF(algorithm=hashes.SHA256(), length=88, salt=new_th, info=b"janus-v2 session keys").derive(new_shared)
    new_keys = {"c2s": (okm[0:32], okm[64:76]), "s2c": (okm[32:64], okm[76:88])}
    for d in ("c2s", "s2c"):
        c.eq(f"resume {d} key", new_keys[d][0], h(r[d]["key"]))
        c.eq(f"resume {d} iv", new_keys[d][1], h(r[d]["iv"]))
    next_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=new_th, info=b"janus-v2 resume key").derive(new_shared)
    c.eq("next resume key", next_key, h(r["next_resume_key"]))
    for f in r["frames"]:
        key, iv = new_keys[f["direction"]]
        nonce = bytes(a ^ b for a, b in zip(iv, b"\0\0\0\0" + struct.pack(">Q", f["counter"])))
        plain = h(f["packet_bytes"])
        header = struct.pack(">I", len(plain) + 16)
        c.eq(f"resume {f['direction']} frame", header + AESGCM(key).encrypt(nonce, plain, header), h(f["frame"]))

    # Token keys (§6): a raw key file is the key's bytes (less one line end), a hex one its
    # digits; AES-GCM of the key's size; every token opens to the same claims.
    for t in v["token_keys"]:
        key = t["file"].encode() if t["format"] == "raw" else h(t["file"].strip())
        name = f"token key {t['format']} {t['file']!r}"
        c.eq(f"{name} bytes", key, h(t["key"]))
        c.eq(f"{name} AES size", len(key) * 8, t["aes_bits"])
        wire = base64.urlsafe_b64decode(t["token"])
        c.eq(f"{name} nonce", wire[:12], h(inp["token_nonce"]))
        c.eq(f"{name} plaintext", AESGCM(key).decrypt(wire[:12], wire[12:], None), h(inp["token_claims_bytes"]))

    # Key files: the server key as PKCS#8 v1 (RFC 8410: version 0, no public key attached),
    # which pyca/cryptography (like OpenSSL 3.0) loads; v2 it refuses.
    pem = v["key_files"]["server_signing_key_pkcs8_pem"].encode()
    loaded = serialization.load_pem_private_key(pem, password=None)
    c.eq("PKCS#8 key's public key", loaded.public_key().public_bytes(*RAW), h(inp["server_public_key"]))
    der = loaded.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    body = b"".join(base64.b64decode(line) for line in pem.decode().splitlines() if not line.startswith("-----"))
    c.eq("PKCS#8 v1 bytes", body, der)
    c.eq("PKCS#8 v1 layout", body, bytes.fromhex("302e020100300506032b657004220420") + h(inp["server_signing_key_seed"]))

    print(f"vectors: {c.passed} passed, {c.failed} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
