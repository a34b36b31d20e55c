// The Node load generator of bench/messaging.py (`--loadgen node`): the same pairs, phases,
// control commands and JSON answers as bench/loadgen.py's pairs client, for three wire protocols:
//
//   --protocol ws        healthchat's /ws/v1/ (docs/protocol.md: `Authorization: Bearer` token,
//                        `ready`, `message.send` {conversation_id, client_id, body} with a `ref`,
//                        `ack` {message}, `message.new` {message}, `error` {code}) and the bare
//                        relay (bench/relay.py, the same frames, no token);
//   --protocol socketio  bench/socketio/relay.mjs (handshake auth {user, c}, `message.send` with
//                        an ack callback, `message.new` {message}).
//
// It costs less CPU per message than the Python client, which leaves more of a small machine to
// the server under test. Sockets come in pairs (one conversation each): the sender sends, the
// receiver must get `message.new`. `saturation`: every sender keeps `window` messages in flight
// (a slot frees when the message is acked AND received, or after `msg_timeout`); `offered`: every
// sender sends `rate` messages/s (open loop, phases spread evenly). Measured per phase, as the
// Python client does: messages/s delivered end to end inside the window, send→receive and
// send→ack percentiles, lost (acked, never received within the grace), duplicated, unacked, error
// codes, unexpected closes, the generator's own CPU; and (here only) `seq` checks per receiving
// socket: `seq_gaps` (numbers skipped) and `seq_out_of_order` (a number not above the last one).
//
//   node bench/socketio/loadgen.mjs --url ws://127.0.0.1:8000/ws/v1/ --pairs pairs.json --mode both
//   node bench/socketio/loadgen.mjs --protocol socketio --url http://127.0.0.1:8766,http://127.0.0.1:8767 ...
//
// Several --url (comma-separated, socket.io's multi-process form): pair i's sender goes to url
// i mod n and its receiver to url (i + 1) mod n, so with two processes every message crosses
// Redis. --control: one JSON command per line on stdin (warmup, connect, saturation, offered,
// close, quit), one JSON answer per line on stdout (bench/harness.py LoadGenProcess).
// Times come from CLOCK_MONOTONIC (process.hrtime), the clock of Python's time.perf_counter().
import { readFileSync, writeFileSync } from "node:fs";
import { randomUUID } from "node:crypto";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import WebSocket from "ws";
import { io } from "socket.io-client";

const CONNECT_CONCURRENCY = 32;
const KEEPALIVE_SECONDS = 60; // docs/protocol.md "Idle sockets": a ping well within the idle timeout

const now = () => Number(process.hrtime.bigint()) / 1e9;
const cpuSeconds = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};
const sleep = (s) => new Promise((resolve) => setTimeout(resolve, Math.max(0, s * 1000)));
const log = (...parts) => console.error(...parts);

