// A drop-in for the course system's original integration service: the same
// `triggerEvent(eventType, data)` call, now stored by the integration daemon over HTTP with the
// client's retries and idempotency key. The course system changes one import:
//
//   import integrationService from "@cms-integrations/client/adapter";
//   await integrationService.triggerEvent("user.registered", { userId: 123, email: "student@example.com" });
//
// The default export reads INTEGRATIONS_URL and INTEGRATIONS_ADMIN_SECRET on its first call;
// `createIntegrationService(options)` takes the client's options instead.

import { createClient } from "./index.js";

export { AuthError, ClientError, TriggerRefused, Unavailable } from "./index.js";

/** An object with the original service's `triggerEvent(eventType, data)`, resolving to the daemon's 202 body. */
export function createIntegrationService(options) {
  const client = createClient(options);
  return {
    triggerEvent(eventType, data, triggerOptions) {
      return client.trigger(eventType, data ?? {}, triggerOptions);
    },
  };
}

function fromEnvironment() {
  const url = process.env.INTEGRATIONS_URL;
  const adminSecret = process.env.INTEGRATIONS_ADMIN_SECRET;
  if (!url || !adminSecret) {
    throw new TypeError(
      "integrationService: set INTEGRATIONS_URL (the daemon, such as http://127.0.0.1:8080) and " +
        "INTEGRATIONS_ADMIN_SECRET (its ADMIN_SECRET), or use createIntegrationService({ url, adminSecret })",
    );
  }
  return createIntegrationService({ url, adminSecret });
}

let shared = null;

/** The service configured from the environment, created on its first call (so importing never throws). */
const integrationService = {
  triggerEvent(eventType, data, triggerOptions) {
    shared ??= fromEnvironment();
    return shared.triggerEvent(eventType, data, triggerOptions);
  },
};

export default integrationService;
