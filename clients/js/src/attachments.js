// Attachments: upload with progress (XMLHttpRequest in browsers, a streamed fetch body elsewhere),
// waiting through `processing` (attachment.updated or GET attachments/{id}), and download with
// progress and an integrity check. See docs/clients.md#attachments--srcattachmentsjs and
// docs/protocol.md#uploads-and-metadata.
import {
  AttachmentNotReadyError,
  AttachmentRejectedError,
  ConnectionLostError,
  HealthchatError,
  IntegrityError,
  RequestTimeoutError,
  RestError,
} from "./errors.js";
import { unwrap } from "./rest.js";

/** @typedef {import("./client.js").HealthchatClient} HealthchatClient */
/** @typedef {import("openapi-fetch").Client<import("./rest.js").paths>} RestClient */
/** @typedef {import("./rest.js").components["schemas"]["AttachmentUploadOut"]} Attachment */
/** @typedef {import("./rest.js").components["schemas"]["AttachmentLink"]} AttachmentLink */
/** @typedef {{loaded: number, total: number}} Progress */

/**
 * @typedef {object} HttpContext
 * @property {string} baseUrl                        e.g. `https://api.example.com`
 * @property {import("./rest.js").TokenProvider} getToken
 * @property {RestClient} rest                       from createRestClient
 * @property {HealthchatClient} [client]             to hear `attachment.updated` (else polling only)
 * @property {typeof globalThis.fetch} [fetch]
 */

/**
 * @typedef {object} UploadOptions
 * @property {string} [name]                 file name (default: the File's name, else "file")
 * @property {string} [contentType]          default: the Blob's type, else application/octet-stream
 * @property {boolean} [encrypted]           the bytes are already encrypted (e2ee conversations)
 * @property {(p: Progress) => void} [onProgress]
 * @property {boolean} [waitForReady]        wait through `processing` (default true)
 * @property {number} [timeoutMs]            for the processing wait (default 180 000)
 * @property {number} [pollMs]               GET attachments/{id} this often while waiting (default 5000)
 * @property {"xhr" | "fetch"} [transport]   default: xhr where XMLHttpRequest exists, else fetch
 */

const CHUNK = 64 * 1024;

/**
 * Upload a file (`POST /api/v1/attachments`); resolves with the attachment, `ready` unless
 * `waitForReady` is false.
 * @param {HttpContext} http @param {Blob | Uint8Array | ArrayBuffer} file @param {UploadOptions} [options]
 * @returns {Promise<Attachment>}
 */
export async function uploadAttachment(http, file, options = {}) {
  const blob = toBlob(file, options.contentType);
  const name = options.name ?? (/** @type {any} */ (file).name || "file");
  const contentType = options.contentType || blob.type || "application/octet-stream";
  const url = `${http.baseUrl.replace(/\/$/, "")}/api/v1/attachments`;
  // Listen before uploading: the worker may finish before the answer arrives.
  const watcher = watchUpdates(http.client);
  try {
    const token = await http.getToken();
    const transport = options.transport ?? (typeof globalThis.XMLHttpRequest === "function" ? "xhr" : "fetch");
    const upload = transport === "xhr" ? xhrUpload : fetchUpload;
    const { status, body } = await upload({ url, token, blob, name, contentType, encrypted: !!options.encrypted, onProgress: options.onProgress, fetch: http.fetch });
    if (status < 200 || status >= 300) throw new RestError(status, body);
    /** @type {Attachment} */
    let attachment = body;
    if (attachment.state === "processing" && (options.waitForReady ?? true)) {
      attachment = await waitForAttachment(http, attachment.id, { timeoutMs: options.timeoutMs, pollMs: options.pollMs, watcher });
    }
    if (attachment.state === "rejected") throw new AttachmentRejectedError(attachment);
    return attachment;
  } finally {
    watcher.stop();
  }
}

/**
 * Wait until an upload leaves `processing`: the `attachment.updated` frame, or
 * `GET /api/v1/attachments/{id}` every `pollMs` and after every reconnect. Resolves with the
 * attachment when `ready`; rejects with AttachmentRejectedError or RequestTimeoutError.
 * @param {HttpContext} http @param {number} attachmentId
 * @param {{timeoutMs?: number, pollMs?: number, watcher?: ReturnType<typeof watchUpdates>}} [options]
 * @returns {Promise<Attachment>}
 */
