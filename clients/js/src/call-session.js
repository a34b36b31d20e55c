// One call: a CallSession over one RTCPeerConnection, driven by the call.* frames the
// CallManager (calls.js) routes to it. See docs/calls.md and docs/clients.md#calls.
import {
  CallActionNotAllowedError,
  CallNotActiveError,
  CallNotFoundError,
  CallNotRingingError,
  callError,
} from "./call-errors.js";
import { ConnectionLostError, HealthchatError } from "./errors.js";

/** @typedef {import("./generated/frames.js").ServerCall} CallRecord */
/** @typedef {import("./generated/frames.js").ServerFrame} ServerFrame */
/** @typedef {import("./calls.js").CallManager} CallManager */
/** @typedef {"audio" | "video"} CallMedia */

/**
 * What the app sees of a call:
 * - `calling`: our invite is out, no device of the callee rings yet (outgoing)
 * - `ringing`: a device of the callee rings (outgoing), or this device rings (incoming)
 * - `connecting`: answered; the media path (ICE/DTLS) is being set up
 * - `connected`: media flows
 * - `reconnecting`: answered, and our socket is down (resumed with call.resume when it is back)
 *   or the media path was lost (ICE restarted through call.update)
 * - `ended`: final; `record` is the final call object, `endReason` says why
 * @typedef {"calling" | "ringing" | "connecting" | "connected" | "reconnecting" | "ended"} CallState
 */

/**
 * Local media for a call: the stream whose tracks are sent, and a hook that sees the peer
 * connection before the offer or answer is made (to add a data channel, transceivers...).
 * @typedef {object} MediaOptions
 * @property {MediaStream} [stream]  default: the manager's `getLocalStream(media)` (getUserMedia in browsers)
 * @property {(pc: RTCPeerConnection) => void} [setup]
 */

