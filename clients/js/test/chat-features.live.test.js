// The SDK's helpers for issue 24's chat features and issue 23's ratings against a live server
// (started by tests/test_sdk_chat_features_live.py, which passes URLs, tokens, ids and an image in
// HC_* variables): reactions, pins, mentions, search, scheduled messages, group avatars, ratings.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { WebSocket } from "ws";
import {
  HealthchatClient,
  RestError,
  ServerError,
  addReaction,
  cancelScheduledMessage,
  createGroup,
  createRestClient,
  doctorRatings,
  editRating,
  editScheduledMessage,
  getGroup,
  getRating,
  getScheduledMessage,
  listMentions,
  listPins,
  listScheduledMessages,
  onScheduledMessageUpdated,
  pinMessage,
  rateConsultation,
  removeGroupAvatar,
  removeReaction,
  replyToRating,
  scheduleMessage,
  searchMessages,
  setGroupAvatar,
  unpinMessage,
  uploadAttachment,
} from "../src/index.js";

/** @param {string} name */
function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run these tests through tests/test_sdk_chat_features_live.py`);
  return value;
}

const HTTP_URL = env("HC_HTTP_URL");
const WS_URL = env("HC_WS_URL");
const TOKENS = { patient: env("HC_PATIENT_TOKEN"), doctor: env("HC_DOCTOR_TOKEN") };
const PATIENT_ID = Number(env("HC_PATIENT_ID"));
const DOCTOR_ID = Number(env("HC_DOCTOR_ID"));
const CONSULTATION_ID = Number(env("HC_CONSULTATION_ID"));
const IMAGE = readFileSync(env("HC_IMAGE_PATH"));

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

/** @type {HealthchatClient[]} */
const open = [];

/** A connected client, its REST client and what it heard. @param {keyof typeof TOKENS} who */
async function session(who) {
  const getToken = async () => TOKENS[who];
  const client = new HealthchatClient({ url: WS_URL, getToken, WebSocket });
  const rest = createRestClient({ baseUrl: HTTP_URL, getToken });
  /** @type {any[]} */
  const annotations = [];
  /** @type {any[]} */
  const messages = [];
  client.on("annotation", (frame) => annotations.push(frame));
  client.on("message", (m) => messages.push(m));
  open.push(client);
  await client.connect();
  await waitFor(() => client.state === "ready", `${who} ready`);
  return { client, rest, annotations, messages, http: { baseUrl: HTTP_URL, getToken, rest, client } };
}

describe("the SDK's chat-feature and rating helpers against a live server", () => {
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

  it("reactions and pins: add, repeat, remove, the other side's annotation events; pin, list, unpin", async () => {
    const patient = await session("patient");
    const doctor = await session("doctor");
    const message = await (await patient.client.send(conversationId, "Is 20 mg the right dose?")).acked;

    const added = await addReaction(doctor.client, message.id, "👍");
    assert.deepEqual([added.changed, added.reactions], [true, [{ emoji: "👍", count: 1, user_ids: [DOCTOR_ID] }]]);
    await waitFor(() => patient.annotations.some((f) => f.type === "reaction.added" && f.data.message_id === message.id), "the patient sees the reaction");
    assert.equal((await addReaction(doctor.client, message.id, "👍")).changed, false);
    const removed = await removeReaction(doctor.client, message.id, "👍");
    assert.deepEqual([removed.changed, removed.reactions], [true, []]);
    await waitFor(() => patient.annotations.some((f) => f.type === "reaction.removed" && f.data.message_id === message.id), "the patient sees it removed");
    await assert.rejects(addReaction(doctor.client, message.id, "🦄"), (e) => e instanceof ServerError && e.code === "invalid_reaction");

    const pinned = await pinMessage(patient.client, message.id);
    assert.deepEqual([pinned.pinned, pinned.changed], [true, true]);
    await waitFor(() => doctor.annotations.some((f) => f.type === "message.pinned" && f.data.message_id === message.id), "the doctor sees the pin");
    const pins = await listPins(doctor.rest, conversationId);
    assert.deepEqual(pins.map((p) => [p.message_id, p.pinned_by]), [[message.id, PATIENT_ID]]);
    assert.equal((await unpinMessage(doctor.client, message.id)).pinned, false);
    assert.deepEqual(await listPins(patient.rest, conversationId), []);
  });

  it("mentions and search: a mention sent with the message is in the doctor's list; search finds it", async () => {
    const patient = await session("patient");
    const doctor = await session("doctor");
    const body = "Dr please look at the rash photo";
    const sent = await (await patient.client.send(conversationId, body, { mentions: [{ user_id: DOCTOR_ID, offset: 0, length: 2 }] })).acked;
    assert.deepEqual(sent.mentions, [{ user_id: DOCTOR_ID, offset: 0, length: 2 }]);

    const mentions = await listMentions(doctor.rest, { limit: 5 });
    assert.equal(mentions.results[0].message.id, sent.id);
    assert.equal(mentions.results[0].conversation_id, conversationId);
    assert.deepEqual(await listMentions(patient.rest), { results: [], nextCursor: null });

    const found = await searchMessages(doctor.rest, { q: "rash", conversationId, senderId: PATIENT_ID });
    assert.deepEqual(found.results.map((hit) => hit.message.id), [sent.id]);
    assert.deepEqual(found.results[0].snippet.filter((part) => part.match).map((part) => part.text), ["rash"]);
    const none = await searchMessages(doctor.rest, { q: "rash", senderId: DOCTOR_ID });
    assert.deepEqual(none.results, []);
    await assert.rejects(searchMessages(doctor.rest, { q: "" }), (e) => e instanceof RestError && e.status === 400);
  });

  it("scheduled messages: schedule, the live hint, list, edit, cancel; patients may not", async () => {
    const doctor = await session("doctor");
    /** @type {any[]} */
    const hints = [];
    onScheduledMessageUpdated(doctor.client, (s) => hints.push(s));
    const sendAt = new Date(Date.now() + 3600_000);
    const scheduled = await scheduleMessage(doctor.rest, { conversationId, body: "Take your second dose at 20:00", sendAt });
    assert.equal(scheduled.state, "pending");
    assert.equal(new Date(scheduled.send_at).getTime(), sendAt.getTime());
    await waitFor(() => hints.some((s) => s.id === scheduled.id && s.state === "pending"), "the pending hint");

    const listed = await listScheduledMessages(doctor.rest, { state: "pending" });
    assert.ok(listed.results.some((s) => s.id === scheduled.id));
    const edited = await editScheduledMessage(doctor.rest, scheduled.id, { body: "Take your second dose at 21:00" });
    assert.equal(edited.body, "Take your second dose at 21:00");
    assert.equal((await getScheduledMessage(doctor.rest, scheduled.id)).body, "Take your second dose at 21:00");
    const cancelled = await cancelScheduledMessage(doctor.rest, scheduled.id);
    assert.equal(cancelled.state, "cancelled");
    await waitFor(() => hints.some((s) => s.id === scheduled.id && s.state === "cancelled"), "the cancelled hint");
    await assert.rejects(
      editScheduledMessage(doctor.rest, scheduled.id, { body: "again" }),
      (e) => e instanceof RestError && e.status === 409 && e.code === "scheduled_message_not_pending",
    );
    const patient = await session("patient");
    await assert.rejects(
      scheduleMessage(patient.rest, { conversationId, body: "no", sendAt }),
      (e) => e instanceof RestError && e.status === 403 && e.code === "scheduling_not_allowed",
    );
  });

  it("group avatars: the doctor sets an uploaded image as the group's picture, members see it, removed", async () => {
    const doctor = await session("doctor");
    const patient = await session("patient");
    const group = await createGroup(doctor.rest, { name: "Care team", memberIds: [PATIENT_ID] });
    const image = await uploadAttachment(doctor.http, IMAGE, { name: "team.png", contentType: "image/png" });
    assert.equal(image.state, "ready");
    const withAvatar = await setGroupAvatar(doctor.rest, group.id, image.id);
    assert.equal(/** @type {any} */ (withAvatar).avatar.attachment_id, image.id);
    assert.equal(/** @type {any} */ (await getGroup(patient.rest, group.id)).avatar.attachment_id, image.id);
    await assert.rejects(setGroupAvatar(patient.rest, group.id, image.id), (e) => e instanceof RestError && e.status === 403);
    await removeGroupAvatar(doctor.rest, group.id);
    assert.equal(/** @type {any} */ (await getGroup(patient.rest, group.id)).avatar, null);
  });

  it("ratings: the patient rates the completed consultation once, the doctor replies, the list shows it", async () => {
    const patient = await session("patient");
    const doctor = await session("doctor");
    const rating = await rateConsultation(patient.rest, CONSULTATION_ID, { stars: 5, comment: "Clear and kind." });
    assert.deepEqual([rating.stars, rating.comment, rating.doctor_id, rating.reply], [5, "Clear and kind.", DOCTOR_ID, null]);
    await assert.rejects(
      rateConsultation(patient.rest, CONSULTATION_ID, { stars: 1 }),
      (e) => e instanceof RestError && e.status === 409 && e.code === "already_rated",
    );
    const changed = await editRating(patient.rest, CONSULTATION_ID, { stars: 4 });
    assert.ok(changed.edited_at);
    const replied = await replyToRating(doctor.rest, CONSULTATION_ID, "Thank you.");
    assert.equal(replied.reply?.text, "Thank you.");
    assert.equal((await getRating(doctor.rest, CONSULTATION_ID)).stars, 4);
    const listed = await doctorRatings(patient.rest, DOCTOR_ID);
    assert.deepEqual(listed.results.map((r) => [r.stars, r.comment, r.edited, r.reply?.text]), [[4, "Clear and kind.", true, "Thank you."]]);
    const directory = await patient.rest.GET("/api/v1/doctors/{doctor_id}", { params: { path: { doctor_id: DOCTOR_ID } } });
    assert.deepEqual([directory.data?.rating_average, directory.data?.rating_count], [4, 1]);
  });
});
