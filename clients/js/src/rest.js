// The REST client: openapi-fetch over the types openapi-typescript generated from docs/openapi.yaml.
import createClient from "openapi-fetch";
import { ConnectionLostError, RestError } from "./errors.js";

/** @typedef {import("./generated/openapi.js").paths} paths */
/** @typedef {import("./generated/openapi.js").components} components */
/** @typedef {(options?: {forceRefresh?: boolean}) => Promise<string>} TokenProvider */

/**
 * A typed REST client for `baseUrl` (e.g. `https://api.example.com`): every path, parameter,
 * body and answer is typed from the OpenAPI document; each request carries `Authorization:
 * Bearer <getToken()>`.
 * @param {{baseUrl: string, getToken: TokenProvider, fetch?: typeof globalThis.fetch}} options
 */
export function createRestClient({ baseUrl, getToken, fetch }) {
  /** @type {import("openapi-fetch").Client<paths>} */
  const client = createClient({ baseUrl, ...(fetch ? { fetch } : {}) });
  client.use({
    async onRequest({ request }) {
      request.headers.set("Authorization", `Bearer ${await getToken()}`);
      return request;
    },
  });
  return client;
}

/**
 * The data of an openapi-fetch result, or a typed `RestError` (network failures become
 * `ConnectionLostError`).
 * @template T
 * @param {Promise<{data?: T, error?: any, response: Response}>} call
 * @returns {Promise<T>}
 */
export async function unwrap(call) {
  let result;
  try {
    result = await call;
  } catch (error) {
    const lost = new ConnectionLostError(`request failed: ${error instanceof Error ? error.message : String(error)}`);
    lost.cause = error;
    throw lost;
  }
  if (!result.response.ok) throw new RestError(result.response.status, result.error);
  return /** @type {T} */ (result.data);
}

/**
 * The `cursor` of a cursor page's `next` link (null on the last page): pass it back as `cursor`.
 * @param {string | null | undefined} next
 * @returns {string | null}
 */
export function cursorOf(next) {
  return next ? new URL(next).searchParams.get("cursor") : null;
}
