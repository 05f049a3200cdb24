// docs/receiving.md's Node.js receiver, run as pasted, verifies real signed deliveries of the
// daemon (started by tests/test_node_client.py) with the npm package standardwebhooks.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { after, describe, test } from "node:test";

import { Webhook } from "standardwebhooks";

import { createClient } from "../index.js";
import { ADMIN_SECRET, admin, CONFIG_DIR, DAEMON_URL, SKIP, until, WAIT_MS } from "./daemon.js";

const SECRET = process.env.RECEIVER_SIGNING_SECRET;
const PACKAGE_DIR = fileURLToPath(new URL("..", import.meta.url));
const DOC = fileURLToPath(new URL("../../../docs/receiving.md", import.meta.url));
const skip = SKIP || (!CONFIG_DIR || !SECRET ? "needs CONFIG_DIR and RECEIVER_SIGNING_SECRET" : false);

/** The doc's one `js` block, as a reader would copy it. */
function receiverFromDocs() {
  const blocks = [...readFileSync(DOC, "utf8").matchAll(/```js\n([\s\S]*?)```/g)].map((match) => match[1]);
  assert.equal(blocks.length, 1, "docs/receiving.md has one Node.js program");
  return blocks[0];
}

/** Start the receiver with PORT=0; resolves with its port and the lines it prints. */
async function startReceiver(directory) {
  const file = join(directory, "receiver.mjs");
  writeFileSync(file, receiverFromDocs());
  const child = spawn(process.execPath, [file], {
    cwd: directory,
    env: { ...process.env, PORT: "0", WEBHOOK_SECRET: SECRET },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines = [];
  createInterface({ input: child.stdout }).on("line", (line) => lines.push(line));
  const listening = await until(
    () => lines.map((line) => /^listening on (\d+)$/.exec(line)).find(Boolean),
    "the receiver's 'listening on' line",
  );
  return { child, lines, port: Number(listening[1]) };
}

function integrationTo(port) {
  return `apiVersion: cms.integrations/v1
kind: Integration
id: node-receiver
name: Node receiver
type: webhook
config:
  endpoint: http://127.0.0.1:${port}/webhooks
  allowPrivateNetwork: true
  signingSecret: \${env:RECEIVER_SIGNING_SECRET}
retry: {schedule: [200ms], maxAttempts: 20}
webhooks:
  - events: ["grade.published"]
`;
}

describe("docs/receiving.md's Node.js receiver", { skip }, () => {
  // under the package, so the program resolves standardwebhooks from its node_modules as pasted
  const directory = skip ? null : mkdtempSync(join(PACKAGE_DIR, ".tmp-"));
  let receiver = null;
  after(() => {
    receiver?.child.kill();
    if (directory) rmSync(directory, { recursive: true, force: true });
    if (CONFIG_DIR) rmSync(join(CONFIG_DIR, "node-receiver.yaml"), { force: true });
  });

  test("verifies the daemon's signed delivery of an event", { timeout: 4 * WAIT_MS }, async () => {
    receiver = await startReceiver(directory);
    writeFileSync(join(CONFIG_DIR, "node-receiver.yaml"), integrationTo(receiver.port));
    await until(async () => {
      const { status, body } = await admin("/api/integrations/node-receiver");
      return status === 200 && body.status === "active";
    }, "the daemon to apply node-receiver.yaml");

    const client = createClient({ url: DAEMON_URL, adminSecret: ADMIN_SECRET });
    const data = { studentId: "IT2024001", moduleId: 42, grade: 78, assessment: "Midterm" };
    const accepted = await client.trigger("grade.published", data);
    assert.equal(accepted.deliveries, 1);
    const line = await until(
      () => receiver.lines.find((text) => text.startsWith(`received grade.published ${accepted.id} `)),
      "the receiver to verify the delivery",
    );
    assert.deepEqual(JSON.parse(line.slice(`received grade.published ${accepted.id} `.length)), data);
  });

  test("refuses a request whose signature is not the secret's", async () => {
    assert.ok(receiver, "the receiver started in the test before");
    const body = JSON.stringify({ id: "evt_forged", event: "grade.published", timestamp: "now", data: {} });
    const forger = new Webhook(`whsec_${Buffer.from("another-secret-of-32-bytes-long!").toString("base64")}`);
    const now = new Date();
    const headers = {
      "content-type": "application/json",
      "webhook-id": "evt_forged",
      "webhook-timestamp": String(Math.floor(now.getTime() / 1000)),
      "webhook-signature": forger.sign("evt_forged", now, body),
    };
    const answer = await fetch(`http://127.0.0.1:${receiver.port}/webhooks`, { method: "POST", headers, body });
    assert.equal(answer.status, 400);
    assert.ok(!receiver.lines.some((text) => text.includes("evt_forged")));
    // the same request signed with the integration's secret is taken: the refusal was the signature's
    headers["webhook-signature"] = new Webhook(SECRET).sign("evt_forged", now, body);
    const signed = await fetch(`http://127.0.0.1:${receiver.port}/webhooks`, { method: "POST", headers, body });
    assert.equal(signed.status, 204);
  });
});
