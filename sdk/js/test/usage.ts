// The README's usage, type-checked against janus.d.ts (`tsc --noEmit -p sdk/js`).
import { connect, RequestError } from "../src/janus.js";

async function main(url: string, token: string, serverKey: string): Promise<void> {
  const session = await connect({ url, token, serverKey, resumable: true });
  const reply = await session.request(2, 1, new TextEncoder().encode("hello"), { obj: 0, timeoutMs: 5000 });
  const text: string = new TextDecoder().decode(reply.data);
  const index: number = reply.index;
  await session.send(2, 1, new Uint8Array([1, 2, 3]));
  session.addEventListener("push", (e) => {
    const mod: number = e.detail.mod;
    void mod;
  });
  session.addEventListener("close", (e) => {
    const reason: string = e.detail.reason;
    void reason;
  });
  session.addEventListener("reconnecting", (e) => void e.detail.attempt);
  session.addEventListener("resumed", (e) => void e.detail.startIndex);
  try {
    await session.request(6, 3);
  } catch (e) {
    if (e instanceof RequestError) void e.reason;
  }
  void text;
  void index;
  await session.close();
}

void main;
