// 200 SDK clients across server restarts (run by tests/test_sdk_restart_live.py, which starts the
// server, creates the users and restarts the server while this script's clients send).
//
// Run as `node test/restart.live.test.js` with HC_HTTP_URL, HC_WS_URL and HC_RESTART_USERS (a JSON
// file: [{patient: {id, token}, doctor: {id, token}}, ...]). It talks with the Python side by lines:
//   stdout `HC-PHASE sending`      every client is ready and sending: restart the server now
//   stdin  `restarted <epoch ms>`  the new server process answers since then
//   stdout `HC-PHASE reconnected`  every client is ready again (with its figures)
//   stdin  `stop`                  stop sending, drain, check, print `HC-RESULT {json}`
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { WebSocket } from "ws";
import { CloseError, HealthchatClient, MemoryStore, createRestClient } from "../src/index.js";

/** @param {string} name */
function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run this through tests/test_sdk_restart_live.py`);
  return value;
}

const HTTP_URL = env("HC_HTTP_URL");
const WS_URL = env("HC_WS_URL");
/** @type {{patient: {id: number, token: string}, doctor: {id: number, token: string}}[]} */
const PAIRS = JSON.parse(readFileSync(env("HC_RESTART_USERS"), "utf8"));
const SEND_EVERY_MS = Number(process.env.HC_SEND_EVERY_MS ?? 1000);
const WAIT_MS = 90_000;

/** @param {number} ms */
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** @param {() => boolean} predicate @param {string} what @param {number} [timeoutMs] */
async function waitFor(predicate, what, timeoutMs = WAIT_MS) {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** Lines from the Python side. */
const lines = createInterface({ input: process.stdin });
/** @type {string[]} */
const received = [];
/** @type {(() => void)[]} */
const lineWaiters = [];
lines.on("line", (line) => {
  received.push(line.trim());
  for (const wake of lineWaiters.splice(0)) wake();
});
/** @param {RegExp} pattern @returns {Promise<string>} */
async function nextLine(pattern) {
  for (;;) {
    const at = received.findIndex((l) => pattern.test(l));
    if (at >= 0) return received.splice(at, 1)[0];
    await new Promise((resolve) => lineWaiters.push(() => resolve(undefined)));
  }
}

/** @param {number[]} values @param {number} q */
function quantile(values, q) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] : NaN;
}

/** @typedef {import("../src/client.js").Message} Message */

/** One SDK client and what it saw. */
class Participant {
  /** @param {string} token @param {number} userId @param {number} conversationId */
  constructor(token, userId, conversationId) {
    this.userId = userId;
    this.conversationId = conversationId;
    this.client = new HealthchatClient({ url: WS_URL, getToken: async () => token, WebSocket, store: new MemoryStore() });
    /** @type {Message[]} delivered to the app, in order */
    this.delivered = [];
    /** @type {Promise<Message>[]} */
    this.acks = [];
    /** @type {Map<string, number>} how often each own client_id reached status "acked" */
    this.ackCounts = new Map();
    this.sent = 0;
    /** @type {number | null} when the socket was lost (ms) */
    this.lostAt = null;
    /** @type {number[]} socket lost → ready again (ms) */
    this.outages = [];
    /** @type {number | null} */
    this.readyAt = null;
    /** @type {string[]} */
    this.closeErrors = [];
    this.sending = false;
    this.client.on("message", (m) => {
      if (m.conversation_id === this.conversationId) this.delivered.push(m);
    });
    this.client.on("status", (s) => {
      if (s.status === "acked") this.ackCounts.set(s.clientId, (this.ackCounts.get(s.clientId) ?? 0) + 1);
    });
    this.client.on("error", (e) => {
      if (e instanceof CloseError) {
        this.closeErrors.push(e.name);
        if (this.lostAt === null) this.lostAt = Date.now();
      }
    });
    this.client.on("ready", () => {
      this.readyAt = Date.now();
      if (this.lostAt !== null) this.outages.push(this.readyAt - this.lostAt);
      this.lostAt = null;
    });
  }

  /** Send every SEND_EVERY_MS (± 50 %) until stopped; sends queue in the outbox while the server is down. */
  async sendLoop() {
    this.sending = true;
    await sleep(Math.random() * SEND_EVERY_MS);
    while (this.sending) {
      const { acked } = await this.client.send(this.conversationId, `${this.userId}:${++this.sent}`);
      this.acks.push(acked);
      await sleep(SEND_EVERY_MS * (0.5 + Math.random()));
    }
  }
}

describe("200 SDK clients across server restarts", () => {
  it("delivers every message exactly once, in order, after the clients reconnect on their own", async () => {
    // One conversation per pair, opened over REST (a few at a time).
    /** @type {number[]} */
    const conversations = [];
    for (let i = 0; i < PAIRS.length; i += 10) {
      const batch = PAIRS.slice(i, i + 10).map(async ({ patient, doctor }) => {
        const rest = createRestClient({ baseUrl: HTTP_URL, getToken: async () => patient.token });
        const opened = await rest.POST("/api/v1/conversations", { body: { peer_id: doctor.id } });
        assert.ok(opened.data, JSON.stringify(opened.error));
        return opened.data.id;
      });
      conversations.push(...(await Promise.all(batch)));
    }
    /** @type {Participant[]} */
    const everyone = [];
    PAIRS.forEach(({ patient, doctor }, i) => {
      everyone.push(new Participant(patient.token, patient.id, conversations[i]));
      everyone.push(new Participant(doctor.token, doctor.id, conversations[i]));
    });
    const started = Date.now();
    for (let i = 0; i < everyone.length; i += 20) await Promise.all(everyone.slice(i, i + 20).map((p) => p.client.connect()));
    await waitFor(() => everyone.every((p) => p.client.state === "ready"), "every client ready");
    console.log(`HC-INFO ${everyone.length} clients connected in ${Date.now() - started} ms`);
    const loops = everyone.map((p) => p.sendLoop());

    /** @type {{restart: number, reconnectP50: number, reconnectP99: number, outageP50: number, outageP99: number, closeErrors: Record<string, number>}[]} */
    const restarts = [];
    for (;;) {
      await sleep(2500); // messages in flight on every socket
      const before = everyone.map((p) => p.client.stats.connects);
      const errorsBefore = everyone.map((p) => p.closeErrors.length);
      console.log("HC-PHASE sending");
      const line = await nextLine(/^(restarted \d+|stop)$/);
      if (line === "stop") break;
      const serverUp = Number(line.split(" ")[1]);
      await waitFor(
        () => everyone.every((p, i) => p.client.stats.connects > before[i] && p.client.state === "ready"),
        "every client reconnected",
      );
      // From the new server answering to each client's ready.
      const sinceUp = everyone.map((p) => /** @type {number} */ (p.readyAt) - serverUp);
      const outages = everyone.map((p) => p.outages[p.outages.length - 1]);
      const figures = {
        restart: restarts.length + 1,
        reconnectP50: quantile(sinceUp, 0.5),
        reconnectP99: quantile(sinceUp, 0.99),
        outageP50: quantile(outages, 0.5),
        outageP99: quantile(outages, 0.99),
        /** @type {Record<string, number>} typed close errors the clients saw during this restart */
        closeErrors: {},
      };
      everyone.forEach((p, i) => {
        for (const name of p.closeErrors.slice(errorsBefore[i])) figures.closeErrors[name] = (figures.closeErrors[name] ?? 0) + 1;
      });
      restarts.push(figures);
      console.log(`HC-PHASE reconnected ${JSON.stringify(figures)}`);
    }

    // Drain: no new sends; every outbox item acked; every client caught up with its conversation.
    for (const p of everyone) p.sending = false;
    await Promise.all(loops);
    const acked = (await Promise.all(everyone.map((p) => Promise.all(p.acks)))).flat();
    /** @type {Map<number, number>} the highest seq acked per conversation */
    const top = new Map();
    for (const m of acked) top.set(m.conversation_id, Math.max(top.get(m.conversation_id) ?? 0, m.seq));
    await waitFor(
      () => everyone.every((p) => (p.delivered.at(-1)?.seq ?? 0) >= (top.get(p.conversationId) ?? 0)),
      "every client has delivered its conversation's last message",
    );
    await sleep(1000); // a duplicate would arrive now

    let deliveries = 0;
    for (const p of everyone) {
      assert.equal((await p.client.store.listOutbox()).length, 0, "the outbox is empty");
      for (const count of p.ackCounts.values()) assert.equal(count, 1, "each send acked once");
      assert.equal(p.ackCounts.size, p.sent, "every send acked");
      // In order, without a gap or a duplicate, from the conversation's first seq.
      const seqs = p.delivered.map((m) => m.seq);
      seqs.forEach((seq, i) => assert.equal(seq, seqs[0] + i, `client of user ${p.userId}: seqs ${seqs.slice(0, 40).join(",")}`));
      // Every message either side sent, acked, is delivered to both exactly once.
      const deliveredIds = new Set(p.delivered.map((m) => `${m.sender_id}:${m.client_id}`));
      assert.equal(deliveredIds.size, p.delivered.length);
      deliveries += p.delivered.length;
    }
    for (const m of acked) {
      for (const p of everyone.filter((q) => q.conversationId === m.conversation_id)) {
        assert.ok(p.delivered.some((d) => d.seq === m.seq && d.client_id === m.client_id), `seq ${m.seq} reached user ${p.userId}`);
      }
    }
    // Per sender, bodies are acked in the order they were written (n = 1, 2, 3...).
    for (const p of everyone) {
      const own = p.delivered
        .filter((m) => m.sender_id === p.userId && /^\d+:\d+$/.test(String(m.body)))
        .map((m) => Number(String(m.body).split(":")[1]));
      own.forEach((n, i) => assert.equal(n, i + 1, `user ${p.userId} sent in order`));
    }
    const result = {
      clients: everyone.length,
      messages: acked.length,
      deliveries,
      restarts,
      durationMs: Date.now() - started,
    };
    console.log(`HC-RESULT ${JSON.stringify(result)}`);
    for (const p of everyone) p.client.close();
    lines.close();
  });
});
