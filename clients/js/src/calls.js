// Calls: `CallManager` places and receives calls over a HealthchatClient's socket; each call is a
// `CallSession` over one RTCPeerConnection (the implementation injected, like the WebSocket).
// Signalling follows docs/calls.md: the offer/answer travel in call.invite/call.accept without
// candidates, every candidate is trickled as call.ice, renegotiation is call.update, a dropped
// socket resumes with call.resume. TURN credentials come from GET /api/v1/calls/turn-credentials
// for each call. See docs/clients.md#calls.
import { TurnUnavailableError, callError } from "./call-errors.js";
import { CallSession, Emitter, now } from "./call-session.js";
import { ConnectionLostError, HealthchatError, RequestTimeoutError } from "./errors.js";

/** @typedef {import("./generated/frames.js").ServerCall} CallRecord */
/** @typedef {import("./generated/frames.js").ServerFrame} ServerFrame */
/** @typedef {import("./client.js").HealthchatClient} HealthchatClient */
/** @typedef {import("./rest.js").createRestClient} CreateRestClient */
/** @typedef {ReturnType<CreateRestClient>} RestClient */
/** @typedef {import("./call-session.js").CallMedia} CallMedia */
/** @typedef {import("./call-session.js").MediaOptions} MediaOptions */
/** @typedef {import("./call-session.js").CallState} CallState */

/**
 * @typedef {object} CallManagerOptions
 * @property {HealthchatClient} client
 * @property {RestClient} [rest]   for the TURN credentials (`GET /api/v1/calls/turn-credentials`)
 *   and the final record of a call that ended while the socket was away (`GET /api/v1/calls/{id}`)
 * @property {() => Promise<RTCIceServer[]>} [getIceServers]  instead of the endpoint (tests, a fixed STUN)
 * @property {RTCIceTransportPolicy | ((iceServers: RTCIceServer[]) => RTCIceTransportPolicy)} [iceTransportPolicy]
 *   `"relay"`: TURN only (hides the peers' addresses from each other); default `"all"`. A function
 *   decides per call from the fetched ICE servers (e.g. relay only when a TURN server is offered)
 * @property {typeof RTCPeerConnection} [RTCPeerConnection]  default: `globalThis.RTCPeerConnection`
 * @property {(media: CallMedia) => Promise<MediaStream>} [getLocalStream]  default: `navigator.mediaDevices.getUserMedia`
 * @property {boolean} [autoRinging]  send `call.ringing` when an invite arrives (default true)
 * @property {number} [glareWindowMs]  how long a call that lost a glare waits for the winning invite (default 15 s)
 */

/**
 * Places and receives the calls of one HealthchatClient. Events (`manager.on(name, fn)`):
 * - `incoming` (CallSession): a call rings on this device; show it, then `accept()` or `reject()`
 * - `ended` (CallSession): any call of this manager ended
 */
export class CallManager extends Emitter {
  /** @param {CallManagerOptions} options */
  constructor(options) {
    super();
    this.client = options.client;
    this.rest = options.rest ?? null;
    this.customIceServers = options.getIceServers ?? null;
    if (!this.rest && !this.customIceServers) throw new HealthchatError("CallManager needs options.rest (for TURN credentials) or options.getIceServers");
    const PC = options.RTCPeerConnection ?? /** @type {any} */ (globalThis).RTCPeerConnection;
    if (!PC) throw new HealthchatError("no RTCPeerConnection implementation: pass options.RTCPeerConnection");
    /** @type {typeof RTCPeerConnection} */
    this.RTCPeerConnection = PC;
    this.iceTransportPolicy = options.iceTransportPolicy ?? "all";
    this.getLocalStream =
      options.getLocalStream ??
      ((/** @type {CallMedia} */ media) => {
        const devices = /** @type {any} */ (globalThis).navigator?.mediaDevices;
        if (!devices) throw new HealthchatError("no getUserMedia here: pass MediaOptions.stream or options.getLocalStream");
        return devices.getUserMedia({ audio: true, video: media === "video" });
      });
    this.autoRinging = options.autoRinging ?? true;
    this.glareWindowMs = options.glareWindowMs ?? 15_000;
    /** @type {Map<number, CallSession>} sessions with an id, live or recently ended */
    this.sessions = new Map();
    /** @type {Set<CallSession>} outgoing sessions whose invite has no ack yet */
    this.placing = new Set();
    /** @type {Map<number, {session: CallSession, at: number}>} outgoing calls that lost a glare, by conversation */
    this.glareLost = new Map();
    this.readyCount = 0;
    this.unsubscribe = [
      this.client.on("frame", (frame) => this.onFrame(frame)),
      this.client.on("ready", () => this.onReady()),
      this.client.on("state", (state) => {
        if (state !== "connecting") return;
        for (const session of this.active()) if (session.answered) session.setState("reconnecting");
      }),
    ];
    if (this.client.session) this.readyCount = 1;
  }

  /** Stop listening to the client (calls in progress are hung up). */
  async close() {
    for (const off of this.unsubscribe) off();
    await Promise.allSettled(this.active().map((s) => s.hangup()));
  }

  /** The calls that are not over. */
  active() {
    return [...this.sessions.values(), ...this.placing].filter((s) => !s.isFinal);
  }

