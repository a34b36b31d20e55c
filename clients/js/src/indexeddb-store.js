// The browser's persistent store: the sync cursor, the per-conversation delivery watermark and
// the outbox kept in IndexedDB, so a page reload (or a closed tab) loses neither the place in
// the sync nor a message the server has not acknowledged yet. One database per signed-in user
// (the name carries the user id): two users of one browser never share a cursor or an outbox.
// Every write is one readwrite transaction and resolves only when it has committed.

/** @typedef {import("./stores.js").OutboxItem} OutboxItem */
/** @typedef {import("./stores.js").Store} Store */

/** The schema version; `upgrade()` brings any older database up to it. */
export const SCHEMA_VERSION = 1;
const META = "meta";
const SEQS = "seqs";
const OUTBOX = "outbox";

/**
 * @typedef {object} IndexedDBStoreOptions
 * @property {string | number} userId   the signed-in user's id (or Firebase uid): part of the database name
 * @property {IDBFactory} [indexedDB]   default `globalThis.indexedDB` (tests pass `fake-indexeddb`)
 * @property {string} [prefix]          database name prefix (default `"healthchat"`)
 */

/** @implements {Store} */
export class IndexedDBStore {
  /** @param {IndexedDBStoreOptions} options */
  constructor(options) {
    const factory = options.indexedDB ?? /** @type {any} */ (globalThis).indexedDB;
    if (!factory) throw new Error("no IndexedDB here: pass options.indexedDB");
    if (options.userId === undefined || options.userId === null || options.userId === "")
      throw new Error("IndexedDBStore needs the user's id (one database per user)");
    /** @type {IDBFactory} */
    this.factory = factory;
    this.name = `${options.prefix ?? "healthchat"}:${options.userId}`;
    /** @type {Promise<IDBDatabase> | null} */
    this.opening = null;
  }

  /** The open database (opened, and upgraded if needed, on first use). @returns {Promise<IDBDatabase>} */
  db() {
    if (!this.opening) {
      const opening = new Promise((resolve, reject) => {
        const request = this.factory.open(this.name, SCHEMA_VERSION);
        request.onupgradeneeded = (event) => upgrade(request.result, event.oldVersion);
        request.onsuccess = () => {
          const db = request.result;
          // Another tab wants a newer schema (or deletes the database): step aside; the next
          // call opens again.
          db.onversionchange = () => {
            db.close();
            if (this.opening === opening) this.opening = null;
          };
          resolve(db);
        };
        request.onerror = () => reject(request.error);
        // onblocked: a tab still holds an older version; it closes on versionchange, then this
        // request goes on to success, so there is nothing to do but wait.
      });
      opening.catch(() => {
        if (this.opening === opening) this.opening = null;
      });
      this.opening = opening;
    }
    return this.opening;
  }

  /**
   * Run `work` in one transaction; resolves with its result once the transaction has committed
   * (rejects if it aborts: nothing of it is written).
   * @template T
   * @param {string[]} stores @param {IDBTransactionMode} mode
   * @param {(tx: IDBTransaction) => (() => T)} work  issues the requests; returns a reader of the result
   * @returns {Promise<T>}
   */
  async transaction(stores, mode, work) {
    const db = await this.db();
    return new Promise((resolve, reject) => {
      const tx = db.transaction(stores, mode);
      const result = work(tx);
      tx.oncomplete = () => resolve(result());
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error ?? new Error("IndexedDB transaction aborted"));
    });
  }

  /** @returns {Promise<string | null>} */
  getCursor() {
    return this.transaction([META], "readonly", (tx) => {
      const request = tx.objectStore(META).get("cursor");
      return () => (typeof request.result === "string" ? request.result : null);
    });
  }

  /** @param {string} cursor @returns {Promise<void>} */
  setCursor(cursor) {
    return this.transaction([META], "readwrite", (tx) => {
      tx.objectStore(META).put(cursor, "cursor");
      return () => undefined;
    });
  }

  /** @param {number} conversationId @returns {Promise<number | null>} */
  getSeq(conversationId) {
    return this.transaction([SEQS], "readonly", (tx) => {
      const request = tx.objectStore(SEQS).get(conversationId);
      return () => (typeof request.result === "number" ? request.result : null);
    });
  }

  /** @param {number} conversationId @param {number} seq @returns {Promise<void>} */
  setSeq(conversationId, seq) {
    return this.transaction([SEQS], "readwrite", (tx) => {
      tx.objectStore(SEQS).put(seq, conversationId);
      return () => undefined;
    });
  }

  /** @param {OutboxItem} item @returns {Promise<void>} */
  putOutbox(item) {
    const copy = { ...item, attachmentIds: [...item.attachmentIds] };
    return this.transaction([OUTBOX], "readwrite", (tx) => {
      tx.objectStore(OUTBOX).put(copy);
      return () => undefined;
    });
  }

  /** @param {string} clientId @returns {Promise<void>} */
  deleteOutbox(clientId) {
    return this.transaction([OUTBOX], "readwrite", (tx) => {
      tx.objectStore(OUTBOX).delete(clientId);
      return () => undefined;
    });
  }

  /** Every pending item, oldest first. @returns {Promise<OutboxItem[]>} */
  listOutbox() {
    return this.transaction([OUTBOX], "readonly", (tx) => {
      const request = tx.objectStore(OUTBOX).index("createdAt").getAll();
      return () => /** @type {OutboxItem[]} */ (request.result);
    });
  }

  /** Forget everything (sign-out): cursor, watermarks and outbox, in one transaction. */
  clear() {
    return this.transaction([META, SEQS, OUTBOX], "readwrite", (tx) => {
      for (const name of [META, SEQS, OUTBOX]) tx.objectStore(name).clear();
      return () => undefined;
    });
  }

  /** Close the connection (the store opens it again on the next call). */
  async close() {
    const opening = this.opening;
    this.opening = null;
    if (opening) (await opening).close();
  }
}

/**
 * Bring a database from `oldVersion` (0: new) to SCHEMA_VERSION, one step per version, inside
 * the versionchange transaction (all or nothing). A later version adds `if (oldVersion < 2) ...`.
 * @param {IDBDatabase} db @param {number} oldVersion
 */
export function upgrade(db, oldVersion) {
  if (oldVersion < 1) {
    db.createObjectStore(META); // out-of-line keys: "cursor"
    db.createObjectStore(SEQS); // key: conversation id, value: highest delivered seq
    const outbox = db.createObjectStore(OUTBOX, { keyPath: "clientId" });
    outbox.createIndex("createdAt", "createdAt");
  }
}
