// Declarations of the drop-in adapter (adapter.js).
import type { Accepted, ClientOptions, EventType, TriggerOptions } from "./index.js";
import type { EventData } from "./events.js";

export { AuthError, ClientError, TriggerRefused, Unavailable } from "./index.js";

/** The original integration service's call. */
export interface IntegrationService {
  triggerEvent<E extends EventType>(eventType: E, data: EventData<E>, options?: TriggerOptions): Promise<Accepted>;
}

export declare function createIntegrationService(options: ClientOptions): IntegrationService;

/** Configured from INTEGRATIONS_URL and INTEGRATIONS_ADMIN_SECRET on its first call. */
declare const integrationService: IntegrationService;
export default integrationService;
