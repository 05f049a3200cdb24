// Declarations of the client (index.js); the event types' data shapes are generated into events.d.ts.
import type { EventData, EventMap } from "./events.js";

export type * from "./events.js";

export declare const TRIGGER_PATH: "/api/integrations/webhooks/trigger";
export declare const RETRIED_STATUSES: readonly number[];

/** An RFC 9457 problem document, as the daemon answers a refusal. */
export interface Problem {
  type?: string;
  title?: string;
  status?: number;
  detail?: string;
  errors?: Array<{ pointer: string; message: string }>;
  conflicts?: string[];
  original?: string;
  [member: string]: unknown;
}

/** The daemon's 202: the event is stored with its deliveries. */
export interface Accepted {
  id: string;
  event: string;
  timestamp: string;
  /** How many integrations the event was routed to. */
  deliveries: number;
  /** A repeat (same idempotency key and body): answered with the event first stored. */
  duplicate?: true;
  duplicateOf?: string;
}

export interface ClientOptions {
  /** The daemon, such as http://127.0.0.1:8080. */
  url: string;
  /** The daemon's ADMIN_SECRET, sent as x-admin-secret. */
  adminSecret: string;
  /** Tries after the first for a 429, 502, 503, 504 or a network error (default 5). */
  retries?: number;
  /** How long one try may take, in milliseconds (default 10000). */
  timeoutMs?: number;
  /** A fetch to use instead of the global one. */
  fetch?: typeof fetch;
  /** The backoff's first ceiling, in milliseconds (default 200); it doubles each try. */
  backoffBaseMs?: number;
  /** The backoff's largest ceiling, in milliseconds (default 10000). */
  backoffMaxMs?: number;
}

export interface TriggerOptions {
  /** Sent as Idempotency-Key; one is generated per call when none is given (the event `id` when one is). */
  idempotencyKey?: string;
  /** RFC 3339 time of the event (default: when the daemon stores it). */
  timestamp?: string;
  /** The event's own id; it also serves as its idempotency key. */
  id?: string;
  /** Aborts the call, its retries and the waits between them. */
  signal?: AbortSignal;
}

/** An event type: a built-in one (with its data type checked) or any custom one. */
export type EventType = keyof EventMap | (string & {});

export interface Client {
  trigger<E extends EventType>(event: E, data: EventData<E>, options?: TriggerOptions): Promise<Accepted>;
}

export declare function createClient(options: ClientOptions): Client;

export declare function retryAfterMs(value: string | null | undefined, now?: number): number | null;

export declare function retryDelayMs(
  attempt: number,
  retryAfter: number | null | undefined,
  backoff?: { baseMs?: number; maxMs?: number },
): number;

export declare class ClientError extends Error {
  constructor(message: string, details?: { status?: number | null; problem?: Problem; cause?: unknown });
  /** The daemon's HTTP status when it answered. */
  readonly status: number | null;
  /** The problem document it answered with ({} when none). */
  readonly problem: Problem;
}

/** 401 or 403: the admin secret is missing or wrong. */
export declare class AuthError extends ClientError {}

/** A 4xx for the event itself (not retried). */
export declare class TriggerRefused extends ClientError {
  /** For an event that does not match its type: what is wrong, each with a JSON pointer. */
  readonly errors: Array<{ pointer: string; message: string }>;
  /** For an idempotency key used before with another body: the fields that differ. */
  readonly conflicts: string[];
}

/** Still unavailable after every retry. */
export declare class Unavailable extends ClientError {}