// Python's round(): halves to even (the percentiles must pick the same index as bench/loadgen.py)
function pyRound(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}
function round(x, digits) {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
function percentile(sorted, q) {
  if (!sorted.length) return null;
  const index = Math.min(sorted.length - 1, Math.max(0, pyRound((q / 100) * sorted.length + 0.5) - 1));
  return sorted[index];
}
const ms = (v) => (v === null || v === undefined ? null : round(v * 1000, 2));
const numeric = (a, b) => a - b;

class Phase {
  constructor(name) {
    this.name = name;
    this.messages = new Map();
    this.errors = {};
    this.foreign = 0;
    this.pending = 0;
    this.expired = 0;
    this.tStart = 0;
    this.tEnd = 0;
    this.leadIn = 0;
    this.senders = [];
    this.onSettled = null;
    this.seqGaps = 0;
    this.seqOutOfOrder = 0;
  }
  add(msg) {
    this.messages.set(msg.clientId, msg);
    msg.pair.inflight.set(msg.clientId, msg);
    this.pending += 1;
  }
  settle(msg) {
    if (msg.settled) return;
    msg.settled = true;
    this.pending -= 1;
    this.release(msg);
    if (this.pending === 0 && this.onSettled) this.onSettled();
  }
  release(msg) {
    if (msg.done) return;
    msg.done = true;
    msg.pair.inflight.delete(msg.clientId);
    msg.pair.free();
  }
}

class Pair {
  constructor(index, spec) {
    this.index = index;
    this.conversationId = Number(spec.conversation_id);
    this.senderToken = spec.sender_token ?? null;
    this.receiverToken = spec.receiver_token ?? null;
    this.sender = null; // a Conn
    this.receiver = null;
    this.inflight = new Map();
    this.lastSeq = null;
    this.free = () => {};
  }
}

// --- connections: one small interface over both protocols ----------------------------------------
// open() resolves once the socket is usable; send(msg, text) sends one message; close().
// Events go to the handlers given: onAck(ref, message), onError(ref, code), onNew(message), onClose(code).
class WsConn {
  constructor(url, token, conversationId, handlers) {
    this.url = `${url}?c=${conversationId}`;
    this.token = token;
    this.h = handlers;
    this.ws = null;
    this.open_ = false;
  }
  open() {
    return new Promise((resolve, reject) => {
      const headers = this.token ? { Authorization: `Bearer ${this.token}` } : {};
      const ws = new WebSocket(this.url, { headers, perMessageDeflate: false, maxPayload: 1 << 22 });
      this.ws = ws;
      const timer = setTimeout(() => {
        ws.terminate();
        reject(new Error("no ready frame in 60 s"));
      }, 60000);
      let first = true;
      ws.on("message", (data) => {
        const t = now();
        const text = data.toString();
        if (first) {
          first = false;
          clearTimeout(timer);
          let frame;
          try {
            frame = JSON.parse(text);
          } catch {
            frame = {};
          }
          if (frame.type !== "ready") {
            ws.close();
            reject(new Error(`expected ready, got ${text.slice(0, 200)}`));
            return;
          }
          this.open_ = true;
          resolve(this);
          return;
        }
        this.frame(text, t);
      });
      ws.on("error", (err) => {
        if (first) {
          clearTimeout(timer);
          first = false;
          reject(err);
        }
      });
      ws.on("close", (code) => {
        if (first) {
          clearTimeout(timer);
          first = false;
          reject(new Error(`closed ${code} before ready`));
          return;
        }
        const was = this.open_;
        this.open_ = false;
        if (was) this.h.onClose(String(code || "none"));
      });
    });
  }
  frame(text, t) {
    // message.new is the hot frame: parse it whole (seq, client_id)
    const frame = JSON.parse(text);
    switch (frame.type) {
      case "message.new":
        this.h.onNew(frame.data.message, t);
        break;
      case "ack":
        this.h.onAck(frame.ref, t);
        break;
      case "error":
        this.h.onError(frame.ref, (frame.error && frame.error.code) || "?");
        break;
      default:
        break;
    }
  }
  send(clientId, conversationId, body) {
    this.ws.send(
      `{"type":"message.send","ref":"${clientId}","data":{"conversation_id":${conversationId},` +
        `"client_id":"${clientId}","body":"${body}"}}`,
    );
  }
  ping() {
    if (this.open_) this.ws.send('{"type":"ping"}');
  }
  close() {
    return new Promise((resolve) => {
      const ws = this.ws;
      this.open_ = false;
      if (!ws || ws.readyState === WebSocket.CLOSED) return resolve();
      const timer = setTimeout(() => {
        ws.terminate();
        resolve();
      }, 10000);
      ws.once("close", () => {
        clearTimeout(timer);
        resolve();
      });
      ws.close(1000);
    });
  }
}

class SioConn {
  constructor(url, user, conversationId, handlers) {
    this.url = url;
    this.user = user;
    this.conversationId = conversationId;
    this.h = handlers;
    this.socket = null;
    this.open_ = false;
  }
  open() {
    return new Promise((resolve, reject) => {
      const socket = io(this.url, {
        transports: ["websocket"],
        forceNew: true,
        reconnection: false,
        timeout: 60000,
        auth: { user: this.user, c: this.conversationId },
      });
      this.socket = socket;
      socket.once("connect", () => {
        this.open_ = true;
        resolve(this);
      });
      socket.once("connect_error", (err) => reject(err));
      socket.on("message.new", (data) => this.h.onNew(data.message, now()));
      socket.on("disconnect", (reason) => {
        const was = this.open_;
        this.open_ = false;
        if (was && reason !== "io client disconnect") this.h.onClose(reason);
      });
    });
  }
  send(clientId, conversationId, body) {
    this.socket.emit("message.send", { conversation_id: conversationId, client_id: clientId, body }, (reply) => {
      const t = now();
      if (reply && reply.message) this.h.onAck(clientId, t);
      else this.h.onError(clientId, (reply && reply.error && reply.error.code) || "?");
    });
  }
  ping() {} // socket.io's own heartbeat keeps the connection
  close() {
    this.open_ = false;
    if (this.socket) this.socket.disconnect();
    return Promise.resolve();
  }
}

class LoadGen {
  constructor(urls, protocol, pairs, bodyBytes) {
    this.urls = urls;
    this.protocol = protocol;
    this.pairs = pairs.map((spec, i) => new Pair(i, spec));
    this.phase = null;
    this.closed = {};
    this.keepalive = null;
    this.bodyPad = "x".repeat(Math.max(0, bodyBytes - 12));
  }

  // --- sockets ---------------------------------------------------------------------------------
  conn(pair, role) {
    const n = this.urls.length;
    const url = this.urls[(pair.index + (role === "receiver" ? 1 : 0)) % n];
    const handlers =
      role === "sender"
        ? {
            onAck: (ref, t) => this.onAck(ref, t),
            onError: (ref, code) => this.onError(ref, code),
            onNew: () => {},
            onClose: (code) => this.noteClose(code),
          }
        : {
            onAck: () => {},
            onError: () => {},
            onNew: (message, t) => this.onNew(pair, message, t),
            onClose: (code) => this.noteClose(code),
          };
    if (this.protocol === "socketio") {
      return new SioConn(url, `${role[0]}${pair.index}`, pair.conversationId, handlers);
    }
    const token = role === "sender" ? pair.senderToken : pair.receiverToken;
    return new WsConn(url, token, pair.conversationId, handlers);
  }

  async openPair(pair) {
    try {
      const receiver = this.conn(pair, "receiver");
      await receiver.open();
      pair.receiver = receiver;
      pair.lastSeq = null;
      const sender = this.conn(pair, "sender");
      await sender.open();
      pair.sender = sender;
      return true;
    } catch (err) {
      log(`pair ${pair.index}: connect failed: ${err && err.message}`);
      if (pair.receiver) await pair.receiver.close();
      pair.receiver = null;
      return false;
    }
  }

  async connect(count = null) {
    const pairs = (count === null ? this.pairs : this.pairs.slice(0, count)).filter((p) => p.sender === null);
    const started = now();
    let failed = 0;
    let next = 0;
    const worker = async () => {
      while (next < pairs.length) {
        const pair = pairs[next++];
        if (!(await this.openPair(pair))) failed += 1;
      }
    };
    await Promise.all(Array.from({ length: Math.min(CONNECT_CONCURRENCY, pairs.length) }, worker));
    if (this.keepalive === null) this.startKeepalive();
    return {
      event: "connected",
      sockets: 2 * this.pairs.filter((p) => p.sender !== null).length,
      failed_pairs: failed,
      seconds: round(now() - started, 2),
    };
  }

  startKeepalive() {
    // every socket sends `ping` once per KEEPALIVE_SECONDS, spread over the interval
    let i = 0;
    const tick = () => {
      const socks = this.pairs.flatMap((p) => [p.sender, p.receiver]).filter(Boolean);
      if (socks.length) socks[i++ % socks.length].ping();
      this.keepalive = setTimeout(tick, (KEEPALIVE_SECONDS * 1000) / Math.max(1, socks.length));
    };
    this.keepalive = setTimeout(tick, 1000);
  }

  async close() {
    await Promise.all(this.pairs.flatMap((p) => [p.sender, p.receiver]).filter(Boolean).map((c) => c.close()));
    for (const pair of this.pairs) pair.sender = pair.receiver = null;
    if (this.keepalive !== null) clearTimeout(this.keepalive);
    this.keepalive = null;
    return { event: "closed", unexpected_closes: { ...this.closed } };
  }

  noteClose(code) {
    this.closed[code] = (this.closed[code] || 0) + 1;
  }

  // --- frames in -------------------------------------------------------------------------------
  onAck(ref, t) {
    const phase = this.phase;
    if (!phase) return;
    const msg = phase.messages.get(ref);
    if (msg && !msg.acked) {
      msg.acked = true;
      msg.tAck = t;
      if (msg.received) phase.settle(msg);
    }
  }

  onError(ref, code) {
    const phase = this.phase;
    if (!phase) return;
    phase.errors[code] = (phase.errors[code] || 0) + 1;
    const msg = phase.messages.get(ref);
    if (msg) {
      msg.error = code;
      phase.settle(msg);
    }
  }

  onNew(pair, message, t) {
    const seq = Number(message.seq);
    const phase = this.phase;
    if (Number.isFinite(seq)) {
      if (pair.lastSeq !== null && phase) {
        if (seq > pair.lastSeq + 1) phase.seqGaps += seq - pair.lastSeq - 1;
        else if (seq <= pair.lastSeq) phase.seqOutOfOrder += 1;
      }
      if (pair.lastSeq === null || seq > pair.lastSeq) pair.lastSeq = seq;
    }
    if (!phase) return;
    const msg = phase.messages.get(message.client_id);
    if (!msg) {
      phase.foreign += 1;
      return;
    }
    msg.received += 1;
    if (msg.received === 1) {
      msg.tRecv = t;
      if (msg.acked) phase.settle(msg);
    }
  }

  // --- frames out ------------------------------------------------------------------------------
  send(phase, pair, k) {
    const clientId = randomUUID();
    const msg = {
      pair,
      clientId,
      tSend: now(),
      tAck: 0,
      tRecv: 0,
      acked: false,
      received: 0,
      error: null,
      settled: false,
      done: false,
    };
    phase.add(msg);
    pair.sender.send(clientId, pair.conversationId, `m${String(k).padStart(10, "0")} ${this.bodyPad}`);
  }

  // --- phases ----------------------------------------------------------------------------------
  async runPhase(mode, opts) {
    const seconds = Number(opts.seconds ?? 30);
    const window = Number(opts.window ?? 4);
    const rate = Number(opts.rate ?? 1);
    const grace = Number(opts.grace ?? 10);
    const msgTimeout = Number(opts.msg_timeout ?? 30);
    const leadIn = mode === "offered" ? Number(opts.lead_in ?? 0) : 0;
    const progressEvery = opts.progress_every ? Number(opts.progress_every) : null;
    const pairs = this.pairs.filter((p) => p.sender !== null);
    const phase = new Phase(mode);
    phase.senders = pairs;
    this.phase = phase;
    this.closed = {};
    const cpu0 = cpuSeconds();
    const begin = now();
    const start = begin + leadIn;
    phase.tStart = start;
    phase.leadIn = leadIn;
    const end = start + seconds;
    const timers = [];
    let sendingDone;
    const sending = new Promise((resolve) => (sendingDone = resolve));

    if (mode === "saturation") {
      const counters = new Map();
      for (const pair of pairs) {
        pair.inflight = new Map();
        counters.set(pair, 0);
        pair.free = () => {
          if (phase !== this.phase) return;
          while (pair.inflight.size < window && now() < end && pair.sender && pair.sender.open_) {
            const k = counters.get(pair);
            counters.set(pair, k + 1);
            this.send(phase, pair, k);
          }
        };
      }
      for (const pair of pairs) pair.free();
      const expirer = setInterval(() => {
        const limit = now() - msgTimeout;
        for (const pair of pairs) {
          for (const msg of [...pair.inflight.values()]) {
            if (msg.tSend < limit) {
              phase.expired += 1;
              phase.release(msg);
            }
          }
        }
      }, 500);
      timers.push(() => clearInterval(expirer));
      setTimeout(sendingDone, Math.max(0, (end - now()) * 1000));
    } else {
      const interval = 1 / rate;
      let running = pairs.length;
      const doneOne = () => {
        running -= 1;
        if (running === 0) sendingDone();
      };
      if (!running) sendingDone();
      pairs.forEach((pair, i) => {
        pair.inflight = new Map();
        pair.free = () => {};
        const first = begin + i / pairs.length / rate;
        let k = 0;
        const tick = () => {
          if (phase !== this.phase) return doneOne();
          const t = now();
          while (first + k * interval <= t) {
            if (first + k * interval >= end || !pair.sender || !pair.sender.open_) return doneOne();
            this.send(phase, pair, k);
            k += 1;
          }
          const due = first + k * interval;
          if (due >= end) return doneOne();
          setTimeout(tick, Math.max(0, (due - now()) * 1000));
        };
        setTimeout(tick, Math.max(0, (first - now()) * 1000));
      });
    }
    let progress = null;
    if (progressEvery) progress = this.startProgress(phase, progressEvery, grace);

    await Promise.race([sending, sleep(leadIn + seconds + 1)]);
    phase.tEnd = now();
    if (progress) clearInterval(progress);
    const cpuSend = cpuSeconds() - cpu0;
    if (phase.pending > 0) {
      await Promise.race([new Promise((resolve) => (phase.onSettled = resolve)), sleep(grace)]);
    }
    for (const stop of timers) stop();
    await sleep(0.2); // let duplicates, if any, arrive
    this.phase = null;
    return this.report(phase, mode, seconds, window, rate, cpuSend, opts.dump);
  }

  startProgress(phase, every, grace) {
    let previous = phase.tStart;
    return setInterval(() => {
      const t = now();
      let delivered = 0;
      let received = 0;
      let lost = 0;
      let duplicated = 0;
      let overdue = 0;
      const latency = [];
      for (const m of phase.messages.values()) {
        if (m.acked && m.received) {
          delivered += 1;
          const last = Math.max(m.tAck, m.tRecv);
          if (previous < last && last <= t) received += 1;
        }
        if (m.received && previous < m.tRecv && m.tRecv <= t) latency.push(m.tRecv - m.tSend);
        if (m.received > 1) duplicated += m.received - 1;
        if (m.acked && !m.received && m.tAck < t - grace) lost += 1;
        if (!m.acked && !m.error && m.tSend < t - grace) overdue += 1;
      }
      latency.sort(numeric);
      process.stdout.write(
        JSON.stringify({
          event: "progress",
          t: round(t - phase.tStart, 1),
          delivered_per_s: round(received / (t - previous), 1),
          latency_ms: { p50: ms(percentile(latency, 50)), p99: ms(percentile(latency, 99)) },
          sent: phase.messages.size,
          delivered,
          lost_so_far: lost,
          duplicated_so_far: duplicated,
          unacked_overdue: overdue,
          errors: { ...phase.errors },
          unexpected_closes: { ...this.closed },
        }) + "\n",
      );
      previous = t;
    }, every * 1000);
  }

  report(phase, mode, seconds, window, rate, cpuSend, dump) {
    const everything = [...phase.messages.values()];
    const messages = everything.filter((m) => m.tSend >= phase.tStart);
    const early = everything.filter((m) => m.tSend < phase.tStart);
    const windowEnd = phase.tStart + seconds;
    const delivered = messages.filter((m) => m.acked && m.received);
    const inWindow = delivered.filter((m) => Math.max(m.tAck, m.tRecv) <= windowEnd).length;
    const latency = messages.filter((m) => m.received).map((m) => m.tRecv - m.tSend).sort(numeric);
    const ackLatency = messages.filter((m) => m.acked).map((m) => m.tAck - m.tSend).sort(numeric);
    let lastDone = phase.tStart;
    for (const m of delivered) lastDone = Math.max(lastDone, m.tAck, m.tRecv);
    const count = (list, pred) => list.reduce((n, m) => n + (pred(m) ? 1 : 0), 0);
    const out = {
      mode,
      pairs: phase.senders.length,
      seconds,
      window: mode === "saturation" ? window : null,
      offered_per_s: mode === "offered" ? round(rate * phase.senders.length, 1) : null,
      sent: messages.length,
      acked: count(messages, (m) => m.acked),
      received: count(messages, (m) => m.received),
      delivered: delivered.length,
      delivered_in_window: inWindow,
      msgs_per_s: round(inWindow / seconds, 1),
      msgs_per_s_overall: round(delivered.length / Math.max(1e-9, lastDone - phase.tStart), 1),
      latency_ms: {
        p50: ms(percentile(latency, 50)),
        p90: ms(percentile(latency, 90)),
        p99: ms(percentile(latency, 99)),
        max: ms(latency.length ? latency[latency.length - 1] : null),
      },
      ack_latency_ms: { p50: ms(percentile(ackLatency, 50)), p99: ms(percentile(ackLatency, 99)) },
      // every message of the phase, the lead-in's too: none may be lost or duplicated
      lost: count(everything, (m) => m.acked && !m.received),
      duplicated: everything.reduce((n, m) => n + Math.max(0, m.received - 1), 0),
      unacked: count(everything, (m) => !m.acked && !m.error),
      received_unacked: count(everything, (m) => m.received && !m.acked),
      seq_gaps: phase.seqGaps,
      seq_out_of_order: phase.seqOutOfOrder,
      errors: phase.errors,
      expired_slots: phase.expired,
      foreign_received: phase.foreign,
      unexpected_closes: { ...this.closed },
      loadgen_cpu_s: round(cpuSend, 2),
      loadgen_cpu_util: round(cpuSend / Math.max(1e-9, phase.tEnd - phase.tStart + phase.leadIn), 2),
      loadgen: "node",
    };
    if (phase.leadIn) {
      const earlyLatency = early.filter((m) => m.received).map((m) => m.tRecv - m.tSend).sort(numeric);
      out.lead_in = {
        seconds: phase.leadIn,
        sent: early.length,
        delivered: count(early, (m) => m.acked && m.received),
        latency_ms: {
          p50: ms(percentile(earlyLatency, 50)),
          p99: ms(percentile(earlyLatency, 99)),
          max: ms(earlyLatency.length ? earlyLatency[earlyLatency.length - 1] : null),
        },
      };
    }
    if (dump) {
      const ids = [...phase.messages.keys()];
      writeFileSync(
        dump,
        JSON.stringify({
          sent: ids,
          acked: everything.filter((m) => m.acked).map((m) => m.clientId),
          received: everything.filter((m) => m.received).map((m) => m.clientId),
          t_start: phase.tStart,
          t_start_wall: Date.now() / 1000 - (now() - phase.tStart),
          latency: messages.filter((m) => m.received).map((m) => [round(m.tSend - phase.tStart, 4), round(m.tRecv - m.tSend, 6)]),
          // CLOCK_MONOTONIC seconds (Python's time.perf_counter()): bench/latency_breakdown.py
          // joins them with the server's latency probe by client_id
          times: messages.map((m) => [m.clientId, round(m.tSend, 6), m.acked ? round(m.tAck, 6) : null, m.received ? round(m.tRecv, 6) : null]),
        }),
      );
    }
    return out;
  }

  async warmup(seconds) {
    // open the first pair, send 20 messages/s for `seconds`, close it
    const saved = this.pairs;
    this.pairs = saved.slice(0, 1);
    let result;
    try {
      await this.connect();
      result = await this.runPhase("offered", { seconds, rate: 20, grace: 10 });
      await this.close();
    } finally {
      this.pairs = saved;
      this.closed = {};
    }
    return { event: "warm", delivered: result.delivered, lost: result.lost };
  }
}

async function controlLoop(gen) {
  const lines = createInterface({ input: process.stdin, terminal: false });
  for await (const line of lines) {
    if (!line.trim()) continue;
    const command = JSON.parse(line);
    const name = command.cmd;
    delete command.cmd;
    if (name === "quit") break;
    let reply;
    try {
      if (name === "connect") reply = await gen.connect();
      else if (name === "warmup") reply = await gen.warmup(Number(command.seconds ?? 2));
      else if (name === "close") reply = await gen.close();
      else if (name === "saturation" || name === "offered") reply = await gen.runPhase(name, command);
      else reply = { event: "error", message: `unknown command ${name}` };
    } catch (err) {
      log(`command ${name} failed:`, err);
      reply = { event: "error", message: String(err && err.message) };
    }
    process.stdout.write(JSON.stringify(reply) + "\n");
  }
  await gen.close();
}

async function standalone(gen, args) {
  const out = { connect: await gen.connect() };
  const modes = args.mode === "both" ? ["saturation", "offered"] : [args.mode];
  for (const mode of modes) {
    out[mode] = await gen.runPhase(mode, {
      seconds: args.seconds,
      window: args.window,
      rate: args.rate,
      grace: args.grace,
      msg_timeout: args["msg-timeout"],
      lead_in: args["lead-in"],
    });
  }
  out.close = await gen.close();
  process.stdout.write(JSON.stringify(out, null, 2) + "\n");
}

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    pairs: { type: "string" },
    protocol: { type: "string", default: "ws" },
    control: { type: "boolean", default: false },
    mode: { type: "string", default: "both" },
    seconds: { type: "string", default: "30" },
    window: { type: "string", default: "4" },
    rate: { type: "string", default: "1" },
    grace: { type: "string", default: "10" },
    "msg-timeout": { type: "string", default: "30" },
    "lead-in": { type: "string", default: "0" },
    "body-bytes": { type: "string", default: "64" },
  },
});
if (!args.url || !args.pairs) {
  log("usage: loadgen.mjs --url URL[,URL...] --pairs pairs.json [--protocol ws|socketio] [--control | --mode both]");
  process.exit(2);
}
if (!["ws", "socketio"].includes(args.protocol)) {
  log(`unknown --protocol ${args.protocol} (ws or socketio)`);
  process.exit(2);
}
const pairs = JSON.parse(readFileSync(args.pairs, "utf8")).pairs;
const gen = new LoadGen(args.url.split(","), args.protocol, pairs, Number(args["body-bytes"]));
if (args.control) await controlLoop(gen);
else await standalone(gen, args);
process.exit(0);
