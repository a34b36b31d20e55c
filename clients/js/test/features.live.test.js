// The SDK's chat features against a live healthchat server, two or three SDK clients per test
// (started by tests/test_sdk_features_live.py, which passes URLs, tokens, ids and sample files in
// HC_* variables): receipts, typing, presence, edits/deletes and history, groups, attachments,
// consultations.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { WebSocket } from "ws";
import {
  AttachmentRejectedError,
  GroupEvents,
  HealthchatClient,
  MemoryStore,
  PresenceTracker,
  ReceiptTracker,
  RestError,
  ServerError,
  Timeline,
  TypingIndicator,
  acceptConsultation,
  addMember,
  changeRole,
  completeConsultation,
  createGroup,
  createRestClient,
  declineConsultation,
  deleteMessage,
  doctorAvailability,
  downloadAttachment,
  editMessage,
  getConsultation,
  historyPage,
  leaveGroup,
  listConsultations,
  onConsultationUpdated,
  removeMember,
  requestConsultation,
  setAvailability,
  sha256Hex,
  startConsultation,
  updateGroup,
  uploadAttachment,
  waitForAttachment,
} from "../src/index.js";

/** @param {string} name */
function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run these tests through tests/test_sdk_features_live.py`);
  return value;
}

const HTTP_URL = env("HC_HTTP_URL");
const WS_URL = env("HC_WS_URL");
const TOKENS = { patient: env("HC_PATIENT_TOKEN"), doctor: env("HC_DOCTOR_TOKEN"), colleague: env("HC_COLLEAGUE_TOKEN") };
const PATIENT_ID = Number(env("HC_PATIENT_ID"));
const DOCTOR_ID = Number(env("HC_DOCTOR_ID"));
const COLLEAGUE_ID = Number(env("HC_COLLEAGUE_ID"));
const VIDEO = readFileSync(env("HC_VIDEO_PATH"));
const DAMAGED_VIDEO = readFileSync(env("HC_DAMAGED_VIDEO_PATH"));

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

/** @typedef {import("../src/client.js").Message} Message */
/** @typedef {keyof typeof TOKENS} Who */

/** @type {HealthchatClient[]} */
const open = [];

/**
 * A connected client and its REST client, recording messages and errors; `setup` runs before
 * connecting (to hear the first sync).
 * @param {Who} who
 * @param {{store?: MemoryStore, setup?: (client: HealthchatClient, rest: ReturnType<typeof createRestClient>) => void}} [options]
 */
async function session(who, options = {}) {
  const getToken = async () => TOKENS[who];
  const client = new HealthchatClient({ url: WS_URL, getToken, WebSocket, store: options.store });
  const rest = createRestClient({ baseUrl: HTTP_URL, getToken });
  /** @type {Message[]} */
  const messages = [];
  /** @type {Error[]} */
  const errors = [];
  client.on("message", (m) => messages.push(m));
  client.on("error", (e) => errors.push(e));
  options.setup?.(client, rest);
  open.push(client);
  await client.connect();
  await waitFor(() => client.state === "ready", `${who} ready`);
  return { client, rest, messages, errors, http: { baseUrl: HTTP_URL, getToken, rest, client } };
}

/** @param {Message[]} messages @param {number} conversationId */
const inConversation = (messages, conversationId) => messages.filter((m) => m.conversation_id === conversationId);

/** @param {Message[]} messages */
function assertGapless(messages) {
  const seqs = messages.map((m) => m.seq);
  for (let i = 1; i < seqs.length; i += 1) assert.equal(seqs[i], seqs[i - 1] + 1, `seqs ${seqs.join(",")}`);
}

describe("the SDK's chat features against a live server", () => {
  /** @type {number} */
  let conversationId;

  before(async () => {
    const rest = createRestClient({ baseUrl: HTTP_URL, getToken: async () => TOKENS.patient });
    const opened = await rest.POST("/api/v1/conversations", { body: { peer_id: DOCTOR_ID } });
    assert.ok(opened.data, JSON.stringify(opened.error));
    conversationId = opened.data.id;
  });

  after(() => {
    for (const client of open) client.close();
  });

  it("receipts: automatic delivered, the doctor reads → the patient's status is read; unread counts", async () => {
    const patient = await session("patient");
    const doctor = await session("doctor");
    const patientReceipts = new ReceiptTracker(patient.client, patient.rest, { autoDelivered: false });
    const doctorReceipts = new ReceiptTracker(doctor.client, doctor.rest); // sends delivered on its own
    await patientReceipts.load(conversationId);
    await doctorReceipts.load(conversationId);
    /** @type {string[]} */
    const statuses = [];
    const sent = await patient.client.send(conversationId, "receipts please");
    patient.client.on("status", (s) => {
      if (s.clientId === sent.clientId) statuses.push(s.status);
    });
    const message = await sent.acked;
    await waitFor(() => patientReceipts.statusOf(conversationId, message.seq) === "delivered", "delivered (automatic)");
    assert.ok(statuses.includes("delivered"));
    assert.ok(doctorReceipts.unreadCount(conversationId) >= 1);
    assert.equal(patientReceipts.unreadCount(conversationId), 0, "own messages are read");

    await doctorReceipts.markRead(conversationId);
    assert.equal(doctorReceipts.unreadCount(conversationId), 0);
    await waitFor(() => patientReceipts.statusOf(conversationId, message.seq) === "read", "read");
    await waitFor(() => statuses.includes("read"), "status read");
    assert.equal(patientReceipts.cursors(conversationId).get(DOCTOR_ID)?.readSeq, message.seq);

    // A fresh tracker agrees with the server's cursors (REST).
    const fresh = new ReceiptTracker(patient.client, patient.rest, { autoDelivered: false });
    await fresh.load(conversationId);
    assert.equal(fresh.statusOf(conversationId, message.seq), "read");
    // The doctor's unread count follows a new message and is 0 again after reading.
    await patient.client.send(conversationId, "one more");
    await waitFor(() => doctorReceipts.unreadCount(conversationId) === 1, "unread 1");
    for (const t of [patientReceipts, doctorReceipts, fresh]) t.close();
    assert.deepEqual([...patient.errors, ...doctor.errors], []);
  });

  it("typing: the patient types → the doctor's indicator changes; throttled; stops; stale typers expire", async () => {
    const patient = await session("patient");
    const doctor = await session("doctor");
    const sending = new TypingIndicator(patient.client, { resendMs: 3000, idleMs: 30_000 });
    const watching = new TypingIndicator(doctor.client, { expireMs: 1500 });
    /** @type {number[][]} */
    const changes = [];
    watching.on("change", (c) => {
      if (c.conversationId === conversationId) changes.push(c.userIds);
    });
    let frames = 0;
    const notify = patient.client.notify.bind(patient.client);
    patient.client.notify = (type, data) => {
      frames += 1;
      notify(type, data);
    };
    for (let i = 0; i < 10; i += 1) sending.notify(conversationId); // one frame, not ten
    await waitFor(() => watching.typers(conversationId).includes(PATIENT_ID), "the doctor sees typing");
    assert.equal(frames, 1);
    sending.stop(conversationId);
    await waitFor(() => watching.typers(conversationId).length === 0, "stopped");
    assert.equal(frames, 2);

    // Typing again, then silence (no stop frame, e.g. the patient's app died): expired after 1.5 s.
    sending.notify(conversationId);
    await waitFor(() => watching.typers(conversationId).includes(PATIENT_ID), "typing again");
    const since = Date.now();
    // Forget it locally, as a dying app would: no active:false is sent.
    for (const { idle } of sending.outgoing.values()) clearTimeout(idle);
    sending.outgoing.clear();
    await waitFor(() => watching.typers(conversationId).length === 0, "expired", 5000);
    assert.ok(Date.now() - since >= 1000, "not before the expiry");
    assert.deepEqual(changes, [[PATIENT_ID], [], [PATIENT_ID], []]);

    // A refusal is a typed error on the client, not lost: typing in a conversation one is not in.
    sending.notify(999_999_999);
    await waitFor(() => patient.errors.some((e) => e instanceof ServerError && e.code === "conversation_not_found"), "typed error");
    sending.close();
    watching.close();
  });

  it("presence: subscribe, online/offline changes, and the subscription survives the doctor's reconnect", async () => {
    const doctor = await session("doctor");
    const presence = new PresenceTracker(doctor.client);
    /** @type {import("../src/presence.js").Presence[]} */
    const changes = [];
    presence.on("change", (p) => {
      if (p.userId === PATIENT_ID) changes.push(p);
    });
    const patient = await session("patient");
    const { subscribed, refused } = await presence.subscribe([PATIENT_ID, 999_999_999]);
    assert.deepEqual(subscribed, [PATIENT_ID]);
    assert.deepEqual(refused, [999_999_999]);
    assert.equal(presence.get(PATIENT_ID)?.online, true);

    // The doctor's socket is lost; the tracker subscribes again on the new one.
    const connects = doctor.client.stats.connects;
    doctor.client.dropConnection();
    await waitFor(() => doctor.client.stats.connects > connects && doctor.client.state === "ready", "the doctor reconnected");
    await waitFor(() => changes.length >= 2, "the state sent again after re-subscribing");
    // Every patient socket closes (other tests' clients too): offline, seen through the new subscription.
    for (const client of open) if (client.session?.user_id === PATIENT_ID) client.close();
    await waitFor(() => presence.get(PATIENT_ID)?.online === false, "offline");
    assert.ok(presence.get(PATIENT_ID)?.lastSeen, "last_seen set");
    const back = await session("patient");
    await waitFor(() => presence.get(PATIENT_ID)?.online === true, "online again");
    back.client.close();
    presence.close();
    assert.equal(patient.errors.length, 0);
  });

  it("edits and deletes: seen live and after sync; history pages feed one deduplicated timeline", async () => {
    const patient = await session("patient");
    const doctorStore = new MemoryStore();
    const doctor = await session("doctor", { store: doctorStore });
    const timeline = new Timeline(doctor.client, doctor.rest, conversationId, { pageSize: 3 });
    await timeline.loadLatest();
    /** @type {Message[]} */
    const sent = [];
    for (const body of ["h1", "h2", "h3", "h4", "h5", "h6", "h7"]) sent.push(await (await patient.client.send(conversationId, body)).acked);
    await waitFor(() => timeline.messages.some((m) => m.id === sent[6].id), "live messages in the timeline");

    const edited = await editMessage(patient.client, sent[1].id, "h2 (edited)");
    assert.equal(edited.body, "h2 (edited)");
    assert.ok(edited.edited_at);
    const deleted = await deleteMessage(patient.client, sent[2].id);
    assert.equal(deleted.deleted, true);
    assert.equal(deleted.body, "");
    await waitFor(() => timeline.messages.find((m) => m.id === sent[1].id)?.body === "h2 (edited)", "edit seen live");
    await waitFor(() => timeline.messages.find((m) => m.id === sent[2].id)?.deleted === true, "delete seen live");

    // Page back to the start: every seq once, gapless, the edit and the deletion kept.
    while (await timeline.loadOlder());
    const all = timeline.messages;
    assert.equal(all[0].seq, 1);
    assertGapless(all);
    assert.equal(all.find((m) => m.id === sent[1].id)?.body, "h2 (edited)");
    assert.equal(all.find((m) => m.id === sent[2].id)?.deleted, true);
    const page = await historyPage(doctor.rest, conversationId, { beforeSeq: sent[3].seq, limit: 2 });
    assert.deepEqual(page.messages.map((m) => m.seq), [sent[1].seq, sent[2].seq]);
    assert.equal(page.hasMore, true);

    // Offline doctor: an edit and a deletion while away arrive through sync on the same store.
    doctor.client.close();
    await editMessage(patient.client, sent[4].id, "h5 (edited offline)");
    await deleteMessage(patient.client, sent[5].id);
    /** @type {Message[]} */
    const updates = [];
    /** @type {Timeline | null} */
    let synced = null;
    const back = await session("doctor", {
      store: doctorStore,
      setup: (client, rest) => {
        client.on("messageUpdated", (m) => updates.push(m));
        synced = new Timeline(client, rest, conversationId);
      },
    });
    const replayed = /** @type {Timeline} */ (/** @type {unknown} */ (synced));
    await waitFor(() => updates.some((m) => m.id === sent[5].id), "the deletion through sync");
    assert.equal(updates.find((m) => m.id === sent[4].id)?.body, "h5 (edited offline)");
    assert.equal(replayed.messages.find((m) => m.id === sent[4].id)?.body, "h5 (edited offline)");
    assert.equal(replayed.messages.find((m) => m.id === sent[5].id)?.deleted, true);
    assert.deepEqual(inConversation(back.messages, conversationId), [], "nothing delivered twice after the restart");
    // A reconnect syncs from the stored cursor: no update or message a second time.
    const count = updates.length;
    back.client.dropConnection();
    await waitFor(() => back.client.state === "ready" && back.client.stats.connects === 2, "reconnected");
    await sleep(300);
    assert.equal(updates.length, count);
    assert.deepEqual(inConversation(back.messages, conversationId), []);

    // Not one's own message: a typed error.
    await assert.rejects(editMessage(back.client, sent[0].id, "x"), (e) => e instanceof ServerError && e.code === "not_message_sender");
    timeline.close();
    replayed.close();
  });

  it("groups: create, rename, add (history per visibility), roles, remove, leave — events once, timeline gapless", async () => {
    const doctor = await session("doctor");
    const patient = await session("patient");
    const colleague = await session("colleague");
    const patientGroups = new GroupEvents(patient.client);
    const colleagueGroups = new GroupEvents(colleague.client);
    /** @type {import("../src/groups.js").GroupChange[]} */
    const seen = [];
    patientGroups.on("change", (c) => seen.push(c));
    /** @type {import("../src/groups.js").GroupChange[]} */
    const colleagueSeen = [];
    colleagueGroups.on("change", (c) => colleagueSeen.push(c));

    const shared = await createGroup(doctor.rest, { name: "Follow-up", memberIds: [PATIENT_ID], historyVisibleToNewMembers: true });
    await waitFor(() => seen.some((c) => c.conversationId === shared.id && c.type === "member.added"), "the patient hears of the group");
    await doctor.client.send(shared.id, "before the colleague");
    await (await patient.client.send(shared.id, "from the patient")).acked;
    await updateGroup(doctor.rest, shared.id, { name: "Cardiology follow-up" });
    await waitFor(() => seen.some((c) => c.type === "group.updated" && /** @type {any} */ (c.data).name === "Cardiology follow-up"), "renamed");

    await addMember(doctor.rest, shared.id, COLLEAGUE_ID);
    await waitFor(() => colleagueSeen.some((c) => c.conversationId === shared.id && c.type === "member.added"), "the colleague is added");
    const history = await historyPage(colleague.rest, shared.id);
    assert.ok(history.messages.some((m) => m.body === "before the colleague"), "history visible to new members");

    const hidden = await createGroup(doctor.rest, { name: "Private", memberIds: [PATIENT_ID], historyVisibleToNewMembers: false });
    await (await doctor.client.send(hidden.id, "before the join")).acked;
    await addMember(doctor.rest, hidden.id, COLLEAGUE_ID);
    await (await doctor.client.send(hidden.id, "after the join")).acked;
    await waitFor(() => inConversation(colleague.messages, hidden.id).some((m) => m.body === "after the join"), "the colleague gets new messages");
    const bounded = await historyPage(colleague.rest, hidden.id);
    assert.ok(!bounded.messages.some((m) => m.body === "before the join"), "history bounded at the join");
    assert.ok(bounded.messages.some((m) => m.body === "after the join"));

    await changeRole(doctor.rest, shared.id, COLLEAGUE_ID, "admin");
    await waitFor(() => seen.some((c) => c.type === "member.role_changed" && /** @type {any} */ (c.data).role === "admin"), "role change");
    await removeMember(doctor.rest, shared.id, COLLEAGUE_ID);
    await waitFor(() => colleagueSeen.some((c) => c.type === "member.removed" && c.conversationId === shared.id), "the colleague is told");
    await leaveGroup(patient.rest, shared.id);
    await waitFor(() => seen.some((c) => c.type === "member.left" && c.conversationId === shared.id), "left");
    await assert.rejects(removeMember(patient.rest, hidden.id, DOCTOR_ID), (e) => e instanceof RestError && e.status === 403);

    // Each change once; the patient's timeline of the group is gapless (system messages included).
    const keys = seen.map((c) => `${c.conversationId}:${c.data.message.seq}`);
    assert.equal(new Set(keys).size, keys.length);
    const timeline = inConversation(patient.messages, shared.id);
    assertGapless(timeline);
    assert.ok(timeline.some((m) => m.kind === "system"));
    assert.equal(timeline.at(-1)?.system?.event, "member.left");
    patientGroups.close();
    colleagueGroups.close();
  });

  it("attachments: upload with progress, sent, downloaded byte for byte by the other side", async () => {
    const patient = await session("patient");
    const doctor = await session("doctor");
    const text = "Blood pressure diary\n".repeat(30_000); // ~630 KB of text, stored as sent
    const bytes = new TextEncoder().encode(text);
    /** @type {{loaded: number, total: number}[]} */
    const progress = [];
    const attachment = await uploadAttachment(patient.http, bytes, {
      name: "diary.txt",
      contentType: "text/plain",
      onProgress: (p) => progress.push(p),
    });
    assert.equal(attachment.state, "ready");
    assert.ok(progress.length > 5, `progress events: ${progress.length}`);
    assert.deepEqual(progress.at(-1), { loaded: bytes.length, total: bytes.length });
    for (let i = 1; i < progress.length; i += 1) assert.ok(progress[i].loaded >= progress[i - 1].loaded);
    assert.equal(attachment.sha256, await sha256Hex(bytes));

    const sent = await (await patient.client.send(conversationId, "my diary", { attachmentIds: [attachment.id] })).acked;
    await waitFor(() => doctor.messages.some((m) => m.id === sent.id), "the doctor gets the message");
    const received = /** @type {Message} */ (doctor.messages.find((m) => m.id === sent.id));
    assert.equal(received.attachments[0].id, attachment.id);
    /** @type {number[]} */
    const downloaded = [];
    const { bytes: back, attachment: meta } = await downloadAttachment(doctor.rest, attachment.id, {
      onProgress: (p) => downloaded.push(p.loaded),
    });
    assert.deepEqual(Buffer.from(back), Buffer.from(bytes));
    assert.equal(meta.name, "diary.txt");
    assert.equal(downloaded.at(-1), bytes.length);

    // Refused uploads are typed: an unknown file type.
    await assert.rejects(
      uploadAttachment(patient.http, new Uint8Array([0, 1, 2, 3, 255, 254, 0, 9]), { name: "x.bin" }),
      (e) => e instanceof RestError && e.status === 415 && e.code === "unsupported_file_type",
    );
  });

  it("attachments: a video is processing, then ready through attachment.updated; a damaged one is rejected", async () => {
    const patient = await session("patient");
    const doctor = await session("doctor");
    /** @type {string[]} */
    const frames = [];
    patient.client.on("frame", (f) => {
      if (f.type === "attachment.updated") frames.push(f.data.attachment.state);
    });
    /** @type {string[]} */
    const progress = [];
    const video = await uploadAttachment(patient.http, VIDEO, {
      name: "VID_0001.mp4",
      contentType: "video/mp4",
      pollMs: 60_000,
      timeoutMs: 90_000,
      onProgress: (p) => progress.push(`${p.loaded}/${p.total}`),
      waitForReady: false,
    });
    assert.equal(video.state, "processing");
    await assert.rejects(patient.client.send(conversationId, "too early", { attachmentIds: [video.id] }).then((s) => s.acked), (e) => e instanceof ServerError && e.code === "attachment_processing");
    const ready = await waitForAttachment(patient.http, video.id, { pollMs: 60_000, timeoutMs: 90_000 });
    assert.equal(ready.state, "ready");
    assert.equal(progress.at(-1), `${VIDEO.length}/${VIDEO.length}`);
    await waitFor(() => frames.includes("ready"), "the attachment.updated frame");
    assert.equal(video.category, "video");
    const sent = await (await patient.client.send(conversationId, "a video", { attachmentIds: [video.id] })).acked;
    assert.equal(sent.attachments[0].id, video.id);
    const { bytes } = await downloadAttachment(doctor.rest, video.id); // verified against size and sha256
    assert.equal(bytes.length, ready.size);

    await assert.rejects(
      uploadAttachment(patient.http, DAMAGED_VIDEO, { name: "broken.mp4", contentType: "video/mp4", pollMs: 60_000, timeoutMs: 90_000 }),
      (e) => e instanceof AttachmentRejectedError && e.rejection === "corrupt_media",
    );
  });

  it("consultations: availability switch, request → accept by the doctor (live hint), start, complete; a decline", async () => {
    const patient = await session("patient");
    const doctor = await session("doctor");
    /** @type {string[]} */
    const hints = [];
    onConsultationUpdated(patient.client, (c) => hints.push(c.state));

    const off = await setAvailability(doctor.rest, { online: false });
    assert.equal(off.online, false);
    assert.equal((await doctorAvailability(patient.rest, DOCTOR_ID)).available_now, false);
    await assert.rejects(
      requestConsultation(patient.rest, { doctorId: DOCTOR_ID, kind: "chat" }),
      (e) => e instanceof RestError && e.code === "doctor_offline" && e.status === 409,
    );
    await setAvailability(doctor.rest, { online: true });

    const { consultation, payment } = await requestConsultation(patient.rest, { doctorId: DOCTOR_ID, kind: "chat", reason: "a rash" });
    assert.equal(consultation.conversation_id, conversationId);
    assert.equal(payment.provider, "development");
    const waiting = await listConsultations(doctor.rest, { role: "doctor" });
    assert.ok(waiting.results.some((c) => c.id === consultation.id));
    await assert.rejects(acceptConsultation(patient.rest, consultation.id), (e) => e instanceof RestError && e.code === "not_allowed");

    const accepted = await acceptConsultation(doctor.rest, consultation.id);
    assert.equal(accepted.state, "accepted");
    await waitFor(() => hints.includes("accepted"), "the patient's live hint");
    await startConsultation(doctor.rest, consultation.id);
    const completed = await completeConsultation(doctor.rest, consultation.id);
    assert.equal(completed.state, "completed");
    const detail = await getConsultation(patient.rest, consultation.id);
    assert.deepEqual(
      detail.transitions.map((t) => t.to_state),
      ["requested", "paid", "accepted", "in_progress", "completed"],
    );

    const second = await requestConsultation(patient.rest, { doctorId: DOCTOR_ID, kind: "video" });
    const declined = await declineConsultation(doctor.rest, second.consultation.id, "fully booked");
    assert.equal(declined.state, "declined");
    await waitFor(() => hints.includes("declined"), "decline hint");
    assert.deepEqual([...patient.errors, ...doctor.errors], [], "no protocol errors (consultation.updated is in the contract)");
  });
});
