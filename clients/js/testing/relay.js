// A WebSocket relay between SDK clients and the live server, so a test can cut the network,
// lose replies or make the "server" send frames it never would. Only a test tool.
import { WebSocketServer, WebSocket } from "ws";

export class Relay {
  /** @param {string} upstreamUrl */
  constructor(upstreamUrl) {
    this.upstreamUrl = upstreamUrl;
    /** refuse new connections (the network is down) */
    this.refuse = false;
    /** drop the server's `ack` frames instead of relaying them (replies lost on the way) */
    this.dropAcks = false;
    /** @type {(frame: any) => boolean} drop the server frames it returns true for (a lossy live path) */
    this.dropIf = () => false;
    /** @type {(frame: any, text: string) => string} what to pass on instead of a server frame (a corrupting path) */
    this.rewrite = (_frame, text) => text;
    /** @type {Set<{client: import("ws").WebSocket, upstream: import("ws").WebSocket}>} */
    this.links = new Set();
    this.server = new WebSocketServer({ host: "127.0.0.1", port: 0 });
    this.server.on("connection", (client) => this.link(client));
  }

  async listening() {
    await new Promise((resolve) => (this.server.address() ? resolve(undefined) : this.server.once("listening", resolve)));
    const address = /** @type {import("node:net").AddressInfo} */ (this.server.address());
    return `ws://127.0.0.1:${address.port}/ws/v1/`;
  }

  /** @param {import("ws").WebSocket} client */
  link(client) {
    if (this.refuse) {
      client.terminate();
      return;
    }
    const upstream = new WebSocket(this.upstreamUrl);
    const entry = { client, upstream };
    this.links.add(entry);
    /** @type {string[]} */
    const queued = [];
    client.on("message", (data) => {
      const text = data.toString();
      if (upstream.readyState === WebSocket.OPEN) upstream.send(text);
      else queued.push(text);
    });
    upstream.on("open", () => {
      for (const text of queued.splice(0)) upstream.send(text);
    });
    upstream.on("message", (data) => {
      const text = data.toString();
      const frame = JSON.parse(text);
      if ((this.dropAcks && frame.type === "ack") || this.dropIf(frame)) return;
      if (client.readyState === WebSocket.OPEN) client.send(this.rewrite(frame, text));
    });
    const end = () => {
      this.links.delete(entry);
      client.terminate();
      upstream.terminate();
    };
    client.on("close", () => {
      this.links.delete(entry);
      if (upstream.readyState === WebSocket.OPEN) upstream.close(1000);
      else upstream.terminate();
    });
    upstream.on("close", (code, reason) => {
      this.links.delete(entry);
      // Pass the server's close code on (a 1006 cannot be sent: terminate instead).
      if (client.readyState === WebSocket.OPEN && code >= 3000) client.close(code, reason.toString());
      else if (client.readyState === WebSocket.OPEN && code !== 1006 && code !== 1005) client.close(code, reason.toString());
      else client.terminate();
    });
    client.on("error", end);
    upstream.on("error", end);
  }

  /** Cut every connection at once, without a close frame (the client sees 1006). */
  dropAll() {
    for (const { client, upstream } of this.links) {
      client.terminate();
      upstream.terminate();
    }
    this.links.clear();
  }

  /** Close every client socket with `code` as if the server had (the upstream sockets end too).
   * @param {number} code @param {string} [reason] */
  closeAll(code, reason = "") {
    for (const { client, upstream } of this.links) {
      upstream.removeAllListeners("close"); // its end must not cut the client's close frame short
      upstream.terminate();
      client.close(code, reason);
    }
    this.links.clear();
  }

  /** Send raw text to every connected client as if the server had sent it. @param {string} text */
  inject(text) {
    for (const { client } of this.links) client.send(text);
  }

  close() {
    this.dropAll();
    return new Promise((resolve) => this.server.close(() => resolve(undefined)));
  }
}
