// The Store interface (src/stores.js), the same cases for every store: the MemoryStore and the
// IndexedDBStore (on fake-indexeddb here; tests/test_sdk_browser_store.py runs it in Chromium).
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { IDBFactory } from "fake-indexeddb";
import { IndexedDBStore, MemoryStore } from "../src/index.js";
import { SCHEMA_VERSION } from "../src/indexeddb-store.js";

/** @typedef {import("../src/stores.js").OutboxItem} OutboxItem */

/** @param {string} clientId @param {number} createdAt @returns {OutboxItem} */
const item = (clientId, createdAt, conversationId = 7) => ({
  clientId,
  conversationId,
  body: `body ${clientId}`,
  replyTo: null,
  attachmentIds: [],
  createdAt,
});

const kinds = [
  { name: "MemoryStore", make: () => new MemoryStore() },
  { name: "IndexedDBStore", make: () => new IndexedDBStore({ userId: 42, indexedDB: new IDBFactory() }) },
];

for (const { name, make } of kinds) {
  describe(`${name}: the Store interface`, () => {
    it("keeps the cursor of the last sync (none at first)", async () => {
      const store = make();
      assert.equal(await store.getCursor(), null);
      await store.setCursor("c1");
      await store.setCursor("c2");
      assert.equal(await store.getCursor(), "c2");
    });

    it("keeps the highest delivered seq per conversation, each on its own", async () => {
      const store = make();
      assert.equal(await store.getSeq(1), null);
      await store.setSeq(1, 5);
      await store.setSeq(2, 9);
      await store.setSeq(1, 6);
      assert.equal(await store.getSeq(1), 6);
      assert.equal(await store.getSeq(2), 9);
      assert.equal(await store.getSeq(3), null);
    });

    it("lists the outbox oldest first, replaces an item put twice and deletes by client_id", async () => {
      const store = make();
      assert.deepEqual(await store.listOutbox(), []);
      await store.putOutbox(item("b", 20));
      await store.putOutbox(item("a", 10));
      await store.putOutbox(item("c", 30));
      await store.putOutbox({ ...item("a", 10), body: "edited", attachmentIds: [3, 4], replyTo: 2 });
      const listed = await store.listOutbox();
      assert.deepEqual(listed.map((i) => i.clientId), ["a", "b", "c"]);
      assert.deepEqual(listed[0], { ...item("a", 10), body: "edited", attachmentIds: [3, 4], replyTo: 2 });
      await store.deleteOutbox("b");
      await store.deleteOutbox("not there");
      assert.deepEqual((await store.listOutbox()).map((i) => i.clientId), ["a", "c"]);
    });

    it("stores copies: changing an item after put or after list does not change the outbox", async () => {
      const store = make();
      const original = item("x", 1);
      await store.putOutbox(original);
      original.body = "changed";
      original.attachmentIds.push(99);
      const [listed] = await store.listOutbox();
      listed.body = "changed again";
      assert.deepEqual(await store.listOutbox(), [item("x", 1)]);
    });

    it("keeps every one of many concurrent writes", async () => {
      const store = make();
      await Promise.all(Array.from({ length: 50 }, (_, i) => store.putOutbox(item(`m${i}`, 1000 - i))));
      await Promise.all(Array.from({ length: 50 }, (_, i) => store.setSeq(i, i * 2)));
      const listed = await store.listOutbox();
      assert.equal(listed.length, 50);
      assert.deepEqual(listed.map((i) => i.createdAt), [...listed.map((i) => i.createdAt)].sort((a, b) => a - b));
      assert.equal(await store.getSeq(49), 98);
      await Promise.all(listed.slice(0, 25).map((i) => store.deleteOutbox(i.clientId)));
      assert.equal((await store.listOutbox()).length, 25);
    });

    it("forgets everything on clear() (sign-out)", async () => {
      const store = make();
      await store.setCursor("c");
      await store.setSeq(1, 1);
      await store.putOutbox(item("a", 1));
      await store.clear();
      assert.equal(await store.getCursor(), null);
      assert.equal(await store.getSeq(1), null);
      assert.deepEqual(await store.listOutbox(), []);
    });
  });
}

describe("IndexedDBStore: persistence and isolation", () => {
  it("keeps the cursor, the watermarks and the outbox for the next store on the same database (a reload)", async () => {
    const indexedDB = new IDBFactory();
    const first = new IndexedDBStore({ userId: 5, indexedDB });
    await first.setCursor("after-reload");
    await first.setSeq(3, 12);
    await first.putOutbox(item("kept", 1));
    await first.close();
    const second = new IndexedDBStore({ userId: 5, indexedDB });
    assert.equal(await second.getCursor(), "after-reload");
    assert.equal(await second.getSeq(3), 12);
    assert.deepEqual(await second.listOutbox(), [item("kept", 1)]);
  });

  it("gives each user a database of their own", async () => {
    const indexedDB = new IDBFactory();
    const alice = new IndexedDBStore({ userId: 1, indexedDB });
    const bob = new IndexedDBStore({ userId: 2, indexedDB });
    await alice.setCursor("alice");
    await alice.putOutbox(item("from alice", 1));
    assert.equal(await bob.getCursor(), null);
    assert.deepEqual(await bob.listOutbox(), []);
    await bob.clear();
    assert.equal(await alice.getCursor(), "alice");
    assert.notEqual(alice.name, bob.name);
    const names = (await indexedDB.databases()).map((d) => d.name).sort();
    assert.deepEqual(names, ["healthchat:1", "healthchat:2"]);
  });

  it("creates the schema at its version and steps aside when another tab upgrades it", async () => {
    const indexedDB = new IDBFactory();
    const store = new IndexedDBStore({ userId: "u", indexedDB });
    await store.setCursor("c");
    const db = await store.db();
    assert.equal(db.version, SCHEMA_VERSION);
    assert.deepEqual(Array.from({ length: db.objectStoreNames.length }, (_, i) => db.objectStoreNames.item(i)).sort(), ["meta", "outbox", "seqs"]);
    // A newer version opened elsewhere: this store closes its connection instead of blocking
    // the upgrade, and opens again on its next call.
    await new Promise((resolve, reject) => {
      const request = indexedDB.open(store.name, SCHEMA_VERSION + 1);
      request.onsuccess = () => {
        request.result.close();
        resolve(undefined);
      };
      request.onerror = () => reject(request.error);
    });
    await assert.rejects(store.getCursor(), (error) => /** @type {Error} */ (error).name === "VersionError");
  });

  it("needs a user id", () => {
    assert.throws(() => new IndexedDBStore({ userId: "", indexedDB: new IDBFactory() }), /user's id/);
  });
});
