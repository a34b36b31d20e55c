// End-to-end encryption through the SDK against a live server (started by
// tests/test_sdk_e2ee_live.py, which creates the users and their devices and passes them in HC_*
// variables). Real Signal protocol: the official @signalapp/libsignal-client (a devDependency of
// the repository root, injected into the SDK's provider, as an app would).
//
// A patient's phone and a doctor's phone register keys, open an encrypted conversation and talk
// both ways; the patient's outbox survives a lost ack and a network cut; the patient's tablet
// registers later (device.added, devices_mismatch repaired), is reinstalled (identity.changed);
// the doctor's prekeys are topped up on keys.low; a client without a provider (the browser's
// situation) gets placeholders and a typed error when it tries to send. The Python side then
// checks that the database holds only ciphertext.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as libsignal from "@signalapp/libsignal-client";
import { WebSocket } from "ws";
import {
  E2EEError,
  HealthchatClient,
  MemoryKeyStore,
  MemoryStore,
  attachE2EE,
  createLibsignalProvider,
  createRestClient,
  decodeCiphertext,
} from "../src/index.js";
import { Relay } from "../testing/relay.js";

/** @param {string} name */
function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run these tests through tests/test_sdk_e2ee_live.py`);
  return value;
}

const HTTP_URL = env("HC_HTTP_URL");
const WS_URL = env("HC_WS_URL");
const CANARY = env("HC_CANARY");
const PATIENT = { id: Number(env("HC_PATIENT_ID")), token: env("HC_PATIENT_TOKEN") };
const DOCTOR = { id: Number(env("HC_DOCTOR_ID")), token: env("HC_DOCTOR_TOKEN") };
const PATIENT_PHONE = Number(env("HC_PATIENT_PHONE"));
const PATIENT_TABLET = Number(env("HC_PATIENT_TABLET"));
const DOCTOR_PHONE = Number(env("HC_DOCTOR_PHONE"));

/** @param {number} ms */
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** @param {() => boolean} predicate @param {string} what @param {number} [timeoutMs] */
async function waitFor(predicate, what, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** @typedef {import("../src/client.js").AppMessage} AppMessage */

/**
 * An SDK client as an app builds it: REST + socket + end-to-end encryption (a libsignal provider
 * on its own key store, or none), recording what it hands to the app.
 * @param {{id: number, token: string}} user
 * @param {{deviceId?: number | null, provider?: boolean, url?: string, keys?: MemoryKeyStore, prekeyBatch?: number, attach?: boolean}} options
 */
function app(user, { deviceId = null, provider = true, url = WS_URL, keys = new MemoryKeyStore(), prekeyBatch = 20, attach = true } = {}) {
  const getToken = async () => user.token;
  const rest = createRestClient({ baseUrl: HTTP_URL, getToken });
  const client = new HealthchatClient({ url, getToken, WebSocket, deviceId, store: new MemoryStore() });
  const e2ee = attach
    ? attachE2EE(client, { rest, provider: provider ? createLibsignalProvider({ libsignal, store: keys }) : null, prekeyBatch })
    : null;
  /** @type {AppMessage[]} */
  const messages = [];
  /** @type {Error[]} */
  const errors = [];
  /** @type {{userId: number, deviceId: number}[]} */
  const identityChanges = [];
  /** @type {any[]} */
  const frames = [];
  client.on("message", (m) => messages.push(m));
  client.on("error", (e) => errors.push(e));
  client.on("identityChanged", (c) => identityChanges.push(c));
  client.on("frame", (f) => frames.push(f));
  return { client, rest, e2ee, keys, messages, errors, identityChanges, frames };
}

/** @param {AppMessage[]} messages @param {number} conversationId */
const texts = (messages, conversationId) =>
  messages.filter((m) => m.conversation_id === conversationId && m.kind === "text").map((m) => m.body);

/** @param {AppMessage[]} messages @param {number} conversationId */
function assertExactlyOnceInOrder(messages, conversationId) {
  const seqs = messages.filter((m) => m.conversation_id === conversationId).map((m) => m.seq);
  assert.equal(new Set(seqs).size, seqs.length, `duplicates: ${seqs.join(",")}`);
  for (let i = 1; i < seqs.length; i += 1) assert.ok(seqs[i] > seqs[i - 1], `out of order: ${seqs.join(",")}`);
}

describe("end-to-end encryption through the SDK", () => {
  /** @type {ReturnType<typeof app>[]} */
  const apps = [];
  /** @type {Relay[]} */
  const relays = [];
  let conversationId = 0;
  /** @type {ReturnType<typeof app>} */
  let patient;
  /** @type {ReturnType<typeof app>} */
  let doctor;
  /** @type {ReturnType<typeof app>} */
  let browser;
  /** @type {ReturnType<typeof app>} */
  let bare;
  /** @type {Relay} */
  let relay;

  before(async () => {
    relay = new Relay(WS_URL);
    relays.push(relay);
    patient = app(PATIENT, { deviceId: PATIENT_PHONE, url: await relay.listening() });
    // The doctor's prekey batch is small so that two bundle fetches bring keys.low.
    doctor = app(DOCTOR, { deviceId: DOCTOR_PHONE, prekeyBatch: 11 });
    // The doctor's browser: no provider (and no device keys), like the web console.
    browser = app(DOCTOR, { provider: false });
    // A client that never attached end-to-end encryption at all (the SDK's default hook).
    bare = app(DOCTOR, { attach: false });
    apps.push(patient, doctor, browser, bare);
    for (const a of apps) await a.client.connect();
    // Registration runs on ready; wait for it explicitly (an app may also call ensureKeys()).
    await Promise.all([patient, doctor].map((a) => /** @type {any} */ (a.e2ee).ensureKeys()));
  });

  after(async () => {
    for (const a of apps) a.client.close();
    for (const r of relays) await r.close();
  });

  it("registers each device's keys (identity, signed, one-time and Kyber prekeys) through the REST key directory", async () => {
    for (const [a, device, batch] of /** @type {const} */ ([[patient, PATIENT_PHONE, 20], [doctor, DOCTOR_PHONE, 11]])) {
      const count = await a.rest.GET("/api/v1/keys/count", { params: { query: { device_id: device } } });
      assert.deepEqual(count.data, { one_time_prekeys: batch, kyber_prekeys: batch });
      assert.equal(/** @type {any} */ (a.e2ee).stats.prekeyUploads, 1);
    }
  });

  it("opens an encrypted conversation and exchanges encrypted messages both ways, in order", async () => {
    const opened = await patient.rest.POST("/api/v1/conversations", { body: { peer_id: DOCTOR.id, e2ee: true } });
    assert.ok(opened.data, JSON.stringify(opened.error));
    assert.equal(opened.data.e2ee, true);
    conversationId = opened.data.id;

    const sent = [];
    for (let i = 1; i <= 3; i += 1) sent.push(await patient.client.send(conversationId, `${CANARY} patient ${i}`));
    const acked = await Promise.all(sent.map((s) => s.acked));
    assert.deepEqual(acked.map((m) => m.body), ["", "", ""], "the server holds no text");
    await waitFor(() => texts(doctor.messages, conversationId).length === 3, "the doctor's three messages");
    assert.deepEqual(texts(doctor.messages, conversationId), [1, 2, 3].map((i) => `${CANARY} patient ${i}`));
    assert.ok(doctor.messages.every((m) => m.encrypted === true && !m.undecryptable));
    // The patient's own timeline shows its text (its copy has no ciphertext: the SDK keeps the plaintext).
    await waitFor(() => texts(patient.messages, conversationId).length === 3, "the patient's own three messages");
    assert.deepEqual(texts(patient.messages, conversationId), [1, 2, 3].map((i) => `${CANARY} patient ${i}`));
    assert.equal(/** @type {any} */ (patient.e2ee).stats.sessionsStarted, 1);

    // What went over the wire is the SDK's format: version 1, the sending device, a PreKey message first.
    const history = await doctor.rest.GET("/api/v1/conversations/{conversation_id}/messages", {
      params: { path: { conversation_id: conversationId }, query: { device_id: DOCTOR_PHONE } },
    });
    const first = history.data?.results.find((m) => m.seq === acked[0].seq);
    assert.ok(first?.ciphertext);
    const framed = decodeCiphertext(first.ciphertext);
    assert.equal(framed.senderDeviceId, PATIENT_PHONE);
    assert.equal(framed.type, libsignal.CiphertextMessageType.PreKey);
    assert.ok(!Buffer.from(first.ciphertext, "base64").toString("latin1").includes(CANARY));

    for (let i = 1; i <= 2; i += 1) await (await doctor.client.send(conversationId, `${CANARY} doctor ${i}`)).acked;
    await waitFor(() => texts(patient.messages, conversationId).length === 5, "the patient's replies");
    assert.deepEqual(texts(patient.messages, conversationId).slice(3), [`${CANARY} doctor 1`, `${CANARY} doctor 2`]);
    assertExactlyOnceInOrder(patient.messages, conversationId);
    assertExactlyOnceInOrder(doctor.messages, conversationId);
  });

  it("keeps encrypted sends in the outbox across a lost ack and a network cut: delivered once, in order", async () => {
    relay.dropAcks = true;
    const lost = await patient.client.send(conversationId, `${CANARY} ack lost`);
    await waitFor(() => texts(doctor.messages, conversationId).includes(`${CANARY} ack lost`), "the stored message");
    relay.refuse = true;
    relay.dropAll();
    relay.dropAcks = false;
    const offline = [];
    for (let i = 1; i <= 3; i += 1) offline.push(await patient.client.send(conversationId, `${CANARY} offline ${i}`));
    assert.equal((await patient.client.store.listOutbox()).length, 4);
    await sleep(300);
    relay.refuse = false;
    await Promise.all([lost, ...offline].map((s) => s.acked));
    const expected = [`${CANARY} ack lost`, ...[1, 2, 3].map((i) => `${CANARY} offline ${i}`)];
    await waitFor(() => texts(doctor.messages, conversationId).length === 9, "the offline messages at the doctor");
    assert.deepEqual(texts(doctor.messages, conversationId).slice(5), expected);
    await waitFor(() => texts(patient.messages, conversationId).length === 9, "the patient's own offline messages");
    assert.deepEqual(texts(patient.messages, conversationId).slice(5), expected);
    assert.ok(patient.client.stats.connects >= 2);
    assert.equal((await patient.client.store.listOutbox()).length, 0);
    assertExactlyOnceInOrder(patient.messages, conversationId);
    assertExactlyOnceInOrder(doctor.messages, conversationId);
    assert.ok(doctor.messages.every((m) => !m.undecryptable));
  });

  it("adds a second device: device.added, devices_mismatch repaired, every device decrypts", async () => {
    const tabletKeys = new MemoryKeyStore();
    const tablet = app(PATIENT, { deviceId: PATIENT_TABLET, keys: tabletKeys });
    apps.push(tablet);
    await tablet.client.connect();
    await /** @type {any} */ (tablet.e2ee).ensureKeys();
    // The other devices hear of it.
    await waitFor(() => doctor.frames.some((f) => f.type === "device.added" && f.data.device_id === PATIENT_TABLET), "device.added at the doctor");
    await waitFor(() => patient.frames.some((f) => f.type === "device.added" && f.data.device_id === PATIENT_TABLET), "device.added at the phone");

    // The tablet knows none of its user's other devices: the server refuses with devices_mismatch,
    // the SDK fetches the phone's bundle and sends again.
    await (await tablet.client.send(conversationId, `${CANARY} from the tablet`)).acked;
    assert.equal(/** @type {any} */ (tablet.e2ee).stats.repaired, 1);
    await waitFor(() => texts(doctor.messages, conversationId).at(-1) === `${CANARY} from the tablet`, "the tablet's message at the doctor");
    await waitFor(() => texts(patient.messages, conversationId).at(-1) === `${CANARY} from the tablet`, "the tablet's message at the phone");

    // The doctor encrypts for both patient devices now.
    await (await doctor.client.send(conversationId, `${CANARY} to both devices`)).acked;
    for (const a of [patient, tablet]) {
      await waitFor(() => texts(a.messages, conversationId).at(-1) === `${CANARY} to both devices`, "the doctor's message on both devices");
    }
    // Messages from before the tablet had keys have nothing for it: placeholders, not failures.
    const older = tablet.messages.filter((m) => m.conversation_id === conversationId && m.seq < 10);
    assert.ok(older.length > 0);
    assert.ok(older.every((m) => m.body === null && m.undecryptable === "no_ciphertext"));
    assert.equal(tablet.errors.length, 0, tablet.errors.map(String).join("; "));

    // The doctor's one-time prekeys ran low (two fetches of 11): the SDK uploaded more on keys.low.
    await waitFor(() => doctor.frames.some((f) => f.type === "keys.low"), "keys.low");
    await waitFor(() => /** @type {any} */ (doctor.e2ee).stats.prekeyUploads === 2, "the top-up");
    const count = await doctor.rest.GET("/api/v1/keys/count", { params: { query: { device_id: DOCTOR_PHONE } } });
    assert.ok((count.data?.one_time_prekeys ?? 0) >= 11, JSON.stringify(count.data));

    // The tablet is reinstalled: a new identity key. The doctor hears identity.changed, drops the
    // session, starts a new one from the new bundle; the new install decrypts.
    tablet.client.close();
    const reinstalled = app(PATIENT, { deviceId: PATIENT_TABLET });
    apps.push(reinstalled);
    await reinstalled.client.connect();
    await /** @type {any} */ (reinstalled.e2ee).ensureKeys();
    await waitFor(() => doctor.identityChanges.some((c) => c.deviceId === PATIENT_TABLET), "identity.changed at the doctor");
    await waitFor(() => patient.identityChanges.some((c) => c.deviceId === PATIENT_TABLET), "identity.changed at the phone");
    await (await doctor.client.send(conversationId, `${CANARY} after the reinstall`)).acked;
    for (const a of [patient, reinstalled]) {
      await waitFor(() => texts(a.messages, conversationId).at(-1) === `${CANARY} after the reinstall`, "the message after the reinstall");
    }
    await (await patient.client.send(conversationId, `${CANARY} phone to the new tablet`)).acked;
    await waitFor(() => texts(reinstalled.messages, conversationId).at(-1) === `${CANARY} phone to the new tablet`, "the phone's message at the new tablet");
    // The new install also got, through its first sync, the message encrypted for the old one:
    // it cannot be decrypted (the old keys are gone) and shows as such, with a typed error.
    const forOldInstall = reinstalled.messages.filter((m) => m.undecryptable === "decrypt_failed");
    assert.deepEqual(forOldInstall.map((m) => m.body), [null]);
    assert.deepEqual(
      reinstalled.errors.map((e) => (e instanceof E2EEError ? e.code : String(e))),
      ["decrypt_failed"],
    );
    for (const a of [patient, doctor]) assert.equal(a.errors.filter((e) => e instanceof E2EEError).length, 0, a.errors.map(String).join("; "));
    assertExactlyOnceInOrder(doctor.messages, conversationId);
    assertExactlyOnceInOrder(patient.messages, conversationId);
  });

  it("shows a client without a provider (a browser) placeholders and refuses its sends with a typed error", async () => {
    for (const a of [browser, bare]) {
      await waitFor(() => a.messages.filter((m) => m.conversation_id === conversationId).length >= 13, "the messages at the provider-less client");
      const mine = a.messages.filter((m) => m.conversation_id === conversationId && m.kind === "text");
      assert.equal(mine.length, 13);
      for (const m of mine) {
        assert.equal(m.encrypted, true);
        assert.equal(m.body, null);
        assert.equal(m.undecryptable, "open_on_phone");
      }
      assertExactlyOnceInOrder(a.messages, conversationId);
    }
    await assert.rejects(browser.client.send(conversationId, "from the browser"), (error) => {
      assert.ok(error instanceof E2EEError);
      assert.equal(error.code, "e2ee_unavailable");
      return true;
    });
    assert.equal((await browser.client.store.listOutbox()).length, 0, "nothing queued");
  });
});
