// The call screen: audio/video calls through the SDK's CallManager/CallSession only (the media
// is the browser's RTCPeerConnection; signalling, TURN credentials, glare, multi-device and
// resume are the SDK's). Plugs into the console through its DOM events: `hc:session` (make the
// manager), `hc:conversation` (the call buttons in #call-slot call the open conversation's
// other member). Calls go through the TURN relay only when the server offers one (the peers'
// addresses stay hidden from each other).
import { CallManager } from "@healthchat/client";
import { byId, el, nameOf } from "./dom.js";

/** @typedef {import("@healthchat/client").CallSession} CallSession */

/** @param {RTCIceServer[]} servers */
const relayWhenOffered = (servers) =>
  servers.some((s) => [s.urls].flat().some((u) => String(u).startsWith("turn"))) ? "relay" : "all";

/** "1:05" @param {number} seconds */
export function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

/** The text of a call's entry in the chat history. @param {{media: string, state: string, duration?: number}} call */
export function callSummary(call) {
  const kind = call.media === "video" ? "Video call" : "Audio call";
  if (call.state === "ended") return `${kind} · ${clock(call.duration ?? 0)}`;
  if (call.state === "missed" || call.state === "cancelled" || call.state === "busy") return `Missed ${kind.toLowerCase()}`;
  if (call.state === "rejected") return `${kind} declined`;
  if (call.state === "failed") return `${kind} failed`;
  return kind;
}

const LABELS = {
  calling: "Calling…",
  ringing: "Ringing…",
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  ended: "Call ended",
};

class CallScreen {
  /** @param {any} session the console's signed-in session ({client, rest, me}) */
  constructor(session) {
    this.session = session;
    this.calls = new CallManager({ client: session.client, rest: session.rest, iceTransportPolicy: relayWhenOffered });
    /** @type {CallSession | null} */
    this.current = null;
    /** @type {any} */
    this.conversation = null;
    /** @type {ReturnType<typeof setInterval> | null} */
    this.ticker = null;
    this.calls.on("incoming", (/** @type {CallSession} */ call) => this.onIncoming(call));
    byId("call-accept").addEventListener("click", () => void this.run(() => /** @type {CallSession} */ (this.current).accept()));
    byId("call-decline").addEventListener("click", () => void this.run(() => /** @type {CallSession} */ (this.current).reject()));
    byId("call-hangup").addEventListener("click", () => void this.run(() => /** @type {CallSession} */ (this.current).hangup()));
    byId("call-mute").addEventListener("click", () => this.toggle("audio", "call-mute", "Mute", "Unmute"));
    byId("call-camera").addEventListener("click", () => this.toggle("video", "call-camera", "Camera off", "Camera on"));
  }

  /** @param {any} conversation */
  onConversation(conversation) {
    this.conversation = conversation;
    const slot = byId("call-slot");
    if (conversation.kind !== "direct") {
      slot.replaceChildren();
      return;
    }
    const peer = this.peerName(conversation);
    slot.replaceChildren(
      el("button", { type: "button", id: "call-audio", class: "secondary", "aria-label": `Audio call with ${peer}`, onclick: () => this.place("audio") }, "Audio call"),
      el("button", { type: "button", id: "call-video", class: "secondary", "aria-label": `Video call with ${peer}`, onclick: () => this.place("video") }, "Video call"),
    );
    this.syncButtons();
  }

  /** @param {any} conversation */
  peerName(conversation) {
    const peer = conversation.members.find((/** @type {any} */ m) => m.user_id !== this.session.me.id) ?? conversation.members[0];
    return nameOf(peer);
  }

  /** @param {"audio" | "video"} media */
  async place(media) {
    if (this.current || !this.conversation) return;
    this.show(null, `${media === "video" ? "Video" : "Audio"} call with ${this.peerName(this.conversation)}`);
    await this.run(async () => {
      const call = await this.calls.call(this.conversation.id, { media });
      this.attach(call);
    });
  }

  /** @param {CallSession} call */
  onIncoming(call) {
    if (this.current) return; // busy here: let it ring on the user's other devices
    const caller = call.record?.caller_id;
    const conv = this.conversation?.id === call.conversationId ? this.conversation : null;
    const who = conv ? this.peerName(conv) : `User ${caller}`;
    this.show(call, `Incoming ${call.media} call from ${who}`);
    this.attach(call);
  }