  /**
   * Call the other member of a direct conversation. Resolves once the server recorded the call
   * (state `calling`/`ringing`, or already `ended` as `busy`, or after a lost glare — then listen
   * for `replaced`).
   * @param {number} conversationId @param {{media?: CallMedia} & MediaOptions} [options]
   */
  async call(conversationId, options = {}) {
    const media = options.media ?? "audio";
    const session = new CallSession(this, { direction: "outgoing", conversationId, media });
    this.placing.add(session);
    try {
      await session.queue(async () => {
        await session.preparePeer(options);
        const pc = /** @type {RTCPeerConnection} */ (session.pc);
        const offer = await pc.createOffer();
        await pc.setLocalDescription(offer);
        session.timings.offer = Math.round(now() - session.born);
        const ack = await this.request("call.invite", { conversation_id: conversationId, media, sdp: offer.sdp });
        session.id = ack.data.call.id;
        this.sessions.set(ack.data.call.id, session);
        session.update(ack.data.call);
        if (!session.isFinal) await session.releaseLocalCandidates();
      });
    } catch (error) {
      session.finish(null, "not_placed");
      throw error;
    } finally {
      this.placing.delete(session);
    }
    if (session.hangupRequested) await session.hangup();
    return session;
  }

  /** Send a call frame; server errors come back as typed call errors. @param {any} type @param {object} data */
  async request(type, data) {
    try {
      return await this.client.request(type, data);
    } catch (error) {
      throw callError(error);
    }
  }

  /** Fresh ICE servers for one call (TURN credentials expire). @returns {Promise<RTCIceServer[]>} */
  async iceServers() {
    if (this.customIceServers) return this.customIceServers();
    const rest = /** @type {RestClient} */ (this.rest);
    const { data, error, response } = await rest.GET("/api/v1/calls/turn-credentials");
    if (!data) {
      const code = /** @type {any} */ (error)?.error?.code ?? null;
      throw new TurnUnavailableError(`TURN credentials: HTTP ${response.status}${code ? ` (${code})` : ""}`, response.status, code);
    }
    return /** @type {RTCIceServer[]} */ (data.ice_servers);
  }

  /** The ICE configuration of one call: fresh servers and the transport policy. */
  async rtcConfiguration() {
    const iceServers = await this.iceServers();
    const policy = this.iceTransportPolicy;
    return { iceServers, iceTransportPolicy: typeof policy === "function" ? policy(iceServers) : policy };
  }

  /** @param {number} id @returns {Promise<CallRecord | null>} */
  async fetchRecord(id) {
    if (!this.rest) return null;
    const { data } = await this.rest.GET("/api/v1/calls/{call_id}", { params: { path: { call_id: id } } });
    return /** @type {CallRecord | null} */ (data ?? null);
  }

  /** @param {ServerFrame} frame */
  onFrame(frame) {
    if (!frame.type.startsWith("call.")) return;
    if (frame.type === "call.invite") {
      this.onInvite(frame.data.call, frame.data.sdp);
      return;
    }
    const data = /** @type {any} */ (frame).data;
    const id = data.call_id ?? data.call?.id;
    const session = typeof id === "number" ? this.sessions.get(id) : undefined;
    if (session) session.onFrame(frame);
  }

  /** @param {CallRecord} record @param {string} offer */
  onInvite(record, offer) {
    if (this.sessions.has(record.id)) return;
    const session = new CallSession(this, { direction: "incoming", conversationId: record.conversation_id, media: record.media, record, offer });
    this.sessions.set(record.id, session);
    if (this.autoRinging) {
      this.request("call.ringing", { call_id: record.id }).catch((error) => {
        if (!(error instanceof ConnectionLostError) && !(error instanceof RequestTimeoutError) && !session.isFinal) session.emit("error", error);
      });
    }
    // Glare (docs/calls.md): both called each other at once; the lower user id's call wins.
    const mine = this.ourOutgoing(record.conversation_id);
    const me = this.client.session?.user_id ?? 0;
    if (mine) {
      if (record.caller_id < me) {
        session.silent = true;
        if (mine.isFinal) this.replace(mine, session);
        else mine.replacement = session;
      } else {
        session.silent = true; // ours wins: theirs is cancelled (call.cancel, reason glare)
      }
      return;
    }
    this.emit("incoming", session);
  }

  /** An outgoing call of ours in that conversation that is still placing/ringing or just lost a glare. @param {number} conversationId */
  ourOutgoing(conversationId) {
    for (const s of [...this.placing, ...this.sessions.values()]) {
      if (s.direction === "outgoing" && s.conversationId === conversationId && !s.isFinal) return s;
    }
    const lost = this.glareLost.get(conversationId);
    if (lost && now() - lost.at < this.glareWindowMs) {
      this.glareLost.delete(conversationId);
      return lost.session;
    }
    return null;
  }

  /** The winning call replaces ours: answered with our media options. @param {CallSession} lost @param {CallSession} winner */
  replace(lost, winner) {
    winner.silent = false;
    lost.emit("replaced", winner);
    const { stream, setup } = lost.mediaOptions;
    winner.accept({ stream: lost.ownsStream ? undefined : stream, setup }).catch((error) => winner.emit("error", error));
  }

  /** @param {CallSession} session */
  ended(session) {
    this.emit("ended", session);
    if (session.direction === "outgoing") {
      if (session.endReason === "glare") {
        if (session.replacement) this.replace(session, session.replacement);
        else this.glareLost.set(session.conversationId, { session, at: now() });
      } else {
        // Calls we kept quiet because ours was going to win: show them if ours did not.
        for (const other of this.sessions.values()) {
          if (other.silent && !other.isFinal && other.conversationId === session.conversationId) {
            other.silent = false;
            this.emit("incoming", other);
          }
        }
      }
    }
    // Keep ended sessions briefly (late frames), then forget them.
    setTimeout(() => {
      if (session.id !== null && this.sessions.get(session.id) === session) this.sessions.delete(session.id);
    }, 60_000).unref?.();
  }

  onReady() {
    this.readyCount += 1;
    if (this.readyCount === 1) return;
    for (const session of this.active()) {
      session.resume().catch((error) => session.emit("error", error));
    }
  }
}

