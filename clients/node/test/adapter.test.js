// The drop-in adapter: the original service's triggerEvent(eventType, data), against the real daemon.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import integrationService, { createIntegrationService, TriggerRefused } from "../adapter.js";
import { ADMIN_SECRET, DAEMON_URL, SKIP } from "./daemon.js";

describe("the integrationService adapter", { skip: SKIP }, () => {
  test("triggerEvent(eventType, data) stores the event, as the course system calls it", async () => {
    const service = createIntegrationService({ url: DAEMON_URL, adminSecret: ADMIN_SECRET });
    const accepted = await service.triggerEvent("user.registered", {
      userId: 123,
      email: "student@example.com",
      name: "John Doe",
      studentId: "IT2024001",
      registrationDate: "2024-01-15T10:30:00.000Z",
      source: "node-test",
    });
    assert.equal(accepted.event, "user.registered");
    assert.equal(accepted.deliveries, 1);
  });

  test("the default export is configured from INTEGRATIONS_URL and INTEGRATIONS_ADMIN_SECRET", async () => {
    process.env.INTEGRATIONS_URL = DAEMON_URL;
    process.env.INTEGRATIONS_ADMIN_SECRET = ADMIN_SECRET;
    const accepted = await integrationService.triggerEvent("custom.course.archived", { courseId: 9 });
    assert.equal(accepted.event, "custom.course.archived");
    const refused = await integrationService.triggerEvent("user.registered", { email: 7 }).catch((e) => e);
    assert.ok(refused instanceof TriggerRefused, refused);
  });
});
