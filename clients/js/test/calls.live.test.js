// CallSession / CallManager against a live server and a real coturn (started by
// tests/test_sdk_calls_live.py, which passes the URLs, one direct conversation per test with its
// two users' tokens, and runs a Python aiortc callee for the interop test). The peers are real
// libwebrtc (@roamhq/wrtc) with iceTransportPolicy "relay": every byte of media goes through
// coturn, with credentials from GET /api/v1/calls/turn-credentials.
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { WebSocket } from "ws";
import {
  CallInProgressError,
  CallManager,
  CallNotRingingError,
  HealthchatClient,
  createRestClient,
} from "../src/index.js";
import { RTCPeerConnection, audioProbe, mediaStats, syntheticStream } from "../testing/media.js";

/** @param {string} name */
function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run these tests through tests/test_sdk_calls_live.py`);
  return value;
}

const HTTP_URL = env("HC_HTTP_URL");
const WS_URL = env("HC_WS_URL");
/** @type {Record<string, {conversation_id: number, caller: {id: number, token: string}, callee: {id: number, token: string}}>} */
const PAIRS = JSON.parse(env("HC_CALL_PAIRS"));
const RING_TIMEOUT_S = Number(env("HC_RING_TIMEOUT_SECONDS"));
const TIMINGS_FILE = process.env.HC_TIMINGS_FILE;

/** @param {number} ms */
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** @param {() => boolean | Promise<boolean>} predicate @param {string | (() => string)} what @param {number} [timeoutMs] */
async function waitFor(predicate, what, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${typeof what === "string" ? what : what()}`);
    await sleep(25);
  }
}

/** @type {Record<string, number>} */
const timings = {};
/** @type {(() => void)[]} */
const cleanups = [];

after(async () => {
  for (const cleanup of cleanups.reverse()) cleanup();
  if (TIMINGS_FILE) {
    const { writeFileSync } = await import("node:fs");
    writeFileSync(TIMINGS_FILE, JSON.stringify(timings, null, 2));
  }
});

/**
 * A connected SDK client with its CallManager (relay only), recording what it sees.
 * @param {string} token @param {{deviceId?: number}} [options]
 */
async function endpoint(token, options = {}) {
  const getToken = async () => token;
  const client = new HealthchatClient({ url: WS_URL, getToken, WebSocket, deviceId: options.deviceId ?? null });
  const rest = createRestClient({ baseUrl: HTTP_URL, getToken });
  await client.connect();
  const calls = new CallManager({ client, rest, RTCPeerConnection, iceTransportPolicy: "relay" });
  /** @type {import("../src/call-session.js").CallSession[]} */
  const incoming = [];
  calls.on("incoming", (session) => incoming.push(session));
  /** @type {import("../src/client.js").AppMessage[]} */
  const messages = [];
  client.on("message", (m) => messages.push(m));
  cleanups.push(() => client.close());
  return { client, rest, calls, incoming, messages };
}

/** @param {{frequency?: number, video?: boolean}} [options] */
function media(options) {
  const m = syntheticStream(options);
  cleanups.push(m.stop);
  return m.stream;
}

/** @param {import("../src/call-session.js").CallSession} session @param {string} what */
function connected(session, what) {
  return waitFor(() => session.state === "connected", `${what} to reach connected (now ${session.state}, ${session.endReason})`);
}

/** Bytes received per kind grow over `ms` on this peer connection. @param {RTCPeerConnection} pc @param {string[]} kinds */
async function mediaFlows(pc, kinds, ms = 1500) {
  await waitFor(async () => {
    const { inbound } = await mediaStats(pc);
    return kinds.every((kind) => (inbound[kind] ?? 0) > 0);
  }, `inbound ${kinds.join(" and ")} bytes`);
  const before = await mediaStats(pc);
  await sleep(ms);
  const later = await mediaStats(pc);
  for (const kind of kinds) assert.ok((later.inbound[kind] ?? 0) > (before.inbound[kind] ?? 0), `${kind} bytes grow: ${before.inbound[kind]} → ${later.inbound[kind]}`);
  return later;
}

/** System entries (call history) seen by a client for a call. @param {import("../src/client.js").AppMessage[]} messages @param {number} callId */
const historyOf = (messages, callId) => messages.filter((m) => m.kind === "system" && /** @type {any} */ (m).system?.call_id === callId);

