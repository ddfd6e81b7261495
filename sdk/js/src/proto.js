// The protobuf messages a client exchanges with Janus (PROTOCOL.md §2, §3, §7), encoded and
// decoded by hand: proto3 rules, fields written in number order and left out at their
// defaults, as every other implementation does, so frames match the test vectors byte for byte.
// Hand-written because the messages are few and fixed and the SDK has no runtime dependency
// (no protobuf library can be installed where it is built and tested: no npm registry).
//
// Integers: int32 as Number; int64/uint64 as Number when safe, else BigInt (both accepted when
// encoding).

const WIRE_VARINT = 0;
const WIRE_LEN = 2;
const MASK_64 = (1n << 64n) - 1n;

/** A message that does not decode (PROTOCOL.md §9 `malformed_packet`). */
export class DecodeError extends Error {
  constructor(what) {
    super(`malformed protobuf: ${what}`);
    this.name = "DecodeError";
  }
}

class Writer {
  constructor() {
    this.bytes = [];
  }
  varint(value) {
    let v = BigInt.asUintN(64, BigInt(value));
    do {
      let byte = Number(v & 0x7fn);
      v >>= 7n;
      if (v) byte |= 0x80;
      this.bytes.push(byte);
    } while (v);
  }
  tag(field, wire) {
    this.varint((field << 3) | wire);
  }
  int(field, value) {
    if (value === undefined || value === null || value === 0 || value === 0n) return;
    this.tag(field, WIRE_VARINT);
    this.varint(value);
  }
  bool(field, value) {
    if (!value) return;
    this.tag(field, WIRE_VARINT);
    this.varint(1);
  }
  raw(field, bytes) {
    if (!bytes || bytes.length === 0) return;
    this.tag(field, WIRE_LEN);
    this.varint(bytes.length);
    for (const b of bytes) this.bytes.push(b);
  }
  string(field, value) {
    if (value) this.raw(field, new TextEncoder().encode(value));
  }
  finish() {
    return Uint8Array.from(this.bytes);
  }
}

/** Splits `bytes` into fields: a Map from field number to the last value seen. */
function fields(bytes) {
  const out = new Map();
  let at = 0;
  const varint = () => {
    let result = 0n;
    let shift = 0n;
    for (;;) {
      if (at >= bytes.length) throw new DecodeError("truncated varint");
      const b = bytes[at++];
      result |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) return result & MASK_64;
      shift += 7n;
      if (shift >= 70n) throw new DecodeError("varint too long");
    }
  };
  while (at < bytes.length) {
    const key = varint();
    const field = Number(key >> 3n);
    const wire = Number(key & 7n);
    if (field === 0) throw new DecodeError("field 0");
    switch (wire) {
      case WIRE_VARINT:
        out.set(field, varint());
        break;
      case WIRE_LEN: {
        const len = Number(varint());
        if (at + len > bytes.length) throw new DecodeError("truncated field");
        out.set(field, bytes.subarray(at, at + len));
        at += len;
        break;
      }
      case 1:
        if (at + 8 > bytes.length) throw new DecodeError("truncated fixed64");
        at += 8;
        break;
      case 5:
        if (at + 4 > bytes.length) throw new DecodeError("truncated fixed32");
        at += 4;
        break;
      default:
        throw new DecodeError(`wire type ${wire}`);
    }
  }
  return out;
}

const int32 = (f, n) => (typeof f.get(n) === "bigint" ? Number(BigInt.asIntN(32, f.get(n))) : 0);
const int64 = (f, n) => {
  const v = f.get(n);
  if (typeof v !== "bigint") return 0;
  const s = BigInt.asIntN(64, v);
  return Number.isSafeInteger(Number(s)) ? Number(s) : s;
};
const uint64 = (f, n) => {
  const v = f.get(n);
  if (typeof v !== "bigint") return 0;
  return Number.isSafeInteger(Number(v)) ? Number(v) : v;
};
const bool = (f, n) => typeof f.get(n) === "bigint" && f.get(n) !== 0n;
const bytesOf = (f, n) => (f.get(n) instanceof Uint8Array ? Uint8Array.from(f.get(n)) : new Uint8Array(0));
const stringOf = (f, n) => {
  const v = f.get(n);
  if (!(v instanceof Uint8Array)) return "";
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(v);
  } catch {
    throw new DecodeError(`field ${n} is not UTF-8`);
  }
};

/** `packet.Packet` (PROTOCOL.md §2). */
export function encodePacket(p) {
  const w = new Writer();
  w.raw(1, p.data);
  w.int(2, p.dataVersion);
  w.int(3, p.obj);
  w.int(4, p.mod);
  w.int(5, p.seq);
  w.int(6, p.ver);
  w.int(7, p.index);
  w.int(8, p.connId);
  w.int(9, p.fragId);
  w.int(10, p.fragCount);
  w.int(11, p.fragIndex);
  w.bool(20, p.compress);
  return w.finish();
}

export function decodePacket(bytes) {
  const f = fields(bytes);
  return {
    data: bytesOf(f, 1),
    dataVersion: uint64(f, 2),
    obj: int64(f, 3),
    mod: int32(f, 4),
    seq: int32(f, 5),
    ver: int32(f, 6),
    index: int32(f, 7),
    connId: int32(f, 8),
    fragId: int32(f, 9),
    fragCount: int32(f, 10),
    fragIndex: int32(f, 11),
    compress: bool(f, 20),
  };
}

/** `message.CSHandshake` (PROTOCOL.md §3, §13.3). */
export function encodeCSHandshake(h) {
  const w = new Writer();
  w.raw(1, h.pub);
  w.raw(2, h.sign);
  w.string(3, h.token);
  w.int(4, h.serverId);
  w.int(5, h.timestamp);
  w.int(6, h.certVersion);
  w.int(7, h.version);
  w.bool(8, h.resumable);
  w.raw(9, h.resumeTicket);
  w.int(10, h.resumeReceived);
  w.raw(11, h.resumeProof);
  return w.finish();
}

/** `message.SCHandshake` (PROTOCOL.md §3, §13.1, §13.3). */
export function decodeSCHandshake(bytes) {
  const f = fields(bytes);
  return {
    pub: bytesOf(f, 1),
    sign: bytesOf(f, 2),
    timestamp: int64(f, 3),
    certVersion: int32(f, 4),
    startIndex: int32(f, 5),
    resumeTicket: bytesOf(f, 6),
    resumeWindow: int32(f, 7),
    resumed: bool(f, 8),
  };
}

/** `message.CSHeartbeat`. */
export function encodeCSHeartbeat(clientTime) {
  const w = new Writer();
  w.int(1, clientTime);
  return w.finish();
}

/** `message.CSResumeAck` (PROTOCOL.md §13.2). */
export function encodeCSResumeAck(received) {
  const w = new Writer();
  w.int(1, received);
  return w.finish();
}

/** `message.SCServerUnexpectedErr`. */
export function decodeSCServerUnexpectedErr(bytes) {
  const f = fields(bytes);
  return { mod: int32(f, 1), seq: int32(f, 2), msg: stringOf(f, 3) };
}

/** `message.SCServerLogout`. */
export function decodeSCServerLogout(bytes) {
  return { code: int32(fields(bytes), 1) };
}

/** `message.SCReconnect` (PROTOCOL.md §13.6). */
export function decodeSCReconnect(bytes) {
  return { reason: stringOf(fields(bytes), 1) };
}
