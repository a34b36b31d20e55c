// Test media for Node: a real libwebrtc (@roamhq/wrtc, prebuilt) with synthetic sources — a sine
// tone (audio) and a moving gradient (I420 video) — and helpers to measure what arrives.
import wrtc from "@roamhq/wrtc";

export const { RTCPeerConnection, MediaStream } = wrtc;
const { RTCAudioSource, RTCAudioSink, RTCVideoSource } = wrtc.nonstandard;

// wrtc's native finalizers abort Node's environment teardown ("Check failed: node->IsInUse()")
// after a run that used peer connections. Exiting once the event loop is empty skips that
// teardown; process.exitCode (set by node:test when a test failed) is kept.
process.once("beforeExit", () => process.exit());

const RATE = 48000;
const CHUNK = RATE / 100; // wrtc takes 10 ms of audio per onData

/**
 * A MediaStream with a `frequency` Hz tone and, with `video`, a 160×120 video track.
 * @param {{frequency?: number, video?: boolean}} [options]
 * @returns {{stream: MediaStream, stop: () => void}}
 */
export function syntheticStream({ frequency = 440, video = false } = {}) {
  const audio = new RTCAudioSource();
  const tracks = [audio.createTrack()];
  const samples = new Int16Array(CHUNK);
  let n = 0;
  const audioTimer = setInterval(() => {
    for (let i = 0; i < CHUNK; i += 1, n += 1) samples[i] = Math.round(Math.sin((2 * Math.PI * frequency * n) / RATE) * 8000);
    audio.onData({ samples, sampleRate: RATE, bitsPerSample: 16, channelCount: 1, numberOfFrames: CHUNK });
  }, 10);
  /** @type {ReturnType<typeof setInterval> | null} */
  let videoTimer = null;
  if (video) {
    const source = new RTCVideoSource();
    tracks.push(source.createTrack());
    const width = 160;
    const height = 120;
    const data = new Uint8Array((width * height * 3) / 2);
    let frame = 0;
    videoTimer = setInterval(() => {
      frame += 1;
      for (let i = 0; i < width * height; i += 1) data[i] = (i + frame * 4) & 0xff;
      data.fill(128, width * height);
      source.onFrame({ width, height, data });
    }, 33);
  }
  const stream = new MediaStream(tracks);
  return {
    stream,
    stop() {
      clearInterval(audioTimer);
      if (videoTimer) clearInterval(videoTimer);
      for (const track of tracks) track.stop();
    },
  };
}

/**
 * Record a remote audio track: frames counted, and the tone's frequency estimated from zero
 * crossings of the first channel.
 * @param {MediaStreamTrack} track
 */
export function audioProbe(track) {
  const sink = new RTCAudioSink(track);
  const probe = { frames: 0, crossings: 0, samples: 0, peak: 0, rate: RATE, stop: () => sink.stop() };
  let last = 0;
  sink.ondata = (/** @type {{samples: Int16Array, sampleRate: number, channelCount: number}} */ d) => {
    probe.frames += 1;
    if (probe.frames <= 20) return; // the decoder's first frames may be silence
    probe.rate = d.sampleRate;
    for (let i = 0; i < d.samples.length; i += d.channelCount) {
      const v = d.samples[i];
      probe.peak = Math.max(probe.peak, Math.abs(v));
      if ((last < 0 && v >= 0) || (last >= 0 && v < 0)) probe.crossings += 1;
      last = v;
      probe.samples += 1;
    }
  };
  return {
    probe,
    /** the estimated frequency in Hz (0 before any sample) */
    frequency: () => (probe.samples ? (probe.crossings / 2) * (probe.rate / probe.samples) : 0),
  };
}

/**
 * What getStats() says about the media: inbound bytes per kind and the selected pair's
 * candidate types.
 * @param {RTCPeerConnection} pc
 */
export async function mediaStats(pc) {
  const report = await pc.getStats();
  /** @type {Record<string, number>} */
  const inbound = {};
  /** @type {any} */
  let pair = null;
  /** @type {Map<string, any>} */
  const byId = new Map();
  report.forEach((/** @type {any} */ r) => {
    byId.set(r.id, r);
    if (r.type === "inbound-rtp") inbound[r.kind ?? r.mediaType] = (inbound[r.kind ?? r.mediaType] ?? 0) + (r.bytesReceived ?? 0);
    if (r.type === "candidate-pair" && (r.nominated || r.selected) && r.state === "succeeded") pair = r;
  });
  return {
    inbound,
    local: pair ? byId.get(pair.localCandidateId)?.candidateType ?? null : null,
    remote: pair ? byId.get(pair.remoteCandidateId)?.candidateType ?? null : null,
  };
}
