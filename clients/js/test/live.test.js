// The SDK against a live healthchat server (started by tests/test_sdk_live.py, which passes the
// server's URLs, tokens minted for its users and their ids in HC_* variables).
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { WebSocket } from "ws";
import {
  AuthenticationError,
  CLOSE_CODES,
  CloseError,
  ConnectionDroppedError,
  FloodError,
  ForbiddenError,
  HealthchatClient,
  MemoryStore,
  ProtocolError,
  ServerBusyError,
  closeError,
  createRestClient,
  tokenExpiry,
} from "../src/index.js";
import { Relay } from "../testing/relay.js";

/** @param {string} name */
function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run these tests through tests/test_sdk_live.py`);
  return value;
}

const HTTP_URL = env("HC_HTTP_URL");
const WS_URL = env("HC_WS_URL");
const PATIENT_TOKEN = env("HC_PATIENT_TOKEN");
const DOCTOR_TOKEN = env("HC_DOCTOR_TOKEN");
const PATIENT_SHORT_TOKEN = env("HC_PATIENT_SHORT_TOKEN");
const UNREGISTERED_TOKEN = env("HC_UNREGISTERED_TOKEN");
const PATIENT_ID = Number(env("HC_PATIENT_ID"));
const DOCTOR_ID = Number(env("HC_DOCTOR_ID"));

/** @param {number} ms */
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * @param {() => boolean} predicate @param {string} what @param {number} [timeoutMs]
 */
async function waitFor(predicate, what, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** @typedef {import("../src/client.js").AppMessage} Message */

/**
 * A client that records what it delivers to the app.
 * @param {string | ((o?: {forceRefresh?: boolean}) => Promise<string>)} token
 * @param {Partial<import("../src/client.js").ClientOptions>} [options]
 */
function recordingClient(token, options = {}) {
  const getToken = typeof token === "string" ? async () => token : token;
  const client = new HealthchatClient({ url: WS_URL, getToken, WebSocket, ...options });
  /** @type {Message[]} */
  const messages = [];
  /** @type {import("../src/client.js").StatusEvent[]} */
  const statuses = [];
  /** @type {Error[]} */
  const errors = [];
  client.on("message", (m) => messages.push(m));
  client.on("status", (s) => statuses.push(s));
  client.on("error", (e) => errors.push(e));
  return { client, messages, statuses, errors };
}

/** @param {Message[]} messages @param {number} conversationId */
const bodies = (messages, conversationId) =>
  messages.filter((m) => m.conversation_id === conversationId).map((m) => m.body ?? "");

/** @param {Message[]} messages @param {number} conversationId */
function assertGapless(messages, conversationId) {
  const seqs = messages.filter((m) => m.conversation_id === conversationId).map((m) => m.seq);
  for (let i = 1; i < seqs.length; i += 1) assert.equal(seqs[i], seqs[i - 1] + 1, `seqs ${seqs.join(",")}`);
}

describe("the SDK against a live server", () => {
  /** @type {number} */
  let conversationId;
  /** @type {HealthchatClient[]} */
  const open = [];
  /** @type {Relay[]} */
  const relays = [];

  after(async () => {
    for (const client of open) client.close();
    for (const relay of relays) await relay.close();
  });

  before(async () => {
    // REST through the generated client: who am I, then open the direct conversation.
    const rest = createRestClient({ baseUrl: HTTP_URL, getToken: async () => PATIENT_TOKEN });
    const me = await rest.GET("/api/v1/me");
    assert.equal(me.response.status, 200);
    assert.equal(me.data?.id, PATIENT_ID);
    const opened = await rest.POST("/api/v1/conversations", { body: { peer_id: DOCTOR_ID } });
    assert.ok(opened.data, JSON.stringify(opened.error));
    assert.ok([200, 201].includes(opened.response.status));
    conversationId = opened.data.id;
  });

  it("refreshes the token with auth.refresh before it expires, on the same socket", async () => {
    let calls = 0;
    const patient = recordingClient(async () => (calls++ === 0 ? PATIENT_SHORT_TOKEN : PATIENT_TOKEN));
    open.push(patient.client);
    await patient.client.connect();
    // The short token lives 10 s from its minting: past its exp the socket would be closed with 4401.
    const exp = tokenExpiry(PATIENT_SHORT_TOKEN);
    assert.ok(exp);
    await sleep(Math.max(0, exp * 1000 - Date.now()) + 1500);
    assert.equal(patient.client.stats.refreshes, 1);
    assert.equal(patient.client.stats.connects, 1);
    assert.equal(patient.errors.length, 0, patient.errors.map(String).join("; "));
    const pong = await patient.client.request("ping");
    assert.equal(pong.type, "pong");
    patient.client.close();
  });

  it("answers typed REST errors through the generated client", async () => {
    const rest = createRestClient({ baseUrl: HTTP_URL, getToken: async () => PATIENT_TOKEN });
    const missing = await rest.GET("/api/v1/conversations/{conversation_id}", {
      params: { path: { conversation_id: 999_999_999 } },
    });
    assert.equal(missing.response.status, 404);
    assert.equal(missing.error?.error.code, "conversation_not_found");
    const listed = await rest.GET("/api/v1/conversations");
    assert.ok(listed.data?.results.some((c) => c.id === conversationId));
  });

  it("connects, authenticates, sends with acks and the other side receives exactly once, in order", async () => {
    const patient = recordingClient(PATIENT_TOKEN);
    const doctor = recordingClient(DOCTOR_TOKEN);
    open.push(patient.client, doctor.client);
    const ready = await patient.client.connect();
    assert.equal(ready.user_id, PATIENT_ID);
    assert.equal((await doctor.client.connect()).user_id, DOCTOR_ID);
    await waitFor(() => doctor.client.state === "ready" && patient.client.state === "ready", "both ready");

    /** @type {{clientId: string, acked: Promise<Message>}[]} */
    const sends = [];
    for (const body of ["one", "two", "three"]) sends.push(await patient.client.send(conversationId, body));
    const acked = await Promise.all(sends.map((s) => s.acked));
    assert.deepEqual(acked.map((m) => m.body), ["one", "two", "three"]);
    for (const { clientId } of sends) {
      assert.deepEqual(
        patient.statuses.filter((s) => s.clientId === clientId).map((s) => s.status),
        ["pending", "acked"],
      );
    }
    await waitFor(() => bodies(doctor.messages, conversationId).length >= 3, "the doctor's copies");
    await sleep(300);
    assert.deepEqual(bodies(doctor.messages, conversationId), ["one", "two", "three"]);
    assertGapless(doctor.messages, conversationId);
    // The sender's own timeline has them once too (from the acks).
    assert.deepEqual(bodies(patient.messages, conversationId), ["one", "two", "three"]);
    assert.equal((await patient.client.store.listOutbox()).length, 0);

    // Receipts move the sender's statuses: delivered, then read.
    const last = acked[2];
    await doctor.client.markDelivered(conversationId, last.seq);
    await waitFor(() => patient.statuses.some((s) => s.clientId === sends[2].clientId && s.status === "delivered"), "delivered");
    await doctor.client.markRead(conversationId, last.seq);
    await waitFor(() => patient.statuses.some((s) => s.clientId === sends[2].clientId && s.status === "read"), "read");
    assert.deepEqual(
      patient.statuses.filter((s) => s.clientId === sends[0].clientId).map((s) => s.status),
      ["pending", "acked", "delivered", "read"],
    );
    patient.client.close();
    doctor.client.close();
  });

  it("delivers the outbox exactly once, in order, after a forced disconnect, and syncs what it missed", async () => {
    const relay = new Relay(WS_URL);
    relays.push(relay);
    const relayUrl = await relay.listening();
    const store = new MemoryStore();
    const patient = recordingClient(PATIENT_TOKEN, { url: relayUrl, store });
    const doctor = recordingClient(DOCTOR_TOKEN);
    open.push(patient.client, doctor.client);
    await patient.client.connect();
    await doctor.client.connect();
    await waitFor(() => patient.client.state === "ready" && doctor.client.state === "ready", "both ready");
    const cursorBefore = await store.getCursor();
    assert.ok(cursorBefore, "a cursor is stored after the first sync");
    const doctorSeen = bodies(doctor.messages, conversationId).length;

    // First a send whose ack is lost on the way, then the network goes down.
    relay.dropAcks = true;
    const lostAck = await patient.client.send(conversationId, "ack lost");
    await waitFor(() => doctor.messages.some((m) => m.body === "ack lost"), "the server stored it");
    relay.refuse = true;
    relay.dropAll();
    relay.dropAcks = false;
    await waitFor(() => patient.client.state === "connecting", "the client notices");

    // Offline: the patient writes, the doctor writes too.
    /** @type {{clientId: string, acked: Promise<Message>}[]} */
    const offline = [];
    for (let i = 1; i <= 5; i += 1) offline.push(await patient.client.send(conversationId, `offline ${i}`));
    assert.equal((await store.listOutbox()).length, 6);
    for (const body of ["while you were away 1", "while you were away 2"]) {
      await (await doctor.client.send(conversationId, body)).acked;
    }
    await sleep(300); // a few failed reconnect attempts
    assert.ok(patient.errors.some((e) => e instanceof ConnectionDroppedError));
    relay.refuse = false;

    const acked = await Promise.all([lostAck, ...offline].map((s) => s.acked));
    assert.equal(acked[0].body, "ack lost");
    await waitFor(() => bodies(doctor.messages, conversationId).length >= doctorSeen + 8, "the doctor's copies");
    await sleep(300);
    assert.deepEqual(bodies(doctor.messages, conversationId).slice(doctorSeen), [
      "ack lost",
      "while you were away 1",
      "while you were away 2",
      "offline 1",
      "offline 2",
      "offline 3",
      "offline 4",
      "offline 5",
    ]);
    // The patient got the doctor's two messages through sync, once each, and its timeline is gapless.
    const patientBodies = bodies(patient.messages, conversationId);
    assert.equal(patientBodies.filter((b) => b.startsWith("while you were away")).length, 2);
    assert.equal(new Set(patient.messages.map((m) => `${m.conversation_id}:${m.seq}`)).size, patient.messages.length);
    assertGapless(patient.messages, conversationId);
    assertGapless(doctor.messages, conversationId);
    assert.ok(patient.client.stats.connects >= 2);
    assert.notEqual(await store.getCursor(), cursorBefore, "the cursor moved with the sync after reconnect");
    assert.equal((await store.listOutbox()).length, 0);
    patient.client.close();
    doctor.client.close();
  });

  it("fills a seq gap in the live path with a sync, delivering in order", async () => {
    const relay = new Relay(WS_URL);
    relays.push(relay);
    const patient = recordingClient(PATIENT_TOKEN, { url: await relay.listening() });
    const doctor = recordingClient(DOCTOR_TOKEN);
    open.push(patient.client, doctor.client);
    await patient.client.connect();
    await doctor.client.connect();
    await waitFor(() => patient.client.state === "ready" && doctor.client.state === "ready", "both ready");
    const seen = bodies(patient.messages, conversationId).length;
    const syncs = patient.client.stats.syncs;
    let dropped = 0; // only the live copy: the sync's replay of it must pass
    relay.dropIf = (frame) =>
      frame.type === "message.new" && frame.data.message.body === "lost on the live path" && dropped++ === 0;
    await (await doctor.client.send(conversationId, "lost on the live path")).acked;
    await (await doctor.client.send(conversationId, "after the gap")).acked;
    await waitFor(() => bodies(patient.messages, conversationId).length >= seen + 2, "both messages");
    await sleep(300);
    assert.deepEqual(bodies(patient.messages, conversationId).slice(seen), ["lost on the live path", "after the gap"]);
    assertGapless(patient.messages, conversationId);
    assert.ok(patient.client.stats.syncs > syncs, "the gap started a sync");
    patient.client.close();
    doctor.client.close();
  });

  it("sends an outbox kept in the store by an earlier client (a restart) exactly once", async () => {
    const store = new MemoryStore();
    const before = recordingClient(PATIENT_TOKEN, { store });
    await before.client.send(conversationId, "written before the restart 1");
    await before.client.send(conversationId, "written before the restart 2");
    assert.deepEqual(before.statuses.map((s) => s.status), ["pending", "pending"]);
    // The app restarts: a new client on the same store.
    const doctor = recordingClient(DOCTOR_TOKEN);
    const after = recordingClient(PATIENT_TOKEN, { store });
    open.push(doctor.client, after.client);
    await doctor.client.connect();
    await waitFor(() => doctor.client.state === "ready", "the doctor ready");
    const seen = bodies(doctor.messages, conversationId).length;
    const restored = await after.client.restoreOutbox();
    assert.equal(restored.length, 2);
    await after.client.connect();
    const acked = await Promise.all(restored.map((item) => item.acked));
    assert.deepEqual(acked.map((m) => m.body), ["written before the restart 1", "written before the restart 2"]);
    await waitFor(() => bodies(doctor.messages, conversationId).length >= seen + 2, "the doctor's copies");
    await sleep(300);
    assert.deepEqual(bodies(doctor.messages, conversationId).slice(seen), [
      "written before the restart 1",
      "written before the restart 2",
    ]);
    assert.equal((await store.listOutbox()).length, 0);
    doctor.client.close();
    after.client.close();
  });

  it("surfaces bad server frames as typed errors and loses nothing", async () => {
    const relay = new Relay(WS_URL);
    relays.push(relay);
    const patient = recordingClient(PATIENT_TOKEN, { url: await relay.listening() });
    const doctor = recordingClient(DOCTOR_TOKEN);
    open.push(patient.client, doctor.client);
    await patient.client.connect();
    await doctor.client.connect();
    await waitFor(() => patient.client.state === "ready" && doctor.client.state === "ready", "both ready");
    const before = patient.messages.length;
    relay.inject("this is not json");
    relay.inject(JSON.stringify({ type: "no.such.frame", data: {} }));
    relay.inject(JSON.stringify({ type: "message.new", data: { message: { body: "no seq" } } }));
    await (await doctor.client.send(conversationId, "after the garbage")).acked;
    await waitFor(() => patient.messages.some((m) => m.body === "after the garbage"), "the message after bad frames");
    const protocolErrors = patient.errors.filter((e) => e instanceof ProtocolError);
    assert.equal(protocolErrors.length, 3);
    assert.equal(patient.client.stats.connects, 1, "the socket stayed open");
    assert.equal(patient.messages.length, before + 1);
    patient.client.close();
    doctor.client.close();
  });

  it("recovers a message whose live frame arrived unreadable: a typed error, then a sync brings it once", async () => {
    const relay = new Relay(WS_URL);
    relays.push(relay);
    const patient = recordingClient(PATIENT_TOKEN, { url: await relay.listening() });
    const doctor = recordingClient(DOCTOR_TOKEN);
    open.push(patient.client, doctor.client);
    await patient.client.connect();
    await doctor.client.connect();
    await waitFor(() => patient.client.state === "ready" && doctor.client.state === "ready", "both ready");
    const seen = bodies(patient.messages, conversationId).length;
    const syncs = patient.client.stats.syncs;
    /** @type {Set<string>} */
    const spoiled = new Set();
    relay.rewrite = (frame, text) => {
      const body = frame.type === "message.new" ? frame.data.message.body : null;
      if (body === "cut short" && !spoiled.has(body)) {
        spoiled.add(body);
        return text.slice(0, -7); // not JSON any more
      }
      if (body === "without its seq" && !spoiled.has(body)) {
        spoiled.add(body);
        delete frame.data.message.seq; // JSON, but not a message the SDK can place
        return JSON.stringify(frame);
      }
      return text;
    };
    await (await doctor.client.send(conversationId, "cut short")).acked;
    await (await doctor.client.send(conversationId, "without its seq")).acked;
    await waitFor(() => bodies(patient.messages, conversationId).length >= seen + 2, "both messages");
    await sleep(300);
    assert.equal(spoiled.size, 2, "both live frames were spoiled on the way");
    assert.deepEqual(bodies(patient.messages, conversationId).slice(seen), ["cut short", "without its seq"]);
    assertGapless(patient.messages, conversationId);
    assert.equal(patient.errors.filter((e) => e instanceof ProtocolError).length, 2);
    assert.ok(patient.client.stats.syncs > syncs, "the unreadable frames started a sync");
    assert.equal(patient.client.stats.connects, 1, "the socket stayed open");
    patient.client.close();
    doctor.client.close();
  });

  it("closes the socket with 4429 when the client floods it: a FloodError, then a reconnect", async () => {
    const patient = recordingClient(PATIENT_TOKEN);
    open.push(patient.client);
    await patient.client.connect();
    await waitFor(() => patient.client.state === "ready", "ready");
    const ws = /** @type {import("../src/client.js").WebSocketLike} */ (patient.client.ws);
    for (let i = 0; i < 200; i += 1) ws.send(JSON.stringify({ type: "ping", ref: `flood-${i}` }));
    await waitFor(() => patient.errors.some((e) => e instanceof FloodError), "the flood close");
    await waitFor(() => patient.client.stats.connects === 2 && patient.client.state === "ready", "the reconnect");
    const flood = /** @type {FloodError} */ (patient.errors.find((e) => e instanceof FloodError));
    assert.equal(flood.code, 4429);
    assert.equal(flood.willReconnect, true);
    patient.client.close();
  });

  it("maps every close code to its typed error, reconnects after each but 4403, and loses no message", async () => {
    const relay = new Relay(WS_URL);
    relays.push(relay);
    const store = new MemoryStore();
    const patient = recordingClient(PATIENT_TOKEN, { url: await relay.listening(), store });
    const doctor = recordingClient(DOCTOR_TOKEN);
    open.push(patient.client, doctor.client);
    await patient.client.connect();
    await doctor.client.connect();
    await waitFor(() => patient.client.state === "ready" && doctor.client.state === "ready", "both ready");
    const seen = bodies(doctor.messages, conversationId).length;
    const codes = CLOSE_CODES.filter((code) => code !== 4403);
    for (const code of codes) {
      const connects = patient.client.stats.connects;
      const errorsBefore = patient.errors.length;
      if (code === 1013) {
        relay.inject(JSON.stringify({ type: "error", error: { code: "server_busy", message: "busy", retry_after_ms: 200 } }));
      }
      relay.closeAll(code, `closed by the test (${code})`);
      // Written while the socket is down: sent after the reconnect.
      const sent = await patient.client.send(conversationId, `after close ${code}`);
      await waitFor(() => patient.client.stats.connects > connects && patient.client.state === "ready", `the reconnect after ${code}`);
      await sent.acked;
      const error = patient.errors.slice(errorsBefore).find((e) => e instanceof CloseError);
      assert.ok(error instanceof CloseError, `a CloseError after ${code}`);
      assert.equal(error.constructor, closeError(code, "", null).constructor, `${code} → ${error.name}`);
      assert.notEqual(error.constructor, ConnectionDroppedError, `${code} has its own class`);
      assert.equal(error.code, code);
      assert.equal(error.willReconnect, true);
      if (code === 1013) {
        assert.ok(error instanceof ServerBusyError);
        assert.equal(error.lastError?.code, "server_busy");
      }
    }
    // 4403: never reconnects; what the app writes afterwards stays in the outbox, not lost.
    const errorsBefore = patient.errors.length;
    relay.closeAll(4403, "closed by the test (4403)");
    await waitFor(() => patient.client.state === "closed", "the client gives up");
    const forbidden = patient.errors.slice(errorsBefore).find((e) => e instanceof ForbiddenError);
    assert.ok(forbidden instanceof ForbiddenError);
    assert.equal(forbidden.willReconnect, false);
    const kept = await patient.client.send(conversationId, "after close 4403");
    await sleep(500);
    assert.equal(patient.client.state, "closed");
    assert.deepEqual((await store.listOutbox()).map((i) => i.clientId), [kept.clientId]);
    // The app signs in again (a new client on the same store): the outbox goes out once.
    const again = recordingClient(PATIENT_TOKEN, { store });
    open.push(again.client);
    const [restored] = await again.client.restoreOutbox();
    await again.client.connect();
    await restored.acked;
    const expected = [...codes.map((code) => `after close ${code}`), "after close 4403"];
    await waitFor(() => bodies(doctor.messages, conversationId).length >= seen + expected.length, "the doctor's copies");
    await sleep(300);
    assert.deepEqual(bodies(doctor.messages, conversationId).slice(seen), expected);
    assertGapless(doctor.messages, conversationId);
    assert.equal((await store.listOutbox()).length, 0);
    again.client.close();
    doctor.client.close();
  });

  it("maps close codes to typed errors: 4403 never reconnects, 4401 is retried once with a fresh token", async () => {
    const stranger = recordingClient(UNREGISTERED_TOKEN);
    await assert.rejects(stranger.client.connect(), (error) => {
      assert.ok(error instanceof ForbiddenError);
      assert.equal(error.code, 4403);
      assert.equal(error.lastError?.code, "not_registered");
      assert.equal(error.willReconnect, false);
      return true;
    });
    assert.equal(stranger.client.state, "closed");

    let asked = 0;
    const bad = recordingClient(async () => {
      asked += 1;
      return "not-a-token";
    });
    await assert.rejects(bad.client.connect(), (error) => {
      assert.ok(error instanceof AuthenticationError);
      assert.equal(error.code, 4401);
      assert.equal(error.lastError?.code, "invalid_token");
      return true;
    });
    assert.equal(asked, 2, "one retry with forceRefresh, then it gives up");
  });
});
