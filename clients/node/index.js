// A client of the integration daemon's trigger route for Node.js 18+, with no dependencies:
// it stores an event through `POST /api/integrations/webhooks/trigger` and retries safely.
//
// Every call sends an Idempotency-Key (one of its own per call unless given), so a retry never
// stores an event twice: a connection that drops after the daemon stored the event, a 503 while
// the store fails over, a 429 or a 502/504 from a proxy are tried again with exponential backoff
// and full jitter, a Retry-After honoured, up to `retries` times; the daemon answers a repeat with
// the event it stored first (`duplicate: true`). Any other 4xx is not retried: it throws
// `TriggerRefused` (with the problem document's `errors` or `conflicts`) or `AuthError`.
// The same semantics as the Python client, reconciler/client.py.

import { randomUUID } from "node:crypto";

export const TRIGGER_PATH = "/api/integrations/webhooks/trigger";
export const RETRIED_STATUSES = Object.freeze([429, 502, 503, 504]);
const DEFAULT_RETRIES = 5;
const DEFAULT_TIMEOUT_MS = 10_000;
const BACKOFF_BASE_MS = 200;
const BACKOFF_MAX_MS = 10_000;
const RETRY_AFTER_MAX_MS = 60_000; // a longer wait is the caller's decision, not a library's

/** The daemon could not be asked, or refused; `status` is its HTTP status when it answered. */
export class ClientError extends Error {
  constructor(message, { status = null, problem = {}, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = new.target.name;
    this.status = status;
    this.problem = problem;
  }
}

/** 401 or 403: the admin secret is missing or wrong. */
export class AuthError extends ClientError {}

/** A 4xx for the event itself: `errors` (each `{pointer, message}`) for an event that does not
 * match its type, `conflicts` for an idempotency key used before with another body. */
export class TriggerRefused extends ClientError {
  get errors() {
    return Array.isArray(this.problem.errors) ? this.problem.errors : [];
  }

  get conflicts() {
    return Array.isArray(this.problem.conflicts) ? this.problem.conflicts : [];
  }
}

/** Still unavailable after every retry: the last answer's status, or the network error as `cause`. */
export class Unavailable extends ClientError {}

/** Milliseconds a Retry-After header asks for (delta-seconds or an HTTP date); null when absent or unreadable. */
export function retryAfterMs(value, now = Date.now()) {
  if (!value) return null;
  const text = value.trim();
  if (/^[0-9]+$/.test(text)) return Number(text) * 1000;
  const when = Date.parse(text);
  return Number.isNaN(when) ? null : Math.max(0, when - now);
}

/** Full-jitter exponential backoff: a random wait up to base * 2^(attempt-1), capped; or the Retry-After. */
export function retryDelayMs(attempt, retryAfter, { baseMs = BACKOFF_BASE_MS, maxMs = BACKOFF_MAX_MS } = {}) {
  if (retryAfter !== null && retryAfter !== undefined) return Math.min(retryAfter, RETRY_AFTER_MAX_MS);
  return Math.random() * Math.min(maxMs, baseMs * 2 ** (attempt - 1));
}

/**
 * A client of one daemon.
 * @param {{url: string, adminSecret: string, retries?: number, timeoutMs?: number, fetch?: typeof fetch,
 *          backoffBaseMs?: number, backoffMaxMs?: number}} options
 */
export function createClient(options) {
  const { url, adminSecret } = options ?? {};
  if (!url) throw new TypeError("createClient: `url` is required, such as http://127.0.0.1:8080");
  if (!adminSecret) throw new TypeError("createClient: `adminSecret` is required (the daemon's ADMIN_SECRET)");
  const endpoint = new URL(TRIGGER_PATH, url.endsWith("/") ? url : `${url}/`).href;
  const retries = options.retries ?? DEFAULT_RETRIES;
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const send = options.fetch ?? globalThis.fetch;
  const backoff = { baseMs: options.backoffBaseMs ?? BACKOFF_BASE_MS, maxMs: options.backoffMaxMs ?? BACKOFF_MAX_MS };
  if (typeof send !== "function") throw new TypeError("createClient: no fetch; Node.js 18 or newer has one");

  async function attemptOnce(body, headers, signal) {
    const { signal: attemptSignal, done } = withTimeout(signal, timeoutMs);
    try {
      const response = await send(endpoint, { method: "POST", headers, body, signal: attemptSignal });
      const text = await response.text();
      return { response, text };
    } finally {
      done();
    }
  }

  async function trigger(event, data, { idempotencyKey, timestamp, id, signal } = {}) {
    const payload = { event, data };
    if (timestamp !== undefined) payload.timestamp = timestamp;
    if (id !== undefined) payload.id = id;
    const headers = {
      "content-type": "application/json",
      accept: "application/json, application/problem+json",
      "x-admin-secret": adminSecret,
      // one key for every try of this call: the daemon stores the event once, whichever try it saw
      "idempotency-key": idempotencyKey ?? id ?? randomUUID(),
    };
    const body = JSON.stringify(payload);
    for (let attempt = 1; ; attempt++) {
      let answer;
      try {
        answer = await attemptOnce(body, headers, signal);
      } catch (error) {
        if (signal?.aborted) throw signal.reason ?? error;
        if (attempt > retries) throw new Unavailable(`cannot reach ${url}: ${error.message}`, { cause: error });
        await sleep(retryDelayMs(attempt, null, backoff), signal);
        continue;
      }
      const { response, text } = answer;
      if (response.status === 202) return JSON.parse(text);
      if (!RETRIED_STATUSES.includes(response.status) || attempt > retries) throw refusal(response, text);
      await sleep(retryDelayMs(attempt, retryAfterMs(response.headers.get("retry-after")), backoff), signal);
    }
  }

  return { trigger };
}

function refusal(response, text) {
  let problem = {};
  if ((response.headers.get("content-type") ?? "").includes("json")) {
    try {
      const parsed = JSON.parse(text);
      if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) problem = parsed;
    } catch {
      // not JSON after all: the status speaks alone
    }
  }
  const status = response.status;
  const detail = problem.detail || response.statusText || "no detail";
  const details = { status, problem };
  if (status === 401 || status === 403) return new AuthError(`the daemon refused the admin secret: ${detail}`, details);
  if (RETRIED_STATUSES.includes(status)) return new Unavailable(`the daemon is unavailable (${status}): ${detail}`, details);
  if (status >= 400 && status < 500) return new TriggerRefused(`the event was refused (${status}): ${detail}`, details);
  return new ClientError(`the daemon answered ${status}: ${detail}`, details);
}

/** The caller's signal plus a timeout for one try (AbortSignal.any is not in Node 18). */
function withTimeout(signal, timeoutMs) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
  const forward = () => controller.abort(signal.reason);
  if (signal?.aborted) forward();
  else signal?.addEventListener("abort", forward, { once: true });
  const done = () => {
    clearTimeout(timer);
    signal?.removeEventListener("abort", forward);
  };
  return { signal: controller.signal, done };
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    function onAbort() {
      clearTimeout(timer);
      reject(signal.reason);
    }
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
