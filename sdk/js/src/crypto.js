// The cryptography of a Janus session, all in the platform's WebCrypto (`crypto.subtle`): the v2
// key schedule (PROTOCOL.md §3.1, §13.1, §13.3), the server signature check, frame protection
// (§4) for v2 and legacy, and the resume proof. (Unencrypted sessions, a development mode the
// token asks for, are not offered.) Runs unchanged in browsers, Node ≥ 20 and Deno.

const subtle = globalThis.crypto?.subtle;

/** Fails, saying why, where the platform has no WebCrypto. */
export function ensureWebCrypto() {
  if (!subtle) {
    throw new Error(
      "WebCrypto (crypto.subtle) is unavailable: browsers offer it only to secure contexts " +
        "(pages served over https://, or from localhost)",
    );
  }
}
const ascii = (s) => new TextEncoder().encode(s);

/** Concatenates byte arrays. */
export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export function be32(n) {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setInt32(0, n);
  return out;
}

export function be64(n) {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt.asUintN(64, BigInt(n)));
  return out;
}

export function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function fromHex(hex) {
  if (hex.length % 2 || /[^0-9a-fA-F]/.test(hex)) throw new TypeError("not hex");
  return Uint8Array.from(hex.match(/../g) ?? [], (h) => parseInt(h, 16));
}

async function sha256(...parts) {
  return new Uint8Array(await subtle.digest("SHA-256", concat(...parts)));
}

async function hkdf(salt, ikm, info, length) {
  const key = await subtle.importKey("raw", ikm, "HKDF", false, ["deriveBits"]);
  const bits = await subtle.deriveBits(
    { name: "HKDF", hash: "SHA-256", salt, info: ascii(info) },
    key,
    length * 8,
  );
  return new Uint8Array(bits);
}

/** PKCS#8 of an X25519 secret (RFC 8410), WebCrypto's only import form for one. */
const X25519_PKCS8 = fromHex("302e020100300506032b656e04220420");

/** An ephemeral X25519 key pair: a new one, or (tests) the one of a fixed 32-byte secret. */
export async function ephemeral(secret) {
  let privateKey;
  if (secret) {
    privateKey = await subtle.importKey("pkcs8", concat(X25519_PKCS8, secret), "X25519", true, [
      "deriveBits",
    ]);
  } else {
    ({ privateKey } = await subtle.generateKey("X25519", true, ["deriveBits"]));
  }
  const { x } = await subtle.exportKey("jwk", privateKey);
  return { privateKey, pub: fromBase64Url(x) };
}

/**
 * X25519 with the peer's 32-byte key; `null` for an all-zero result (a low-order point), which
 * WebCrypto either returns or refuses with an `OperationError` (the spec's choice, Node's and
 * Chromium's).
 */
export async function x25519(privateKey, peerPub) {
  const peer = await subtle.importKey("raw", peerPub, "X25519", false, []);
  let bits;
  try {
    bits = await subtle.deriveBits({ name: "X25519", public: peer }, privateKey, 256);
  } catch (e) {
    if (e?.name === "OperationError") return null;
    throw e;
  }
  const shared = new Uint8Array(bits);
  return shared.every((b) => b === 0) ? null : shared;
}

/**
 * The server's Ed25519 public key: a PEM `PUBLIC KEY` (SPKI, what `janus keygen` writes beside
 * the private key) or its 32 raw bytes.
 */
export async function serverVerifyKey(serverKey) {
  if (typeof serverKey === "string") {
    const body = serverKey.replace(/-----(BEGIN|END) PUBLIC KEY-----/g, "").replace(/\s+/g, "");
    const der = Uint8Array.from(atob(body), (c) => c.charCodeAt(0));
    return subtle.importKey("spki", der, "Ed25519", false, ["verify"]);
  }
  if (serverKey instanceof Uint8Array && serverKey.length === 32) {
    return subtle.importKey("raw", serverKey, "Ed25519", false, ["verify"]);
  }
  throw new TypeError("serverKey: an SPKI PEM string or 32 raw bytes");
}

export async function verify(key, signature, message) {
  if (signature.length !== 64) return false;
  return subtle.verify("Ed25519", key, signature, message);
}

function fromBase64Url(s) {
  const b64 = s.replace(/-/g, "+").replace(/_/g, "/");
  return Uint8Array.from(atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4)), (c) => c.charCodeAt(0));
}

/**
 * `th` (PROTOCOL.md §3.1): the login's transcript, binding `bound`, the token (a login) or the
 * lowercase hex of the presented ticket (a resume, §13.3).
 */
