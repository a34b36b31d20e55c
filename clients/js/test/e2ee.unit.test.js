// The SDK's end-to-end encryption pieces that need no server: the ciphertext framing and the
// default hook of a client without a provider (placeholders, a typed refusal).
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { E2EEError, EndToEnd, HealthchatClient, decodeCiphertext, encodeCiphertext } from "../src/index.js";

/** A client that never connects (its WebSocket is never constructed). */
function offlineClient() {
  class NoSocket {
    constructor() {
      throw new Error("not used");
    }
  }
  return new HealthchatClient({ url: "ws://unused", getToken: async () => "t", WebSocket: /** @type {any} */ (NoSocket) });
}

/** @param {Partial<import("../src/client.js").Message>} fields @returns {import("../src/client.js").Message} */
function message(fields) {
  return {
    id: 1, conversation_id: 7, seq: 1, client_id: "c1", sender_id: 2, kind: "text", created_at: "2026-01-01T00:00:00Z",
    body: "", attachments: [], reply_to: null, edited_at: null, deleted: false, ...fields,
  };
}

describe("the SDK's ciphertext framing", () => {
  it("round-trips the sending device (beyond 32 bits), the message type and the bytes", () => {
    const body = new Uint8Array(70_000).map((_, i) => i % 251);
    const text = encodeCiphertext({ senderDeviceId: 2 ** 40 + 5, type: 3, body });
    const back = decodeCiphertext(text);
    assert.equal(back.senderDeviceId, 2 ** 40 + 5);
    assert.equal(back.type, 3);
    assert.deepEqual(back.body, body);
    assert.equal(decodeCiphertext(text.replace(/=+$/, "")).senderDeviceId, 2 ** 40 + 5, "padding optional");
  });

  it("refuses what is not in its format (another version, too short)", () => {
    assert.throws(() => decodeCiphertext(btoa("\x02" + "\0".repeat(12))), /format/);
    assert.throws(() => decodeCiphertext(btoa("\x01\0\0")), /format/);
  });
});

describe("a client without a crypto provider", () => {
  it("delivers encrypted messages as placeholders and leaves plaintext ones alone", async () => {
    const client = offlineClient();
    const hook = /** @type {EndToEnd} */ (client.e2ee);
    assert.ok(hook instanceof EndToEnd);
    const plain = message({ body: "hello" });
    assert.equal(await hook.open(plain), plain);
    const sealed = await hook.open(message({ conversation_id: 8, ciphertext: "AQAAAAAAAAAFAwAB" }));
    assert.deepEqual([sealed.body, sealed.encrypted, sealed.undecryptable], [null, true, "open_on_phone"]);
    const forNoDevice = await hook.open(message({ conversation_id: 8, seq: 2, ciphertext: null }));
    assert.equal(forNoDevice.undecryptable, "open_on_phone");
    const deleted = await hook.open(message({ conversation_id: 8, seq: 3, ciphertext: null, deleted: true }));
    assert.equal(deleted.undecryptable, undefined);
    // It has learnt that conversation 8 is encrypted: sending there is refused, nothing queued.
    await assert.rejects(client.send(8, "no"), (e) => e instanceof E2EEError && e.code === "e2ee_unavailable");
    assert.equal((await client.store.listOutbox()).length, 0);
    await client.send(7, "fine");
    assert.equal((await client.store.listOutbox()).length, 1);
  });
});