  /** @param {CallSession} call */
  attach(call) {
    this.current = call;
    const panel = byId("call-panel");
    panel.dataset.callId = String(call.id ?? "");
    panel.dataset.media = call.media;
    panel.dataset.direction = call.direction;
    const remote = /** @type {HTMLVideoElement} */ (byId("call-remote"));
    const local = /** @type {HTMLVideoElement} */ (byId("call-local"));
    const remoteStream = new MediaStream();
    remote.srcObject = remoteStream;
    call.on("track", (/** @type {RTCTrackEvent} */ e) => {
      remoteStream.addTrack(e.track);
      void remote.play().catch(() => {});
    });
    call.on("state", () => {
      if (call.localStream && local.srcObject !== call.localStream) local.srcObject = call.localStream;
      this.render();
    });
    call.on("replaced", (/** @type {CallSession} */ next) => this.attach(next));
    call.on("peerDisconnected", () => this.note("The other side lost its connection…"));
    call.on("peerResumed", () => this.note(""));
    call.on("ended", () => this.onEnded(call));
    this.render();
  }

  /** @param {CallSession} call */
  onEnded(call) {
    if (this.current !== call) return;
    this.render();
    if (this.ticker) clearInterval(this.ticker);
    this.ticker = null;
    const record = call.record;
    byId("call-status").textContent = record ? `Call ended · ${callSummary(record)}` : "Call ended";
    this.current = null;
    this.syncButtons();
    setTimeout(() => {
      if (!this.current) byId("call-panel").hidden = true;
    }, 4000);
  }

  /** @param {CallSession | null} call @param {string} title */
  show(call, title) {
    const panel = byId("call-panel");
    panel.hidden = false;
    panel.dataset.callState = call ? call.state : "calling";
    byId("call-title").textContent = title;
    byId("call-status").textContent = call ? LABELS[call.state] : LABELS.calling;
    byId("call-error").textContent = "";
    this.note("");
  }

  render() {
    const call = this.current;
    if (!call) return;
    const panel = byId("call-panel");
    panel.dataset.callState = call.state;
    panel.dataset.callId = String(call.id ?? "");
    const incomingRinging = call.direction === "incoming" && call.state === "ringing";
    byId("call-accept").hidden = !incomingRinging;
    byId("call-decline").hidden = !incomingRinging;
    byId("call-hangup").hidden = incomingRinging || call.state === "ended";
    byId("call-mute").hidden = !["connecting", "connected", "reconnecting"].includes(call.state);
    byId("call-camera").hidden = byId("call-mute").hidden || call.media !== "video";
    byId("call-media").hidden = call.media !== "video" || !["connecting", "connected", "reconnecting"].includes(call.state);
    if (call.state !== "ended") byId("call-status").textContent = LABELS[call.state];
    if (call.state === "connected" && !this.ticker) {
      const started = Date.now();
      this.ticker = setInterval(() => {
        if (this.current?.state === "connected") byId("call-status").textContent = `Connected · ${clock((Date.now() - started) / 1000)}`;
      }, 1000);
    }
    this.syncButtons();
  }

  syncButtons() {
    for (const id of ["call-audio", "call-video"]) {
      const button = document.getElementById(id);
      if (button) /** @type {HTMLButtonElement} */ (button).disabled = Boolean(this.current);
    }
  }

  /** @param {"audio" | "video"} kind @param {string} id @param {string} on @param {string} off */
  toggle(kind, id, on, off) {
    const stream = this.current?.localStream;
    if (!stream) return;
    const tracks = kind === "audio" ? stream.getAudioTracks() : stream.getVideoTracks();
    const enabled = !tracks.every((t) => t.enabled);
    for (const t of tracks) t.enabled = enabled;
    const button = byId(id);
    button.textContent = enabled ? on : off;
    button.setAttribute("aria-pressed", String(!enabled));
  }

  /** @param {string} text */
  note(text) {
    byId("call-note").textContent = text;
  }

  /** @param {() => Promise<unknown>} action */
  async run(action) {
    try {
      await action();
    } catch (e) {
      byId("call-error").textContent = e instanceof Error ? e.message : String(e);
      if (this.current?.isFinal) this.onEnded(this.current);
      else if (!this.current) byId("call-panel").dataset.callState = "failed";
    }
  }
}

/** @type {CallScreen | null} */
let screen = null;
document.addEventListener("hc:session", (event) => {
  const { session } = /** @type {CustomEvent} */ (event).detail;
  screen = new CallScreen(session);
  const exposed = /** @type {any} */ (window).healthchat;
  if (exposed) exposed.calls = screen.calls;
});
document.addEventListener("hc:conversation", (event) => {
  screen?.onConversation(/** @type {CustomEvent} */ (event).detail.conversation);
});