describe("calls through the SDK, relayed by coturn", () => {
  it("two SDK clients call each other: connected through the relay, audio, video and data flow, hang-up lands in the history with its duration", async () => {
    const pair = PAIRS.connect;
    const caller = await endpoint(pair.caller.token);
    const callee = await endpoint(pair.callee.token);
    const t0 = performance.now();
    /** @type {Promise<string>} */
    let received = Promise.resolve("");
    const session = await caller.calls.call(pair.conversation_id, {
      media: "video",
      stream: media({ frequency: 440, video: true }),
      setup: (pc) => {
        const channel = pc.createDataChannel("chat");
        channel.onopen = () => channel.send("hello from the caller");
      },
    });
    assert.ok(session.id);
    assert.ok(["calling", "ringing"].includes(session.state), session.state);
    await waitFor(() => callee.incoming.length === 1, "the incoming call");
    const incoming = callee.incoming[0];
    assert.equal(incoming.id, session.id);
    assert.equal(incoming.media, "video");
    assert.equal(incoming.record?.caller_id, pair.caller.id);
    await waitFor(() => session.state === "ringing", "the caller to see ringing");
    /** @type {MediaStreamTrack[]} */
    const calleeTracks = [];
    incoming.on("track", (/** @type {RTCTrackEvent} */ e) => calleeTracks.push(e.track));
    await incoming.accept({
      stream: media({ frequency: 660, video: true }),
      setup: (pc) => {
        received = new Promise((resolve) => {
          pc.ondatachannel = (e) => (e.channel.onmessage = (m) => resolve(String(m.data)));
        });
      },
    });
    await connected(session, "the caller");
    await connected(incoming, "the callee");
    timings.sdk_invite_to_connected_ms = Math.round(performance.now() - t0);
    assert.equal(await received, "hello from the caller");
    const pc1 = /** @type {RTCPeerConnection} */ (session.pc);
    const pc2 = /** @type {RTCPeerConnection} */ (incoming.pc);
    const s1 = await mediaFlows(pc1, ["audio", "video"]);
    const s2 = await mediaFlows(pc2, ["audio", "video"]);
    assert.deepEqual([s1.local, s1.remote, s2.local, s2.remote], ["relay", "relay", "relay", "relay"]);
    const audioTrack = calleeTracks.find((t) => t.kind === "audio");
    assert.ok(audioTrack);
    const tone = audioProbe(audioTrack);
    await waitFor(() => tone.probe.samples > 48000, "a second of decoded audio");
    tone.probe.stop();
    assert.ok(Math.abs(tone.frequency() - 440) < 440 * 0.1, `the caller's tone arrives: ${tone.frequency()} Hz`);
    await sleep(Math.max(0, 1200 - (performance.now() - /** @type {number} */ (session.connectedAt))));
    await session.hangup();
    assert.equal(session.state, "ended");
    assert.equal(session.record?.state, "ended");
    assert.equal(session.endReason, "hangup");
    assert.ok((session.record?.duration ?? 0) >= 1, `duration ${session.record?.duration}`);
    await waitFor(() => incoming.state === "ended", "the callee to see the end");
    assert.equal(incoming.record?.state, "ended");
    assert.equal(incoming.record?.duration, session.record?.duration);
    for (const side of [caller, callee]) {
      await waitFor(
        () => historyOf(side.messages, /** @type {number} */ (session.id)).length === 1,
        () => `the history entry (${side === caller ? "caller" : "callee"}: ${JSON.stringify(side.messages.map((m) => [m.seq, m.kind]))}, ${side.client.state}, ${JSON.stringify(side.client.stats)})`,
      );
      const entry = /** @type {any} */ (historyOf(side.messages, /** @type {number} */ (session.id))[0]);
      assert.deepEqual(
        { event: entry.system.event, state: entry.system.state, media: entry.system.media, duration: entry.system.duration },
        { event: "call", state: "ended", media: "video", duration: session.record?.duration },
      );
    }
    const fromRest = await caller.rest.GET("/api/v1/calls/{call_id}", { params: { path: { call_id: /** @type {number} */ (session.id) } } });
    assert.equal(fromRest.data?.duration, session.record?.duration);
    assert.equal(pc1.connectionState, "closed");
  });

  it("reject: the caller's session ends `rejected`, with the history entry", async () => {
    const pair = PAIRS.reject;
    const caller = await endpoint(pair.caller.token);
    const callee = await endpoint(pair.callee.token);
    const session = await caller.calls.call(pair.conversation_id, { stream: media() });
    await waitFor(() => callee.incoming.length === 1, "the incoming call");
    await callee.incoming[0].reject();
    assert.equal(callee.incoming[0].state, "ended");
    await waitFor(() => session.state === "ended", "the caller to see the rejection");
    assert.equal(session.endReason, "rejected");
    assert.equal(session.record?.state, "rejected");
    assert.equal(session.pc?.connectionState, "closed");
    await waitFor(() => historyOf(caller.messages, /** @type {number} */ (session.id)).length === 1, "the history entry");
  });

  it("cancel: the caller hangs up while it rings; the callee's ring stops (`cancelled`)", async () => {
    const pair = PAIRS.cancel;
    const caller = await endpoint(pair.caller.token);
    const callee = await endpoint(pair.callee.token);
    const session = await caller.calls.call(pair.conversation_id, { stream: media() });
    await waitFor(() => callee.incoming.length === 1, "the incoming call");
    await session.hangup();
    assert.equal(session.record?.state, "cancelled");
    await waitFor(() => callee.incoming[0].state === "ended", "the callee's ring to stop");
    assert.equal(callee.incoming[0].endReason, "cancelled");
    // A late answer is refused with a typed error.
    await assert.rejects(caller.calls.request("call.cancel", { call_id: session.id }), CallNotRingingError);
  });

  it("missed: nobody answers before the ring timeout; both sides see `missed`", async () => {
    const pair = PAIRS.missed;
    const caller = await endpoint(pair.caller.token);
    const callee = await endpoint(pair.callee.token);
    const session = await caller.calls.call(pair.conversation_id, { stream: media() });
    await waitFor(() => callee.incoming.length === 1, "the incoming call");
    await waitFor(() => session.state === "ended", "the ring timeout", (RING_TIMEOUT_S + 15) * 1000);
    assert.equal(session.record?.state, "missed");
    assert.equal(session.endReason, "timeout");
    await waitFor(() => callee.incoming[0].state === "ended", "the callee's ring to stop");
    assert.equal(callee.incoming[0].record?.state, "missed");
    await waitFor(() => historyOf(callee.messages, /** @type {number} */ (session.id)).length === 1, "the history entry");
  });

  it("glare: both call each other at once; one call survives (the lower user id's) and connects", async () => {
    const pair = PAIRS.glare;
    const a = await endpoint(pair.caller.token);
    const b = await endpoint(pair.callee.token);
    const [sa, sb] = await Promise.all([
      a.calls.call(pair.conversation_id, { stream: media() }),
      b.calls.call(pair.conversation_id, { stream: media() }),
    ]);
    const lowerIsA = pair.caller.id < pair.callee.id;
    const [winner, loser] = lowerIsA ? [sa, sb] : [sb, sa];
    const loserSide = lowerIsA ? b : a;
    /** @type {import("../src/call-session.js").CallSession | null} */
    let replacement = null;
    if (loser.isFinal) replacement = /** @type {any} */ (loserSide.calls.sessions.get(/** @type {number} */ (winner.id))) ?? null;
    loser.on("replaced", (/** @type {any} */ next) => (replacement = next));
    await waitFor(() => loser.state === "ended", "the losing call to end");
    assert.equal(loser.endReason, "glare");
    await waitFor(() => replacement !== null, "the winning call to replace the losing one");
    const answered = /** @type {import("../src/call-session.js").CallSession} */ (/** @type {unknown} */ (replacement));
    assert.equal(answered.id, winner.id);
    await connected(winner, "the winning caller");
    await connected(answered, "the answering loser");
    // Neither app was shown a ringing call: the SDK answered the single surviving call.
    assert.equal(a.incoming.length + b.incoming.length, 0);
    await winner.hangup();
    await waitFor(() => answered.state === "ended", "the end");
    const list = await a.rest.GET("/api/v1/calls", { params: { query: { conversation_id: pair.conversation_id } } });
    const states = (list.data?.results ?? []).map((c) => `${c.state}/${c.end_reason}`).sort();
    assert.deepEqual(states, ["cancelled/glare", "ended/hangup"]);
  });

  it("multi-device: two devices of the callee ring, the first accept wins, the other sees answered_elsewhere", async () => {
    const pair = PAIRS.multi;
    const caller = await endpoint(pair.caller.token);
    const phone = await endpoint(pair.callee.token);
    const laptop = await endpoint(pair.callee.token);
    const session = await caller.calls.call(pair.conversation_id, { stream: media() });
    await waitFor(() => phone.incoming.length === 1 && laptop.incoming.length === 1, "both devices to ring");
    let elsewhere = 0;
    laptop.incoming[0].on("answeredElsewhere", () => (elsewhere += 1));
    await phone.incoming[0].accept({ stream: media() });
    await waitFor(() => laptop.incoming[0].state === "ended", "the other device to stop ringing");
    assert.equal(laptop.incoming[0].endReason, "answered_elsewhere");
    assert.equal(elsewhere, 1);
    await assert.rejects(laptop.calls.request("call.accept", { call_id: session.id, sdp: "v=0\r\n" }), CallNotRingingError);
    await connected(session, "the caller");
    await connected(phone.incoming[0], "the answering device");
    // One active call per conversation: a second invite is refused with the call's id.
    await assert.rejects(caller.calls.call(pair.conversation_id, { stream: media() }), (error) => {
      assert.ok(error instanceof CallInProgressError);
      assert.equal(error.callId, session.id);
      return true;
    });
    await phone.incoming[0].hangup();
    await waitFor(() => session.state === "ended", "the caller to see the hang-up");
    assert.equal(session.record?.state, "ended");
  });

  it("resume: the caller's socket drops mid-call; the callee is told, the SDK resumes and media keeps flowing", async () => {
    const pair = PAIRS.resume;
    const caller = await endpoint(pair.caller.token);
    const callee = await endpoint(pair.callee.token);
    const session = await caller.calls.call(pair.conversation_id, { stream: media() });
    await waitFor(() => callee.incoming.length === 1, "the incoming call");
    const incoming = callee.incoming[0];
    /** @type {string[]} */
    const peer = [];
    incoming.on("peerDisconnected", () => peer.push("disconnected"));
    incoming.on("peerResumed", () => peer.push("resumed"));
    /** @type {string[]} */
    const states = [];
    session.on("state", (/** @type {string} */ s) => states.push(s));
    await incoming.accept({ stream: media() });
    await connected(session, "the caller");
    const t0 = performance.now();
    caller.client.dropConnection();
    await waitFor(() => peer.join() === "disconnected,resumed", `peer events (${peer.join()})`);
    await waitFor(() => session.state === "connected", "the caller back to connected");
    timings.sdk_socket_drop_to_resumed_ms = Math.round(performance.now() - t0);
    assert.ok(states.includes("reconnecting"), states.join());
    await mediaFlows(/** @type {RTCPeerConnection} */ (incoming.pc), ["audio"], 1000);
    await session.hangup();
    await waitFor(() => incoming.state === "ended", "the end");
    assert.equal(session.record?.end_reason, "hangup");
  });

  it("interop: a Python aiortc peer answers a call placed by the Node SDK, through the relay", async () => {
    const pair = PAIRS.interop;
    const caller = await endpoint(pair.caller.token);
    /** @type {Promise<string>} */
    let echoed = Promise.resolve("");
    /** @type {MediaStreamTrack[]} */
    const tracks = [];
    const t0 = performance.now();
    const session = await caller.calls.call(pair.conversation_id, {
      stream: media({ frequency: 440 }),
      setup: (pc) => {
        const channel = pc.createDataChannel("chat");
        echoed = new Promise((resolve) => (channel.onmessage = (m) => resolve(String(m.data))));
        channel.onopen = () => channel.send("ping from node");
      },
    });
    session.on("track", (/** @type {RTCTrackEvent} */ e) => tracks.push(e.track));
    await connected(session, "the Node caller");
    timings.sdk_to_aiortc_invite_to_connected_ms = Math.round(performance.now() - t0);
    assert.equal(await echoed, "echo: ping from node");
    const stats = await mediaFlows(/** @type {RTCPeerConnection} */ (session.pc), ["audio"]);
    assert.deepEqual([stats.local, stats.remote], ["relay", "relay"]);
    const tone = audioProbe(tracks[0]);
    await waitFor(() => tone.probe.samples > 48000, "a second of aiortc's audio");
    tone.probe.stop();
    assert.ok(Math.abs(tone.frequency() - 880) < 88, `aiortc's 880 Hz tone arrives: ${tone.frequency()} Hz`);
    await sleep(1100);
    await session.hangup();
    assert.equal(session.record?.state, "ended");
    assert.ok((session.record?.duration ?? 0) >= 1);
  });
});
