// The signed-in session: a token provider, the SDK's REST client and its real-time client.
// Tokens live in memory; a pasted ID token is also kept in sessionStorage (this tab only, gone
// when it closes) so a reload does not sign the user out; Firebase keeps its session in
// sessionStorage too (browserSessionPersistence). See docs/clients.md "The web console".
import { HealthchatClient, IndexedDBStore, createRestClient } from "@healthchat/client";

const TOKEN_KEY = "healthchat.console.token";

/** @typedef {(options?: {forceRefresh?: boolean}) => Promise<string>} TokenProvider */

/** A provider for a pasted token (it cannot be refreshed: the user signs in again). @param {string} token */
export function staticTokenProvider(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
  return async () => token;
}

/** The pasted token of this tab, if any. */
export function storedToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/**
 * Sign in to healthchat with a token provider: read the account (REST), connect the socket.
 * @param {TokenProvider} getToken
 */
export async function openSession(getToken) {
  const origin = location.origin;
  const rest = createRestClient({ baseUrl: origin, getToken });
  const { data: me, error, response } = await rest.GET("/api/v1/me");
  if (!me) {
    const code = /** @type {any} */ (error)?.error?.code ?? `http_${response.status}`;
    const message = /** @type {any} */ (error)?.error?.message ?? "Sign-in failed.";
    throw Object.assign(new Error(message), { code });
  }
  const wsUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws/v1/`;
  // The sync cursor, watermarks and outbox survive a reload (one IndexedDB database per user).
  const store = new IndexedDBStore({ userId: me.id });
  const client = new HealthchatClient({ url: wsUrl, getToken, store });
  return { rest, client, me, getToken, store };
}
