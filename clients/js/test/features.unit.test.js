// The feature modules' logic without a server (run with the live suite by
// tests/test_sdk_features_live.py, or alone: node --test test/features.unit.test.js): typing
// throttle, idle stop and expiry; receipt statuses and unread counts; the timeline's merge; group
// frames' checks; REST error typing.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { HealthchatClient, ReceiptTracker, RestError, Timeline, TypingIndicator, frameProblem } from "../src/index.js";

/** @param {number} ms */
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A client that is never connected: its events are emitted by the test; frames it would send are recorded. */
function offlineClient(userId = 7) {
  const client = new HealthchatClient({ url: "ws://unused", getToken: async () => "t", WebSocket: /** @type {any} */ (class {}) });
  client.session = { user_id: userId, device_id: null, reconnect: { min_ms: 1, max_ms: 2 } };
  /** @type {Array<{type: string, data: any}>} */
  const sent = [];
  client.notify = (type, data) => {
    sent.push({ type, data });
  };
  client.markDelivered = async (conversationId, seq) => {
    sent.push({ type: "message.delivered", data: { conversation_id: conversationId, seq } });
    return { data: { delivered_seq: seq } };
  };
  return { client, sent };
}

/** @param {Partial<import("../src/client.js").Message>} fields @returns {import("../src/client.js").Message} */
function message(fields) {
  return /** @type {any} */ ({
    id: 1, conversation_id: 42, seq: 1, client_id: "c", sender_id: 9, kind: "text", created_at: "2026-01-01T00:00:00Z",
    body: "hi", attachments: [], reply_to: null, edited_at: null, deleted: false, ...fields,
  });
}

describe("TypingIndicator", () => {
  it("sends one active frame per resend period, a stop after idle, and nothing when asked to stop twice", async () => {
    const { client, sent } = offlineClient();
    const typing = new TypingIndicator(client, { resendMs: 10_000, idleMs: 80 });
    for (let i = 0; i < 20; i += 1) typing.notify(42);
    assert.deepEqual(sent, [{ type: "typing", data: { conversation_id: 42, active: true } }]);
    await sleep(150);
    assert.deepEqual(sent.at(-1), { type: "typing", data: { conversation_id: 42, active: false } });
    typing.stop(42);
    assert.equal(sent.length, 2);
    typing.close();
  });

  it("tracks typers: added, refreshed, dropped on stop, on their message, on expiry and on a lost socket", async () => {
    const { client } = offlineClient();
    const typing = new TypingIndicator(client, { expireMs: 60 });
    /** @type {number[][]} */
    const changes = [];
    typing.on("change", (c) => changes.push(c.userIds));
    /** @param {number} userId @param {boolean} active */
    const frame = (userId, active) => client.emit("frame", /** @type {any} */ ({ type: "typing", data: { conversation_id: 42, user_id: userId, active } }));
    frame(9, true);
    frame(9, true); // a refresh is not a change
    frame(10, true);
    assert.deepEqual(typing.typers(42), [9, 10]);
    frame(9, false);
    client.emit("message", message({ sender_id: 10 }));
    assert.deepEqual(changes, [[9], [9, 10], [10], []]);
    frame(11, true);
    await sleep(120);
    assert.deepEqual(typing.typers(42), [], "expired");
    frame(12, true);
    client.emit("state", "connecting");
    assert.deepEqual(typing.typers(42), [], "cleared on a lost socket");
    typing.close();
  });
});

