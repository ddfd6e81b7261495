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

from cryptography.exceptions import InvalidTag
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

    # Session resume (§13). A v2 login that asks for a ticket: the ticket is sealed under the
    # deployment's ticket key; the reply is signed over the reply hash, which binds the ticket,
    # the window and start_index; the session keys come from the reply hash, the resume key
    # from th.
    def reply_hash(base, start_index, window, ticket, resumed):
        return hashlib.sha256(base + b"janus-v2 reply" + struct.pack(">i", start_index) + struct.pack(">i", window)
                              + struct.pack(">I", len(ticket)) + ticket + bytes([1 if resumed else 0])).digest()

    def session_keys(salt, ikm):
        okm = HKDF(algorithm=hashes.SHA256(), length=88, salt=salt, info=b"janus-v2 session keys").derive(ikm)
        return {"c2s": (okm[0:32], okm[64:76]), "s2c": (okm[32:64], okm[76:88])}

    def check_frames(name, frames, keys):
        for f in frames:
            key, iv = keys[f["direction"]]
            nonce = bytes(a ^ b for a, b in zip(iv, b"\0\0\0\0" + struct.pack(">Q", f["counter"])))
            plain = h(f["packet_bytes"])
            header = struct.pack(">I", len(plain) + 16)
            label = f"{name} {f['direction']} {f['counter']} ({f['note']})"
            c.eq(f"{label} frame", header + AESGCM(key).encrypt(nonce, plain, header), h(f["frame"]))
            try:
                opened = AESGCM(key).decrypt(nonce, h(f["frame"])[4:], header)
            except InvalidTag:
                opened = None
            c.eq(f"{label} opens", opened, plain)
            p = parse_proto(plain)
            want = f["packet"]
            c.eq(f"{label} packet", (p.get(4, 0), p.get(5, 0), p.get(3, 0), p.get(7, 0), p.get(1, b"")),
                 (want["mod"], want["seq"], want["obj"], want["index"], h(want["data"])))
            if "data_utf8" in want:
                c.eq(f"{label} data", p.get(1, b"").decode(), want["data_utf8"])

    ticket_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"janus edge resume ticket v2").derive(h(inp["server_signing_key_seed"]))
    rl = v["resumable_login"]
    c.eq("ticket key", ticket_key, h(rl["ticket_key"]))

    def check_ticket(name, ticket, nonce):
        c.eq(f"{name} nonce", ticket[:12], nonce)
        plain = struct.pack(">q", rl["ticket_uid"]) + rl["ticket_broker"].encode()
        c.eq(f"{name} sealed", ticket[12:], AESGCM(ticket_key).encrypt(nonce, plain, None))
        opened = AESGCM(ticket_key).decrypt(ticket[:12], ticket[12:], None)
        c.eq(f"{name} uid", struct.unpack(">q", opened[:8])[0], inp["token_claims"]["account_id"])
        c.eq(f"{name} broker", opened[8:].decode(), rl["ticket_broker"])

    ticket = h(rl["ticket"])
    check_ticket("ticket", ticket, h(rl["ticket_nonce"]))
    hello = parse_proto(parse_proto(unframe(h(rl["client_hello_frame"]))[1])[1])
    c.eq("resumable hello.pub", hello.get(1), client_pub)
    c.eq("resumable hello.token", hello.get(3, b"").decode(), inp["token"])
    c.eq("resumable hello.version", hello.get(7), 2)
    c.eq("resumable hello.resumable", hello.get(8), 1)
    c.eq("resumable login th (as a login without a ticket)", th, h(rl["transcript_hash"]))
    login_th = reply_hash(th, inp["start_index"], rl["window_secs"], ticket, False)
    c.eq("resumable login reply hash", login_th, h(rl["reply_hash"]))
    c.eq("resumable login signature", server_sk.sign(login_th), h(rl["server_signature"]))
    reply = parse_proto(parse_proto(unframe(h(rl["server_reply_frame"]))[1])[1])
    c.eq("resumable reply.pub", reply.get(1), server_pub)
    c.eq("resumable reply.sign", reply.get(2), server_sk.sign(login_th))
    c.eq("resumable reply.timestamp", reply.get(3), inp["server_timestamp"])
    c.eq("resumable reply.start_index", reply.get(5), inp["start_index"])
    c.eq("resumable reply.resume_ticket", reply.get(6), ticket)
    c.eq("resumable reply.resume_window", reply.get(7), rl["window_secs"])
    c.eq("resumable reply.resumed absent", reply.get(8), None)
    login_keys = session_keys(login_th, shared)
    for d in ("c2s", "s2c"):
        c.eq(f"resumable login {d} key", login_keys[d][0], h(rl[d]["key"]))
        c.eq(f"resumable login {d} iv", login_keys[d][1], h(rl[d]["iv"]))
    resume_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=th, info=b"janus-v2 resume key").derive(shared)
    c.eq("resume key", resume_key, h(rl["resume_key"]))
    check_frames("resumable login", rl["frames"], login_keys)
    # The index rule: 1, then the CSResumeAck (System seq 5) takes 2, the lost request 3.
    c2s = [parse_proto(h(f["packet_bytes"])) for f in rl["frames"] if f["direction"] == "c2s"]
    c.eq("login client indices", [p.get(7) for p in c2s], [1, 2, 3])
    c.eq("CSResumeAck mod/seq", (c2s[1].get(4), c2s[1].get(5)), (1, 5))

    # The resume: the proof, the hello, th' binding the ticket, the next resume key from th',
    # the reply signed over the reply hash (start_index, next ticket, window, resumed), fresh
    # keys from it.
    r = v["resume"]
    c.eq("resume ticket is the login's", h(r["ticket"]), ticket)
    c.eq("resume key (again)", h(r["resume_key"]), resume_key)
    eph_c = X25519PrivateKey.from_private_bytes(h(r["client_ephemeral_secret"]))
    eph_s = X25519PrivateKey.from_private_bytes(h(r["server_ephemeral_secret"]))
    pub_c = eph_c.public_key().public_bytes(*RAW)
    pub_s = eph_s.public_key().public_bytes(*RAW)
    received = sum(1 for f in rl["frames"] if f["direction"] == "s2c")
    c.eq("resume received", r["received"], received)
    c.eq("CSResumeAck.received", parse_proto(c2s[1][1]).get(1), r["received"])
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
    next_ticket = h(r["next_ticket"])
    check_ticket("next ticket", next_ticket, h(r["next_ticket_nonce"]))
    c.eq("next ticket differs", next_ticket != ticket, True)
    # start_index: the next index the server expects, after the ack (2) it took.
    c.eq("resume start_index", r["start_index"], c2s[1].get(7) + 1)
    new_reply_th = reply_hash(new_th, r["start_index"], r["window_secs"], next_ticket, True)
    c.eq("resume reply hash", new_reply_th, h(r["reply_hash"]))
    c.eq("resume signature", server_sk.sign(new_reply_th), h(r["server_signature"]))
    _, payload = unframe(h(r["server_reply_frame"]))
    reply = parse_proto(parse_proto(payload)[1])
    c.eq("resume reply.pub", reply.get(1), pub_s)
    c.eq("resume reply.sign", reply.get(2), server_sk.sign(new_reply_th))
    c.eq("resume reply.timestamp", reply.get(3), r["server_timestamp"])
    c.eq("resume reply.start_index", reply.get(5), r["start_index"])
    c.eq("resume reply.resume_ticket", reply.get(6), next_ticket)
    c.eq("resume reply.resume_window", reply.get(7), r["window_secs"])
    c.eq("resume reply.resumed", reply.get(8), 1)
    new_keys = session_keys(new_reply_th, new_shared)
    for d in ("c2s", "s2c"):
        c.eq(f"resume {d} key", new_keys[d][0], h(r[d]["key"]))
        c.eq(f"resume {d} iv", new_keys[d][1], h(r[d]["iv"]))
    next_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=new_th, info=b"janus-v2 resume key").derive(new_shared)
    c.eq("next resume key (from th')", next_key, h(r["next_resume_key"]))
    check_frames("resume", r["frames"], new_keys)
    s2c = [f for f in r["frames"] if f["direction"] == "s2c"]
    c.eq("replay counters", [f["counter"] for f in s2c], [0, 1])
    resent = [f for f in r["frames"] if f["direction"] == "c2s"]
    lost = rl["frames"][-1]
    c.eq("re-sent request: the same packet, original index", resent[0]["packet_bytes"], lost["packet_bytes"])
    c.eq("re-sent request: index is start_index", parse_proto(h(resent[0]["packet_bytes"])).get(7), r["start_index"])
    c.eq("re-sent request: a new frame", resent[0]["frame"] != lost["frame"], True)
    bye = parse_proto(h(resent[1]["packet_bytes"]))
    c.eq("CSBye", (bye.get(4), bye.get(5), bye.get(7), bye.get(1, b"")), (1, 6, r["start_index"] + 1, b""))

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