export async function waitForAttachment(http, attachmentId, options = {}) {
  const own = !options.watcher;
  const watcher = options.watcher ?? watchUpdates(http.client);
  const timeoutMs = options.timeoutMs ?? 180_000;
  const pollMs = options.pollMs ?? 5000;
  try {
    return await new Promise((resolve, reject) => {
      let done = false;
      /** @param {Attachment} attachment */
      const settle = (attachment) => {
        if (done || attachment.state === "processing") return;
        done = true;
        cleanup();
        if (attachment.state === "rejected") reject(new AttachmentRejectedError(attachment));
        else resolve(attachment);
      };
      const poll = () => {
        unwrap(http.rest.GET("/api/v1/attachments/{attachment_id}", { params: { path: { attachment_id: attachmentId } } })).then(
          (link) => settle(withoutLink(link)),
          (error) => {
            // A network hiccup: the next poll (or the frame) settles it; anything else is final.
            if (done || error instanceof ConnectionLostError) return;
            done = true;
            cleanup();
            reject(error);
          },
        );
      };
      const timer = setTimeout(() => {
        if (done) return;
        done = true;
        cleanup();
        reject(new RequestTimeoutError(`attachment ${attachmentId} still processing after ${timeoutMs} ms`));
      }, timeoutMs);
      const interval = setInterval(poll, pollMs);
      const offFrame = watcher.listen(attachmentId, settle);
      const offReady = http.client ? http.client.on("ready", poll) : () => {};
      const cleanup = () => {
        clearTimeout(timer);
        clearInterval(interval);
        offFrame();
        offReady();
      };
      poll();
    });
  } finally {
    if (own) watcher.stop();
  }
}

/**
 * Download an attachment's bytes: the signed link (`GET /api/v1/attachments/{id}`), then its
 * content, with progress; `verify` (default true) checks size and sha256.
 * @param {RestClient} rest @param {number} attachmentId
 * @param {{onProgress?: (p: Progress) => void, verify?: boolean, fetch?: typeof globalThis.fetch}} [options]
 * @returns {Promise<{bytes: Uint8Array, attachment: AttachmentLink}>}
 */
export async function downloadAttachment(rest, attachmentId, options = {}) {
  const link = await unwrap(rest.GET("/api/v1/attachments/{attachment_id}", { params: { path: { attachment_id: attachmentId } } }));
  if (link.state === "rejected") throw new AttachmentRejectedError(link);
  if (link.state !== "ready" || !link.url) throw new AttachmentNotReadyError(`attachment ${attachmentId} is ${link.state}`);
  const fetchImpl = options.fetch ?? globalThis.fetch;
  let response;
  try {
    response = await fetchImpl(link.url);
  } catch (error) {
    throw lost(error);
  }
  if (!response.ok) throw new RestError(response.status, await response.json().catch(() => null));
  const total = Number(response.headers.get("Content-Length") ?? link.size);
  /** @type {Uint8Array[]} */
  const chunks = [];
  let loaded = 0;
  if (!response.body) throw new ConnectionLostError("the download has no body");
  const reader = response.body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      loaded += value.length;
      options.onProgress?.({ loaded, total });
    }
  } catch (error) {
    throw lost(error);
  }
  const bytes = new Uint8Array(loaded);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.length;
  }
  if (options.verify ?? true) {
    if (bytes.length !== link.size) throw new IntegrityError(`attachment ${attachmentId}: ${bytes.length} bytes, expected ${link.size}`);
    const digest = await sha256Hex(bytes);
    if (digest !== link.sha256) throw new IntegrityError(`attachment ${attachmentId}: sha256 ${digest}, expected ${link.sha256}`);
  }
  return { bytes, attachment: link };
}