export function transcript(clientPub, serverPub, serverTimestamp, bound) {
  return sha256(ascii("janus-v2"), clientPub, serverPub, be64(serverTimestamp), ascii(bound));
}

/** `th_reply` (PROTOCOL.md §13.1). */
export function replyHash(th, { startIndex, resumeWindow, resumeTicket, resumed }) {
  return sha256(
    th,
    ascii("janus-v2 reply"),
    be32(startIndex),
    be32(resumeWindow),
    be32(resumeTicket.length),
    resumeTicket,
    Uint8Array.of(resumed ? 1 : 0),
  );
}

/** The v2 keys and IVs from `okm` (PROTOCOL.md §3.1). */
export async function sessionKeys(salt, shared) {
  const okm = await hkdf(salt, shared, "janus-v2 session keys", 88);
  return {
    c2sKey: okm.slice(0, 32),
    s2cKey: okm.slice(32, 64),
    c2sIv: okm.slice(64, 76),
    s2cIv: okm.slice(76, 88),
  };
}

/** The resume key (PROTOCOL.md §13.1): from `th` (or `th'`) and the shared secret. */
export function resumeKey(th, shared) {
  return hkdf(th, shared, "janus-v2 resume key", 32);
}

/** The resume proof (PROTOCOL.md §13.3). */
export async function resumeProof(key, ticket, pub, timestamp, received) {
  const hmac = await subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const message = concat(ascii("janus-v2 resume"), ticket, pub, be64(timestamp), be64(received));
  return new Uint8Array(await subtle.sign("HMAC", hmac, message));
}

/** A frame that does not open (PROTOCOL.md §4 `decrypt_failed`). */
export class DecryptError extends Error {
  constructor() {
    super("decrypt_failed");
    this.name = "DecryptError";
  }
}

const aes = (raw) => subtle.importKey("raw", raw, "AES-GCM", false, ["encrypt", "decrypt"]);
const MAX_COUNTER = (1n << 64n) - 1n;

/**
 * One direction of a v2 session (PROTOCOL.md §4): AES-256-GCM under `key`, nonces from `iv` and
 * a frame counter from 0, the frame's length header as additional data.
 */
export class V2Direction {
  static async create(key, iv) {
    return new V2Direction(await aes(key), iv);
  }
  constructor(key, iv) {
    this.key = key;
    this.iv = iv;
    this.counter = 0n;
  }
  nonce() {
    if (this.counter > MAX_COUNTER) throw new Error("nonce_exhausted");
    const nonce = Uint8Array.from(this.iv);
    const n = be64(this.counter);
    for (let i = 0; i < 8; i++) nonce[4 + i] ^= n[i];
    this.counter += 1n;
    return nonce;
  }
  /** The whole frame (header included) for packet bytes `plain`. */
  async seal(plain) {
    const header = be32(plain.length + 16);
    const nonce = this.nonce();
    const sealed = await subtle.encrypt({ name: "AES-GCM", iv: nonce, additionalData: header }, this.key, plain);
    return concat(header, new Uint8Array(sealed));
  }
  /** The packet bytes of a whole frame. */
  async open(frame) {
    const nonce = this.nonce();
    try {
      const plain = await subtle.decrypt(
        { name: "AES-GCM", iv: nonce, additionalData: frame.subarray(0, 4) },
        this.key,
        frame.subarray(4),
      );
      return new Uint8Array(plain);
    } catch {
      throw new DecryptError();
    }
  }
}

/** Legacy (go-pantheon v1, PROTOCOL.md §4): the raw shared secret as the key, random nonces on the wire. */
export class LegacyDirection {
  static async create(shared, nonces) {
    return new LegacyDirection(await aes(shared), nonces);
  }
  /** `nonces`: where 12-byte nonces come from (tests fix them); random by default. */
  constructor(key, nonces) {
    this.key = key;
    this.nonces = nonces ?? (() => globalThis.crypto.getRandomValues(new Uint8Array(12)));
  }
  async seal(plain) {
    const nonce = this.nonces();
    const sealed = new Uint8Array(await subtle.encrypt({ name: "AES-GCM", iv: nonce }, this.key, plain));
    return concat(be32(12 + sealed.length), nonce, sealed);
  }
  async open(frame) {
    if (frame.length < 4 + 12 + 16) throw new DecryptError();
    try {
      const plain = await subtle.decrypt({ name: "AES-GCM", iv: frame.subarray(4, 16) }, this.key, frame.subarray(16));
      return new Uint8Array(plain);
    } catch {
      throw new DecryptError();
    }
  }
}
