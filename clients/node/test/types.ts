// Type-checked by `tsc -p test/tsconfig.json` (tests/test_node_client.py): each @ts-expect-error
// must meet an error, so the declarations refuse what they should as well as take what they should.

import { createClient, TriggerRefused, type Accepted, type EventData, type UserRegisteredData } from "@cms-integrations/client";
import integrationService, { createIntegrationService } from "@cms-integrations/client/adapter";

const client = createClient({ url: "http://127.0.0.1:8080", adminSecret: "secret", retries: 3, timeoutMs: 5000 });

export async function accepted(): Promise<Accepted[]> {
  const registered: UserRegisteredData = { userId: 123, email: "student@example.com", studentId: "IT2024001" };
  return [
    await client.trigger("user.registered", registered),
    await client.trigger<"user.registered">("user.registered", { userId: "u-1", email: "a@example.edu", extra: 1 }),
    await client.trigger("grade.published", { studentId: 1, moduleId: 2, grade: "A", priority: "high" }),
    await client.trigger("custom.course.archived", { anything: ["goes"] }, { idempotencyKey: "k-1" }),
    await integrationService.triggerEvent("user.login", { userId: 5 }),
    await createIntegrationService({ url: "http://127.0.0.1:8080", adminSecret: "s" }).triggerEvent(
      "module.created",
      { moduleId: 42, name: "Introduction to Programming" },
    ),
  ];
}

export async function refused(): Promise<void> {
  // @ts-expect-error email is required for user.registered
  await client.trigger("user.registered", { userId: 123 });
  // @ts-expect-error userId is a number or a string
  await client.trigger("user.registered", { userId: true, email: "a@example.edu" });
  // @ts-expect-error priority is one of low, normal, high
  await client.trigger("grade.published", { studentId: 1, moduleId: 2, grade: 3, priority: "urgent" });
  // @ts-expect-error the adapter checks data too
  await integrationService.triggerEvent("note.uploaded", { noteId: 1, moduleId: 2 });
  // @ts-expect-error a custom event's data is still an object
  await client.trigger("custom.course.archived", "not an object");
}

export function errors(error: unknown): string[] {
  if (error instanceof TriggerRefused) return [...error.errors.map((e) => e.pointer), ...error.conflicts];
  return [];
}

type Custom = EventData<"custom.anything">;
export const custom: Custom = { free: "form" };
