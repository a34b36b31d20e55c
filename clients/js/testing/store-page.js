// The test page's script: a HealthchatClient on an IndexedDBStore for the user in
// `window.HC_CONFIG` (set by the test before every load), with what it does recorded on
// `window.hc` for the test to read. Only a test tool.
import { HealthchatClient, IndexedDBStore, createRestClient } from "../src/index.js";

/** @type {{httpUrl: string, wsUrl: string, token: string, userId: number}} */
const config = /** @type {any} */ (window).HC_CONFIG;
const store = new IndexedDBStore({ userId: config.userId });
const client = new HealthchatClient({
  url: config.wsUrl,
  getToken: async () => config.token,
  store,
  // Short, so a socket the offline network swallows is given up quickly.
  pingIntervalMs: 1000,
  requestTimeoutMs: 2000,
});
const rest = createRestClient({ baseUrl: config.httpUrl, getToken: async () => config.token });

const hc = {
  client,
  store,
  rest,
  /** @type {{conversation_id: number, seq: number, body: string | null, client_id: string}[]} */
  messages: [],
  /** @type {string[]} client ids acknowledged in this page */
  acked: [],
  /** @type {string[]} error class names */
  errors: [],
  /** @type {string[]} client ids of the outbox restored from the store at load */
  restored: [],
  /** @type {string | null} the cursor found in the store at load */
  cursorAtLoad: null,
  /** @param {number} conversationId @param {string} body */
  async send(conversationId, body) {
    const { clientId, acked } = await client.send(conversationId, body);
    acked.then((m) => hc.acked.push(m.client_id)).catch(() => {});
    return clientId;
  },
};
/** @type {any} */ (window).hc = hc;

client.on("message", (m) => hc.messages.push({ conversation_id: m.conversation_id, seq: m.seq, body: m.body, client_id: m.client_id }));
client.on("error", (e) => hc.errors.push(e.name));
client.on("state", (s) => {
  /** @type {HTMLElement} */ (document.getElementById("state")).textContent = s;
});

hc.cursorAtLoad = await store.getCursor();
for (const item of await client.restoreOutbox()) {
  hc.restored.push(item.clientId);
  item.acked.then((m) => hc.acked.push(m.client_id)).catch(() => {});
}
// Not awaited: offline, the first ready comes only once the network is back.
client.connect().catch((e) => hc.errors.push(`connect: ${e.name}`));
/** @type {any} */ (window).hcLoaded = true;
