// The client against the real daemon (started by tests/test_node_client.py), directly and
// through a loopback proxy that answers 503, cuts connections or loses the daemon's answers.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, describe, test } from "node:test";

import { AuthError, createClient, retryAfterMs, TriggerRefused, Unavailable } from "../index.js";
import { ADMIN_SECRET, DAEMON_URL, SKIP, startProxy } from "./daemon.js";

const FAST = { backoffBaseMs: 5, backoffMaxMs: 50 }; // the backoff's shape, without the wait
const student = (n) => ({ userId: n, email: `student${n}@example.edu`, name: "Node Client", source: "node-test" });

describe("createClient against the daemon", { skip: SKIP }, () => {
  const client = SKIP ? null : createClient({ url: DAEMON_URL, adminSecret: ADMIN_SECRET, ...FAST });

  test("an event is accepted once stored, routed to the webhook integration", async () => {
    const accepted = await client.trigger("user.registered", student(1));
    assert.match(accepted.id, /^evt_/);
    assert.equal(accepted.event, "user.registered");
    assert.equal(accepted.deliveries, 1);
    assert.equal(accepted.duplicate, undefined);
  });

  test("the sender's timestamp and id are kept", async () => {
    const id = `cms-${randomUUID()}`;
    const accepted = await client.trigger("user.login", { userId: 2 }, { id, timestamp: "2024-01-15T10:30:00Z" });
    assert.equal(accepted.id, id);
    assert.match(accepted.timestamp, /^2024-01-15T10:30:00/);
  });

  test("the same idempotency key and body is answered with the first event, marked duplicate", async () => {
    const idempotencyKey = randomUUID();
    const first = await client.trigger("user.registered", student(3), { idempotencyKey });
    const again = await client.trigger("user.registered", student(3), { idempotencyKey });
    assert.equal(first.duplicate, undefined);
    assert.equal(again.duplicate, true);
    assert.equal(again.id, first.id);
    assert.equal(again.duplicateOf, first.id);
  });

  test("the same idempotency key with another body throws TriggerRefused naming the conflicts", async () => {
    const idempotencyKey = randomUUID();
    await client.trigger("user.registered", student(4), { idempotencyKey });
    const refused = await client.trigger("user.registered", student(5), { idempotencyKey }).catch((e) => e);
    assert.ok(refused instanceof TriggerRefused, refused);
    assert.equal(refused.status, 422);
    assert.deepEqual(refused.conflicts, ["data"]);
  });

  test("an event that does not match its type throws TriggerRefused with the errors, not retried", async () => {
    let tries = 0;
    const counting = createClient({
      url: DAEMON_URL,
      adminSecret: ADMIN_SECRET,
      fetch: (...args) => {
        tries += 1;
        return fetch(...args);
      },
    });
    const refused = await counting.trigger("user.registered", { userId: 6 }).catch((e) => e);
    assert.ok(refused instanceof TriggerRefused, refused);
    assert.equal(refused.status, 422);
    assert.equal(refused.problem.status, 422);
    assert.deepEqual(refused.errors, [{ pointer: "/data", message: "'email' is a required property" }]);
    assert.equal(tries, 1);
  });

  test("a wrong admin secret throws AuthError, not retried", async () => {
    let tries = 0;
    const wrong = createClient({
      url: DAEMON_URL,
      adminSecret: "not-the-secret",
      fetch: (...args) => {
        tries += 1;
        return fetch(...args);
      },
    });
    const refused = await wrong.trigger("user.registered", student(7)).catch((e) => e);
    assert.ok(refused instanceof AuthError, refused);
    assert.equal(refused.status, 401);
    assert.equal(tries, 1);
  });
});

describe("retries through a proxy", { skip: SKIP }, () => {
  const proxies = [];
  after(() => Promise.all(proxies.map((proxy) => proxy.close())));
  const through = async (script, options = {}) => {
    const proxy = await startProxy(script);
    proxies.push(proxy);
    return { proxy, client: createClient({ url: proxy.url, adminSecret: ADMIN_SECRET, ...FAST, ...options }) };
  };
  const keys = (proxy) => proxy.seen.map((entry) => entry.headers["idempotency-key"]);

  test("a 503 with Retry-After: 0 is retried with the same Idempotency-Key, then accepted", async () => {
    const unavailable = { status: 503, headers: { "retry-after": "0", "content-type": "application/problem+json" } };
    const { proxy, client } = await through((n) => (n === 1 ? unavailable : "pass"));
    const accepted = await client.trigger("user.registered", student(10));
    assert.equal(proxy.seen.length, 2);
    const [first, second] = keys(proxy);
    assert.match(first, /^[0-9a-f-]{36}$/);
    assert.equal(second, first);
    assert.equal(proxy.seen[1].body, proxy.seen[0].body);
    assert.equal(accepted.duplicate, undefined, "the first try never reached the daemon");
    assert.equal(JSON.parse(proxy.seen[1].answer.body).id, accepted.id);
  });

  test("an answer lost after the daemon stored the event: the retry gets the same event, not a second", async () => {
    const { proxy, client } = await through((n) => (n === 1 ? "drop" : "pass"));
    const accepted = await client.trigger("user.registered", student(11));
    assert.equal(proxy.seen.length, 2);
    const stored = JSON.parse(proxy.seen[0].answer.body);
    assert.equal(proxy.seen[0].answer.status, 202);
    assert.equal(accepted.duplicate, true);
    assert.equal(accepted.id, stored.id);
    assert.equal(keys(proxy)[1], keys(proxy)[0]);
  });

  test("a connection cut before any answer is retried", async () => {
    const { proxy, client } = await through((n) => (n === 1 ? "cut" : "pass"));
    const accepted = await client.trigger("user.registered", student(12));
    assert.equal(proxy.seen.length, 2);
    assert.equal(keys(proxy)[1], keys(proxy)[0]);
    assert.match(accepted.id, /^evt_/);
  });

  test("429 and 502/504 are retried; after `retries` tries the client throws Unavailable", async () => {
    const statuses = [429, 502, 504, 503];
    const { proxy, client } = await through((n) => ({ status: statuses[(n - 1) % 4], headers: { "retry-after": "0" } }), {
      retries: 3,
    });
    const failed = await client.trigger("user.registered", student(13)).catch((e) => e);
    assert.ok(failed instanceof Unavailable, failed);
    assert.equal(failed.status, 503);
    assert.equal(proxy.seen.length, 4, "the first try and 3 retries");
    assert.equal(new Set(keys(proxy)).size, 1);
  });

  test("an abort signal stops the call and its retries", async () => {
    const { proxy, client } = await through(() => ({ status: 503, headers: { "retry-after": "30" } }));
    const controller = new AbortController();
    const call = client.trigger("user.registered", student(14), { signal: controller.signal });
    while (proxy.seen.length === 0) await new Promise((resolve) => setTimeout(resolve, 10));
    controller.abort(new Error("shutting down"));
    await assert.rejects(call, /shutting down/);
    assert.equal(proxy.seen.length, 1);
  });
});

test("Retry-After reads delta-seconds and HTTP dates, and ignores what it cannot read", () => {
  const now = Date.parse("2026-01-01T00:00:00Z");
  assert.equal(retryAfterMs("3", now), 3000);
  assert.equal(retryAfterMs("Thu, 01 Jan 2026 00:00:05 GMT", now), 5000);
  assert.equal(retryAfterMs("Wed, 31 Dec 2025 23:59:00 GMT", now), 0);
  assert.equal(retryAfterMs("soon", now), null);
  assert.equal(retryAfterMs(null, now), null);
});