/** @param {Uint8Array} bytes */
export async function sha256Hex(bytes) {
  const digest = new Uint8Array(await globalThis.crypto.subtle.digest("SHA-256", /** @type {BufferSource} */ (bytes)));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

// --- internals -------------------------------------------------------------------------------

/** `attachment.updated` frames by attachment id, buffered from before the upload's answer.
 * @param {HealthchatClient | undefined} client */
function watchUpdates(client) {
  /** @type {Map<number, Attachment>} */
  const seen = new Map();
  /** @type {Map<number, Set<(a: Attachment) => void>>} */
  const listeners = new Map();
  const off = client
    ? client.on("frame", (frame) => {
        if (frame.type !== "attachment.updated") return;
        const attachment = /** @type {Attachment} */ (/** @type {unknown} */ (frame.data.attachment));
        seen.set(attachment.id, attachment);
        for (const listener of listeners.get(attachment.id) ?? []) listener(attachment);
      })
    : () => {};
  return {
    /** @param {number} id @param {(a: Attachment) => void} listener */
    listen(id, listener) {
      let set = listeners.get(id);
      if (!set) listeners.set(id, (set = new Set()));
      set.add(listener);
      const known = seen.get(id);
      if (known) queueMicrotask(() => listener(known));
      return () => set.delete(listener);
    },
    stop: () => {
      off();
    },
  };
}

/** @param {AttachmentLink} link @returns {Attachment} */
function withoutLink(link) {
  const { url: _url, expires_at: _expires, thumbnail_url: _thumb, ...attachment } = link;
  return attachment;
}

/** @param {Blob | Uint8Array | ArrayBuffer} file @param {string | undefined} contentType @returns {Blob} */
function toBlob(file, contentType) {
  if (typeof Blob !== "undefined" && file instanceof Blob) return file;
  if (file instanceof ArrayBuffer || ArrayBuffer.isView(file))
    return new Blob([/** @type {BlobPart} */ (file)], contentType ? { type: contentType } : {});
  throw new HealthchatError("uploadAttachment: file must be a Blob, a Uint8Array or an ArrayBuffer");
}

/** @param {unknown} error */
function lost(error) {
  if (error instanceof HealthchatError) return error;
  const wrapped = new ConnectionLostError(`transfer failed: ${error instanceof Error ? error.message : String(error)}`);
  wrapped.cause = error;
  return wrapped;
}

/**
 * @typedef {object} UploadRequest
 * @property {string} url @property {string} token @property {Blob} blob @property {string} name
 * @property {string} contentType @property {boolean} encrypted
 * @property {((p: Progress) => void) | undefined} onProgress
 * @property {typeof globalThis.fetch | undefined} fetch
 */

/** Browsers: XMLHttpRequest, whose upload events report progress.
 * @param {UploadRequest} r @returns {Promise<{status: number, body: any}>} */
function xhrUpload(r) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", r.url);
    xhr.setRequestHeader("Authorization", `Bearer ${r.token}`);
    xhr.responseType = "text";
    const size = r.blob.size;
    xhr.upload.onprogress = (event) => {
      // event counts the multipart body; report file bytes.
      if (event.lengthComputable && event.total > 0) r.onProgress?.({ loaded: Math.min(size, Math.round((event.loaded * size) / event.total)), total: size });
    };
    xhr.upload.onload = () => r.onProgress?.({ loaded: size, total: size });
    xhr.onload = () => resolve({ status: xhr.status, body: parseJson(xhr.responseText) });
    xhr.onerror = () => reject(new ConnectionLostError("upload failed (network)"));
    xhr.onabort = () => reject(new ConnectionLostError("upload aborted"));
    const form = new FormData();
    form.append("file", r.blob.type === r.contentType ? r.blob : new Blob([r.blob], { type: r.contentType }), r.name);
    if (r.encrypted) form.append("encrypted", "true");
    xhr.send(form);
  });
}

/** Node (and any fetch with streamed request bodies): a multipart body streamed in chunks,
 * progress counted as the connection pulls them.
 * @param {UploadRequest} r @returns {Promise<{status: number, body: any}>} */
async function fetchUpload(r) {
  const boundary = `----healthchat${globalThis.crypto.randomUUID().replace(/-/g, "")}`;
  const encoder = new TextEncoder();
  const safeName = r.name.replace(/[\r\n"\\]/g, "_");
  const head = encoder.encode(
    `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${safeName}"\r\nContent-Type: ${r.contentType}\r\n\r\n`,
  );
  const tail = encoder.encode(
    `\r\n${r.encrypted ? `--${boundary}\r\nContent-Disposition: form-data; name="encrypted"\r\n\r\ntrue\r\n` : ""}--${boundary}--\r\n`,
  );
  const size = r.blob.size;
  const length = head.length + size + tail.length;
  let offset = 0;
  let phase = 0; // 0 head, 1 file, 2 tail, 3 done
  const body = new ReadableStream(
    {
      async pull(controller) {
        if (phase === 0) {
          controller.enqueue(head);
          phase = size ? 1 : 2;
          r.onProgress?.({ loaded: 0, total: size });
        } else if (phase === 1) {
          const chunk = new Uint8Array(await r.blob.slice(offset, offset + CHUNK).arrayBuffer());
          controller.enqueue(chunk);
          offset += chunk.length;
          r.onProgress?.({ loaded: offset, total: size });
          if (offset >= size) phase = 2;
        } else if (phase === 2) {
          controller.enqueue(tail);
          phase = 3;
        } else {
          controller.close();
        }
      },
    },
    { highWaterMark: 0 },
  );
  const fetchImpl = r.fetch ?? globalThis.fetch;
  let response;
  try {
    response = await fetchImpl(r.url, {
      method: "POST",
      headers: {
        Authorization: `Bearer ${r.token}`,
        "Content-Type": `multipart/form-data; boundary=${boundary}`,
        "Content-Length": String(length),
      },
      body,
      // @ts-ignore -- streamed request bodies need half duplex (fetch standard; undici requires it)
      duplex: "half",
    });
  } catch (error) {
    throw lost(error);
  }
  const text = await response.text().catch(() => "");
  return { status: response.status, body: parseJson(text) };
}

/** @param {string} text */
function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}
