// Typed errors. Close codes come from the AsyncAPI document's CloseCode list (generated/constants.js).
import { CLOSE_CODES } from "./generated/constants.js";

/** @typedef {import("./generated/frames.js").ServerError} ServerErrorBody */
/** @typedef {(typeof CLOSE_CODES)[number]} CloseCode */

export class HealthchatError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = new.target.name;
  }
}

/** An `error` frame the server answered a request with (`code` from the ErrorCode list). */
export class ServerError extends HealthchatError {
  /** @param {ServerErrorBody} error @param {string | undefined} ref */
  constructor(error, ref) {
    super(`${error.code}: ${error.message}`);
    this.code = error.code;
    this.ref = ref;
    this.body = error;
  }
}

/** A frame from the server the SDK could not read (not JSON, unknown type, wrong shape). The
 * connection stays open and nothing acknowledged is lost: the SDK syncs again when the frame
 * could have carried a conversation entry. */
export class ProtocolError extends HealthchatError {
  /** @param {string} message @param {unknown} raw */
  constructor(message, raw) {
    super(message);
    this.raw = raw;
  }
}

/** A request that got no reply in time (the socket is then dropped and made again). */
export class RequestTimeoutError extends HealthchatError {}

/** The socket closed before a request's reply arrived (requests are retried after reconnect
 * where that is safe: the outbox, sync). */
export class ConnectionLostError extends HealthchatError {}

/** The socket was closed by the server with one of its documented close codes, or dropped. */
export class CloseError extends HealthchatError {
  /**
   * @param {number} code
   * @param {string} reason
   * @param {ServerErrorBody | null} lastError the `error` frame that preceded the close, if any
   */
  constructor(code, reason, lastError) {
    super(`socket closed ${code}${lastError ? ` (${lastError.code})` : reason ? ` (${reason})` : ""}`);
    this.code = code;
    this.reason = reason;
    this.lastError = lastError;
    /** @type {boolean} whether the SDK reconnects on its own after this close */
    this.willReconnect = true;
  }
}
/** 4401: authentication failed or the token expired; the SDK reconnects once with a fresh token. */
export class AuthenticationError extends CloseError {}
/** 4403: not registered, unknown device, or the account was deleted; never reconnects. */
export class ForbiddenError extends CloseError {}
/** 4408: the socket was idle (no frame) for the server's idle timeout. */
export class IdleTimeoutError extends CloseError {}
/** 4429: too many frames (flooding). */
export class FloodError extends CloseError {}
/** 1013: the server is busy (`retry_after_ms` in `lastError`). */
export class ServerBusyError extends CloseError {}
/** 1012: the server process is restarting. */
export class ServerRestartError extends CloseError {}
/** 1011: an unexpected server failure during authentication. */
export class InternalServerError extends CloseError {}
/** 1009: a frame over the server's hard size limit. */
export class MessageTooBigError extends CloseError {}
/** Any other close (1006 abnormal closure: network lost, proxy dropped, ...). */
export class ConnectionDroppedError extends CloseError {}

/** @type {Record<CloseCode, typeof CloseError>} */
const BY_CODE = {
  1009: MessageTooBigError,
  1011: InternalServerError,
  1012: ServerRestartError,
  1013: ServerBusyError,
  4401: AuthenticationError,
  4403: ForbiddenError,
  4408: IdleTimeoutError,
  4429: FloodError,
};

/**
 * The typed error for a close code (every code of the AsyncAPI CloseCode list has its class).
 * @param {number} code @param {string} reason @param {ServerErrorBody | null} lastError
 * @returns {CloseError}
 */
export function closeError(code, reason, lastError) {
  const known = /** @type {readonly number[]} */ (CLOSE_CODES).includes(code);
  const Class = known ? BY_CODE[/** @type {CloseCode} */ (code)] : ConnectionDroppedError;
  return new Class(code, reason, lastError);
}

/** A REST answer that is not a success: `status` (HTTP), `code` (the body's `error.code`, or
 * `http_<status>` when the body is not the documented error shape) and `body`. */
export class RestError extends HealthchatError {
  /** @param {number} status @param {any} body */
  constructor(status, body) {
    const error = body && typeof body === "object" && body.error && typeof body.error.code === "string" ? body.error : null;
    super(`${status}${error ? ` ${error.code}: ${error.message}` : ""}`);
    this.status = status;
    /** @type {string} */
    this.code = error ? error.code : `http_${status}`;
    this.body = body;
  }
}

/** An upload the server rejected while stripping its metadata (`state: rejected`). */
export class AttachmentRejectedError extends HealthchatError {
  /** @param {{id: number, rejection?: string | null}} attachment */
  constructor(attachment) {
    super(`attachment ${attachment.id} rejected: ${attachment.rejection ?? "unknown"}`);
    /** @type {string | null} corrupt_media, processing_timeout, file_too_large, media_processing_unavailable */
    this.rejection = attachment.rejection ?? null;
    this.attachment = attachment;
  }
}

/** Downloaded bytes that do not match the attachment's `size` or `sha256`. */
export class IntegrityError extends HealthchatError {}

/** A download asked for while the attachment is still `processing` (wait for it first). */
export class AttachmentNotReadyError extends HealthchatError {}