/** A tiny typed event emitter (each module keeps its own; listeners' exceptions are rethrown async). */
export class Emitter {
  constructor() {
    /** @type {Map<string, Set<(value: any) => void>>} */
    this.listeners = new Map();
  }
  /** @param {string} name @param {(value: any) => void} fn @returns {() => void} */
  on(name, fn) {
    let set = this.listeners.get(name);
    if (!set) this.listeners.set(name, (set = new Set()));
    set.add(fn);
    return () => set.delete(fn);
  }
  /** @param {string} name @param {unknown} value */
  emit(name, value) {
    for (const fn of this.listeners.get(name) ?? []) {
      try {
        fn(value);
      } catch (error) {
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }
}

const FINAL = new Set(["ended", "missed", "rejected", "cancelled", "failed", "busy"]);
/** An SDP offer says `a=setup:actpass` (RFC 5763); an answer picks `active` or `passive`. */
const isOffer = (/** @type {string} */ sdp) => /^a=setup:actpass/m.test(sdp);

/**
 * Events of a CallSession (`session.on(name, fn)`):
 * - `state` (CallState), `ended` (the session, once: read `record`, `endReason`)
 * - `track` (RTCTrackEvent): a remote track arrived
 * - `peerDisconnected` ({graceSeconds}), `peerResumed` (): the other side's socket dropped / came back
 * - `answeredElsewhere` (): another device of this user answered (the session then ends)
 * - `replaced` (CallSession): this outgoing call lost a glare; the other side's call replaces it
 *   (the manager answers it with the same media options)
 * - `error` (Error): a signalling step failed (the call goes on when it can)
 */
export class CallSession extends Emitter {
  /**
   * @param {CallManager} manager
   * @param {{direction: "outgoing" | "incoming", conversationId: number, media: CallMedia,
   *   record?: CallRecord, offer?: string}} init
   */
  constructor(manager, init) {
    super();
    this.manager = manager;
    this.direction = init.direction;
    this.conversationId = init.conversationId;
    this.media = init.media;
    /** @type {CallRecord | null} the latest call object the server sent */
    this.record = init.record ?? null;
    /** @type {number | null} */
    this.id = init.record?.id ?? null;
    /** @type {CallState} */
    this.state = init.direction === "outgoing" ? "calling" : "ringing";
    /** @type {string | null} the server's end_reason, or `answered_elsewhere` */
    this.endReason = null;
    /** @type {RTCPeerConnection | null} */
    this.pc = null;
    /** @type {MediaStream | null} */
    this.localStream = null;
    this.ownsStream = false;
    /** @type {MediaOptions} */
    this.mediaOptions = {};
    this.offer = init.offer ?? null;
    /** the peer's socket is connected (false between call.peer_disconnected and call.peer_resumed) */
    this.peerOnline = true;
    this.answered = false;
    /** @type {number | null} performance.now() when media connected */
    this.connectedAt = null;
    this.everConnected = false;
    /** true while our own candidates may not be sent yet (no call id, or not the call socket) */
    this.holdLocal = true;
    /** @type {RTCIceCandidateInit[]} */
    this.localCandidates = [];
    /** @type {RTCIceCandidateInit[]} remote candidates that came before the remote description */
    this.remoteCandidates = [];
    /** @type {Promise<void>} signalling steps run one at a time, in arrival order */
    this.work = Promise.resolve();
    /** @type {CallSession | null} the winning call that replaces this one after a glare */
    this.replacement = null;
    /** hidden from the app (`incoming` not emitted): a call that loses a glare to ours */
    this.silent = false;
    /** timings (ms since the session was made) for the app's diagnostics */
    this.born = now();
    /** @type {Record<string, number>} */
    this.timings = {};
    this.hangupRequested = false;
    this.sentEndOfCandidates = false;
  }

  get client() {
    return this.manager.client;
  }

  get isFinal() {
    return this.state === "ended";
  }

  /** @param {CallState} state */
  setState(state) {
    if (this.state === state || this.state === "ended") return;
    this.state = state;
    this.timings[state] = Math.round(now() - this.born);
    this.emit("state", state);
  }

  /** Run a signalling step after the previous ones. @param {() => Promise<void>} step */
  queue(step) {
    const run = this.work.then(step);
    this.work = run.catch((error) => {
      if (!this.isFinal) this.emit("error", error);
    });
    return run;
  }

  // --- the app's actions --------------------------------------------------------------------
  /** Answer an incoming call (this device becomes the call's device). @param {MediaOptions} [options] */
  async accept(options = {}) {
    if (this.direction !== "incoming") throw new CallActionNotAllowedError({ code: "call_action_not_allowed", message: "Only the callee answers." }, undefined);
    if (this.isFinal) throw new HealthchatError(`the call is over (${this.endReason})`);
    this.answered = true;
    await this.queue(async () => {
      await this.preparePeer(options);
      const pc = /** @type {RTCPeerConnection} */ (this.pc);
      await pc.setRemoteDescription({ type: "offer", sdp: /** @type {string} */ (this.offer) });
      await this.addRemoteCandidates();
      const answer = await pc.createAnswer();
      await pc.setLocalDescription(answer);
      let ack;
      try {
        ack = await this.manager.request("call.accept", { call_id: this.id, sdp: answer.sdp });
      } catch (error) {
        this.answered = false;
        this.finish(null, this.endReason ?? "not_answered");
        throw error;
      }
      this.update(ack.data.call);
      if (!this.everConnected) this.setState("connecting");
      await this.releaseLocalCandidates();
    });
  }

  /** Decline an incoming call (every device of ours stops ringing). */
  async reject() {
    const ack = await this.manager.request("call.reject", { call_id: this.id });
    this.finish(ack.data.call);
  }

  /**
   * End the call: cancel while ours rings, reject while it rings here, hang up once answered.
   * @param {{reason?: "hangup" | "failed"}} [options] `failed`: the media never connected
   */
  async hangup(options = {}) {
    if (this.isFinal) return;
    if (!this.answered && this.direction === "incoming") return this.reject();
    if (this.id === null) {
      // The invite is still on its way: end the call as soon as its id is known.
      this.hangupRequested = true;
      return;
    }
    if (!this.answered) {
      try {
        const ack = await this.manager.request("call.cancel", { call_id: this.id });
        this.finish(ack.data.call);
        return;
      } catch (error) {
        // Answered meanwhile (its call.accept is on its way): hang up instead.
        if (!(error instanceof CallNotRingingError)) throw error;
      }
    }
    const data = options.reason ? { call_id: this.id, reason: options.reason } : { call_id: this.id };
    try {
      const ack = await this.manager.request("call.hangup", data);
      this.finish(ack.data.call);
    } catch (error) {
      // Over already (the other side ended it first): the final record says how.
      if (!(error instanceof CallNotActiveError)) throw error;
      await this.refreshRecord();
    }
  }

  /**
   * Renegotiate an answered call through `call.update`: an ICE restart (after a network change or
   * a resume) or new tracks/transceivers the app added to `pc`.
   * @param {{iceRestart?: boolean}} [options]
   */
  renegotiate(options = {}) {
    return this.queue(async () => {
      const pc = this.pc;
      if (!pc || this.isFinal || !this.answered || pc.signalingState !== "stable") return;
      const offer = await pc.createOffer({ iceRestart: Boolean(options.iceRestart) });
      await pc.setLocalDescription(offer);
      await this.manager.request("call.update", { call_id: this.id, sdp: offer.sdp });
    });
  }

  /** `RTCPeerConnection.getStats()` of this call (null before the peer connection exists). */
  async getStats() {
    return this.pc ? this.pc.getStats() : null;
  }

  // --- set-up -------------------------------------------------------------------------------
  /** @param {MediaOptions} options */
  async preparePeer(options) {
    this.mediaOptions = options;
    const PC = this.manager.RTCPeerConnection;
    const pc = new PC(await this.manager.rtcConfiguration());
    this.pc = pc;
    pc.onicecandidate = (event) => {
      const init = event.candidate ? toInit(event.candidate) : { candidate: "" };
      if (!event.candidate && this.sentEndOfCandidates) return;
      if (!event.candidate) this.sentEndOfCandidates = true;
      if (init.candidate === "") this.sentEndOfCandidates = true;
      this.sendLocalCandidate(init);
    };
    pc.ontrack = (event) => this.emit("track", event);
    pc.onconnectionstatechange = () => this.onConnectionState(pc.connectionState);
    pc.onnegotiationneeded = () => {
      if (this.state === "connected") this.renegotiate().catch(() => {});
    };
    this.ownsStream = !options.stream;
    const stream = options.stream ?? (await this.manager.getLocalStream(this.media));
    this.localStream = stream;
    for (const track of stream.getTracks()) pc.addTrack(track, stream);
    options.setup?.(pc);
  }

  /** @param {RTCIceCandidateInit} init */
  sendLocalCandidate(init) {
    if (this.isFinal) return;
    if (this.holdLocal) {
      this.localCandidates.push(init);
      return;
    }
    this.manager.request("call.ice", { call_id: this.id, candidate: init }).catch((error) => {
      const typed = callError(error);
      // A call that just ended refuses late candidates: nothing to report.
      if (!this.isFinal && !(typed instanceof ConnectionLostError)) this.emit("error", typed);
    });
  }

  async releaseLocalCandidates() {
    this.holdLocal = false;
    const held = this.localCandidates.splice(0);
    for (const init of held) this.sendLocalCandidate(init);
  }

  /** @param {RTCIceCandidateInit} init */
  async addRemoteCandidate(init) {
    const pc = this.pc;
    if (!pc || !pc.remoteDescription) {
      this.remoteCandidates.push(init);
      return;
    }
    try {
      await pc.addIceCandidate(init.candidate ? init : { candidate: "", sdpMid: init.sdpMid ?? null, sdpMLineIndex: init.sdpMLineIndex ?? null });
    } catch (error) {
      // End-of-candidates is optional (some implementations refuse it); a real candidate that
      // cannot be added is reported.
      if (init.candidate) this.emit("error", error);
    }
  }

  async addRemoteCandidates() {
    for (const init of this.remoteCandidates.splice(0)) await this.addRemoteCandidate(init);
  }

  /** @param {RTCPeerConnectionState} state */
  onConnectionState(state) {
    if (this.isFinal) return;
    if (state === "connected") {
      if (!this.everConnected) this.connectedAt = now();
      this.everConnected = true;
      if (this.client.state !== "connecting") this.setState("connected");
    } else if (state === "disconnected" && this.everConnected) {
      this.setState("reconnecting");
    } else if (state === "failed") {
      if (!this.everConnected) {
        // The media never connected: the call ends `failed` (end_reason media_failed).
        this.hangup({ reason: "failed" }).catch((error) => this.emit("error", error));
      } else {
        this.setState("reconnecting");
        // The impolite side (the caller) restarts ICE; the callee waits for its offer.
        if (this.direction === "outgoing") this.renegotiate({ iceRestart: true }).catch((error) => this.emit("error", error));
      }
    }
  }

  // --- the server's frames ------------------------------------------------------------------
  /** @param {ServerFrame} frame */
  onFrame(frame) {
    switch (frame.type) {
      case "call.ringing":
        if (this.state === "calling") this.setState("ringing");
        break;
      case "call.accept": {
        const sdp = frame.data.sdp;
        this.queue(async () => {
          if (this.isFinal || !this.pc) return;
          this.answered = true;
          await this.pc.setRemoteDescription({ type: "answer", sdp });
          await this.addRemoteCandidates();
          if (this.state !== "connected") this.setState("connecting");
        });
        break;
      }
      case "call.ice": {
        const init = /** @type {RTCIceCandidateInit} */ (frame.data.candidate);
        this.queue(() => this.addRemoteCandidate(init));
        break;
      }
      case "call.update": {
        const sdp = frame.data.sdp;
        this.queue(() => this.onUpdate(sdp));
        break;
      }
      case "call.peer_disconnected":
        this.peerOnline = false;
        this.emit("peerDisconnected", { graceSeconds: frame.data.grace_seconds });
        break;
      case "call.peer_resumed":
        this.peerOnline = true;
        this.emit("peerResumed", undefined);
        break;
      case "call.answered_elsewhere":
        this.emit("answeredElsewhere", undefined);
        this.finish(null, "answered_elsewhere");
        break;
      case "call.reject":
      case "call.hangup":
        // call.ended follows with the final record; stop the media now.
        this.closePeer();
        break;
      case "call.cancel":
        this.finish(null, frame.data.reason);
        break;
      case "call.ended":
      case "call.missed":
        this.finish(frame.data.call);
        break;
      default:
        break;
    }
  }

  /** A renegotiation offer or answer from the other side. @param {string} sdp */
  async onUpdate(sdp) {
    const pc = this.pc;
    if (!pc || this.isFinal) return;
    if (!isOffer(sdp)) {
      if (pc.signalingState === "have-local-offer") await pc.setRemoteDescription({ type: "answer", sdp });
      return;
    }
    if (pc.signalingState === "have-local-offer") {
      // Both offered at once: the callee (polite) rolls back, the caller keeps its own offer.
      if (this.direction === "outgoing") return;
      await pc.setLocalDescription({ type: "rollback" });
    }
    await pc.setRemoteDescription({ type: "offer", sdp });
    await this.addRemoteCandidates();
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    await this.manager.request("call.update", { call_id: this.id, sdp: answer.sdp });
  }

  /** @param {CallRecord} record */
  update(record) {
    this.record = record;
    this.id = record.id;
    if (FINAL.has(record.state)) this.finish(record);
  }

  /**
   * The call is over: keep the final record, close the peer connection, tell the app once.
   * @param {CallRecord | null} record @param {string | null} [reason]
   */
  finish(record, reason = null) {
    if (record) this.record = record;
    if (this.isFinal) return;
    this.endReason = reason ?? record?.end_reason ?? this.record?.end_reason ?? null;
    this.closePeer();
    this.state = "ended";
    this.timings.ended = Math.round(now() - this.born);
    this.emit("state", "ended");
    this.emit("ended", this);
    this.manager.ended(this);
  }

  closePeer() {
    if (this.pc && this.pc.signalingState !== "closed") this.pc.close();
    if (this.ownsStream && this.localStream) for (const track of this.localStream.getTracks()) track.stop();
  }

  /** Ask the server for this call's record (after a reconnect, or a refused hang-up). */
  async refreshRecord() {
    if (this.id === null) return;
    const record = await this.manager.fetchRecord(this.id);
    if (record) this.update(record);
  }

  /** Our socket is back: take our side of an answered call onto it (`call.resume`). */
  async resume() {
    if (this.isFinal) return;
    if (!this.answered || this.id === null) {
      // A caller whose socket closed while ringing cancelled the call (caller_disconnected); a
      // callee's ring may have ended meanwhile: the record says.
      await this.refreshRecord();
      return;
    }
    try {
      const ack = await this.manager.request("call.resume", { call_id: this.id });
      this.update(ack.data.call);
    } catch (error) {
      if (!(error instanceof CallNotActiveError) && !(error instanceof CallNotFoundError)) throw error;
      await this.refreshRecord();
      if (!this.isFinal) this.finish(null, "connection_lost");
      return;
    }
    if (this.isFinal) return;
    const media = this.pc?.connectionState;
    if (media === "connected") this.setState("connected");
    else {
      this.setState("reconnecting");
      if (this.direction === "outgoing") await this.renegotiate({ iceRestart: true });
    }
  }
}

/** @param {RTCIceCandidate} candidate @returns {RTCIceCandidateInit} */
function toInit(candidate) {
  /** @type {RTCIceCandidateInit} */
  const init = { candidate: candidate.candidate, sdpMid: candidate.sdpMid, sdpMLineIndex: candidate.sdpMLineIndex };
  if (candidate.usernameFragment) init.usernameFragment = candidate.usernameFragment;
  return init;
}

export function now() {
  return globalThis.performance?.now() ?? Date.now();
}
