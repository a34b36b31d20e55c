// The REST client: openapi-fetch over the types openapi-typescript generated from docs/openapi.yaml.
import createClient from "openapi-fetch";

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
