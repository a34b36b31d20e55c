// The seed's stack in the bench: a small Node socket.io relay of 1:1 messages, what healthchat
// is compared with (issue 26). No database, no persistence: the same work as bench/relay.py
// (the bare Python relay), on socket.io.
//
//   node bench/socketio/relay.mjs --port 8766                      # one process, in-process rooms
//   node bench/socketio/relay.mjs --port 8767 --redis redis://127.0.0.1:6379 --key hcsio
//                                  # one of N processes sharing rooms through @socket.io/redis-adapter
//
// Handshake: `auth: {user: "<id>", c: <conversation_id>}` (a user id and the conversation, the
// way the bare relay takes `?c=`); a socket without a user is refused (`connect_error`
// "unauthorized"). Each socket joins its conversation's room. `message.send` {conversation_id,
// client_id, body} → the message (seq numbered per conversation by the process that takes it,
// created_at) goes as `message.new` {message} to the room's other sockets (through Redis to the
// other processes with --redis) and back to the sender in the ack callback: {message}.
// WebSocket transport only (no long-polling: no sticky sessions needed behind a balancer).
// GET /healthz and /readyz answer 200 (for a load balancer's checks). Exits after --seconds.
import { createServer } from "node:http";
import { parseArgs } from "node:util";
import { Server } from "socket.io";

const { values: args } = parseArgs({
  options: {
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string", default: "8766" },
    redis: { type: "string" },
    key: { type: "string", default: "socket.io" },
    seconds: { type: "string", default: "3600" },
  },
});

const http = createServer((req, res) => {
  if (req.url === "/healthz" || req.url === "/readyz") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end('{"status":"ok"}');
    return;
  }
  res.writeHead(404).end();
});

const io = new Server(http, {
  transports: ["websocket"],
  perMessageDeflate: false,
  serveClient: false,
  maxHttpBufferSize: 1 << 20,
});

let closers = [];
if (args.redis) {
  const { createAdapter } = await import("@socket.io/redis-adapter");
  const { createClient } = await import("redis");
  const pub = createClient({ url: args.redis });
  const sub = pub.duplicate();
  pub.on("error", (err) => console.error("redis pub:", err.message));
  sub.on("error", (err) => console.error("redis sub:", err.message));
  await Promise.all([pub.connect(), sub.connect()]);
  io.adapter(createAdapter(pub, sub, { key: args.key }));
  closers = [() => pub.quit(), () => sub.quit()];
}

const seqs = new Map();

io.use((socket, next) => {
  const auth = socket.handshake.auth || {};
  if (!auth.user) {
    next(new Error("unauthorized"));
    return;
  }
  socket.data.user = String(auth.user);
  socket.data.room = `c:${auth.c ?? 0}`;
  next();
});

io.on("connection", (socket) => {
  const room = socket.data.room;
  socket.join(room);
  socket.on("message.send", (data, ack) => {
    if (typeof ack !== "function") return;
    if (!data || typeof data !== "object" || !data.client_id) {
      ack({ error: { code: "invalid_frame" } });
      return;
    }
    const seq = (seqs.get(room) || 0) + 1;
    seqs.set(room, seq);
    const message = { ...data, conversation_id: data.conversation_id, seq, created_at: Date.now() / 1000 };
    socket.to(room).emit("message.new", { message });
    ack({ message });
  });
});

function shutdown() {
  io.close();
  for (const close of closers) close().catch(() => {});
  setTimeout(() => process.exit(0), 200).unref();
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
setTimeout(shutdown, Number(args.seconds) * 1000).unref();

http.listen(Number(args.port), args.host, 4096, () => {
  console.log(`socket.io relay on ${args.host}:${args.port}${args.redis ? " (redis adapter)" : ""}`);
});