describe("ReceiptTracker", () => {
  it("derives statuses from every other member's cursors and the unread count from the own read cursor", async () => {
    const { client, sent } = offlineClient(7);
    const tracker = new ReceiptTracker(client, /** @type {any} */ (null), { deliveredDelayMs: 10 });
    tracker.apply(/** @type {any} */ ({
      id: 42, read_seq: 3, delivered_seq: 3, last_seq: 5,
      members: [
        { user_id: 7, delivered_seq: 3, read_seq: 3 },
        { user_id: 9, delivered_seq: 5, read_seq: 4 },
        { user_id: 10, delivered_seq: 4, read_seq: 2 },
        { user_id: 11, delivered_seq: null, read_seq: null }, // hidden by a block: ignored
      ],
    }));
    assert.equal(tracker.unreadCount(42), 2);
    assert.equal(tracker.statusOf(42, 2), "read");
    assert.equal(tracker.statusOf(42, 3), "delivered");
    assert.equal(tracker.statusOf(42, 5), "sent", "user 10 has not received seq 5");
    /** @type {Array<number | null>} */
    const changed = [];
    tracker.on("change", (c) => changed.push(c.userId));
    client.emit("receipt", { conversation_id: 42, user_id: 10, read_seq: 5 });
    assert.equal(tracker.statusOf(42, 5), "delivered", "reading implies delivery; user 9 has not read 5");
    assert.deepEqual(tracker.cursors(42).get(10), { deliveredSeq: 4, readSeq: 5 });
    client.emit("message", message({ seq: 6, sender_id: 7 }));
    assert.equal(tracker.unreadCount(42), 0, "an own message moves the own read cursor");
    client.emit("message", message({ seq: 7, sender_id: 9 }));
    assert.equal(tracker.unreadCount(42), 1);
    await sleep(50);
    assert.deepEqual(sent, [{ type: "message.delivered", data: { conversation_id: 42, seq: 7 } }], "one automatic delivered receipt");
    client.emit("receipt", { conversation_id: 42, user_id: 7, read_seq: 7 }); // read on another device
    assert.equal(tracker.unreadCount(42), 0);
    assert.deepEqual(changed, [10, 7, null, 7]);
    tracker.close();
  });
});

describe("Timeline", () => {
  it("keeps one entry per seq and never lets an older page undo an edit or a deletion", () => {
    const { client } = offlineClient();
    const timeline = new Timeline(client, /** @type {any} */ (null), 42);
    client.emit("message", message({ id: 1, seq: 1 }));
    client.emit("message", message({ id: 2, seq: 2 }));
    client.emit("messageUpdated", message({ id: 2, seq: 2, body: "edited", edited_at: "2026-01-01T00:01:00Z" }));
    client.emit("message", message({ id: 9, seq: 1, conversation_id: 43 })); // another conversation
    timeline.merge([message({ id: 1, seq: 1 }), message({ id: 2, seq: 2 })]); // a page fetched before the edit
    assert.deepEqual(timeline.messages.map((m) => [m.seq, m.body]), [[1, "hi"], [2, "edited"]]);
    client.emit("messageUpdated", message({ id: 1, seq: 1, body: "", deleted: true }));
    timeline.merge([message({ id: 1, seq: 1, body: "hi" })]);
    assert.equal(timeline.messages[0].deleted, true);
    timeline.close();
  });
});

describe("frame checks and REST errors", () => {
  it("refuses a group event without its system message and accepts consultation.updated", () => {
    const system = message({ conversation_id: 77, seq: 5, kind: "system" });
    const added = { type: "member.added", data: { conversation_id: 77, event: "member.added", user_id: 3, by: 7, message: system }, event: 9 };
    assert.equal(frameProblem(added), null);
    assert.match(String(frameProblem({ ...added, data: { ...added.data, message: undefined } })), /system message/);
    assert.match(String(frameProblem({ ...added, event: undefined })), /event/);
    const consultation = { id: 1, patient_id: 7, doctor_id: 9, kind: "chat", state: "paid", price: 3000, currency: "EUR", conversation_id: 42 };
    assert.equal(frameProblem({ type: "consultation.updated", data: { consultation } }), null);
  });

  it("emits each reaction and pin log entry once as annotation (issue 24)", async () => {
    const { client } = offlineClient();
    /** @type {any[]} */
    const seen = [];
    client.on("annotation", (frame) => seen.push(frame));
    const reaction = {
      type: "reaction.added",
      data: { conversation_id: 42, message_id: 1, seq: 1, user_id: 9, emoji: "👍", reactions: [{ emoji: "👍", count: 1, user_ids: [9] }] },
      event: 12,
    };
    const pinned = { type: "message.pinned", data: { conversation_id: 42, message_id: 1, seq: 1, user_id: 9 }, event: 13 };
    await client.receive(JSON.stringify(reaction));
    await client.receive(JSON.stringify(reaction)); // the same entry again (live, then replayed)
    await client.receive(JSON.stringify(pinned));
    assert.deepEqual(seen.map((f) => [f.type, f.event]), [["reaction.added", 12], ["message.pinned", 13]]);
  });

  it("types REST failures by their error code, or by status when the body is not the documented shape", () => {
    const error = new RestError(409, { error: { code: "doctor_offline", message: "Not taking requests." } });
    assert.equal(error.code, "doctor_offline");
    assert.equal(error.status, 409);
    assert.equal(new RestError(502, "<html>").code, "http_502");
  });
});
