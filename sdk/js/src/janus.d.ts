// Types of the Janus client SDK (janus.js). Checked by `tsc --noEmit` over test/usage.ts.

/** A packet as the SDK hands it out (PROTOCOL.md §2), its data inflated. */
export interface Packet {
  mod: number;
  seq: number;
  obj: number | bigint;
  /** The request's index for a reply, 0 for a push (PROTOCOL.md §5). */
  index: number;
  data: Uint8Array;
}

/** Limits the client applies (PROTOCOL.md §10). */
export interface Limits {
  maxFrame?: number;
  inflateCap?: number;
  compressThreshold?: number;
}

export interface ConnectOptions {
  /** A ws:// or wss:// URL of an edge's WebSocket listener (path `/ws`). */
  url?: string;
  /** Edges tried in turn by resumes (PROTOCOL.md §13.6); the first is where the login goes. */
  urls?: string[];
  /** The token from the auth service (Lares). */
  token: string;
  /** The edge's Ed25519 public key: an SPKI PEM string or its 32 raw bytes. */
  serverKey: string | Uint8Array;
  /** Ask for a resume ticket and resume by itself after a lost connection (PROTOCOL.md §13). */
  resumable?: boolean;
  /** `"v2"` (default) or `"legacy"` (go-pantheon v1; the edge must allow it). */
  mode?: "v2" | "legacy";
  serverId?: number;
  certVersion?: number;
  /** Resume by itself (default true; resumable sessions only). */
  reconnect?: boolean;
  heartbeatMs?: number;
  requestTimeoutMs?: number;
  handshakeTimeoutMs?: number;
  limits?: Limits;
  /** A WebSocket constructor, where there is no global one. */
  WebSocket?: typeof WebSocket;
}

export interface RequestOptions {
  obj?: number | bigint;
  timeoutMs?: number;
}

/** Why a session ended: a close reason of PROTOCOL.md §9, or `client_closed`, `resume_refused`, … */
export interface CloseDetail {
  reason: string;
  /** The `SCServerLogout` code's name, when the server logged the session out. */
  logout?: "Server" | "Waiting" | "Unauthorized" | "ConflictingLogin" | "AdminKickOut" | "Banned" | string;
  message?: string;
}

export interface ReconnectingDetail {
  attempt: number;
  url: string;
  /** `reconnect_hint` after the edge's drain hint (PROTOCOL.md §13.6), else how the connection was lost. */
  cause: string;
  /** The hint's reason, after one. */
  reason?: string;
}

export interface ResumedDetail {
  url: string;
  startIndex: number;
}

export interface UnexpectedErrorDetail {
  mod: number;
  seq: number;
  msg: string;
}

export interface SessionEventMap {
  push: CustomEvent<Packet>;
  close: CustomEvent<CloseDetail>;
  reconnecting: CustomEvent<ReconnectingDetail>;
  resumed: CustomEvent<ResumedDetail>;
  error: CustomEvent<UnexpectedErrorDetail>;
}

export declare class Session extends EventTarget {
  /** `connecting`, `open`, `resuming` or `closed`. */
  readonly state: "connecting" | "open" | "resuming" | "closed";
  /** The URL of the current connection. */
  readonly url: string;
  request(mod: number, seq: number, data?: Uint8Array, options?: RequestOptions): Promise<Packet>;
  send(mod: number, seq: number, data?: Uint8Array, options?: { obj?: number | bigint }): Promise<number>;
  close(): Promise<void>;
  addEventListener<K extends keyof SessionEventMap>(
    type: K,
    listener: (event: SessionEventMap[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
}

export declare function connect(options: ConnectOptions): Promise<Session>;

/**
 * A request that got no reply: the gateway answered `SCServerUnexpectedErr` (`reason`: its
 * message), it timed out (`"timeout"`), or the session ended first (`reason`: the close reason).
 * `request` and `send` also reject with a `ProtocolError` (`closed`, `frame_too_large`).
 */
export declare class RequestError extends Error {
  constructor(reason: string, mod: number, seq: number);
  readonly reason: string;
  readonly mod: number;
  readonly seq: number;
}

/** A protocol failure, with its close reason (PROTOCOL.md §9) or the SDK's own (`closed`, `login_refused`, `resume_refused`). */
export declare class ProtocolError extends Error {
  constructor(reason: string, detail?: string);
  readonly reason: string;
}

export declare const LOGOUT_CODES: readonly string[];
