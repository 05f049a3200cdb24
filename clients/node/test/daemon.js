// What the tests share: the daemon that tests/test_node_client.py started, and a loopback proxy
// in front of it that can answer for it, drop its answers or cut connections.

import http from "node:http";

export const DAEMON_URL = process.env.DAEMON_URL;
export const ADMIN_SECRET = process.env.ADMIN_SECRET;
export const CONFIG_DIR = process.env.CONFIG_DIR;
export const SKIP = DAEMON_URL && ADMIN_SECRET ? false : "needs a daemon: run through tests/test_node_client.py";
export const WAIT_MS = 30_000; // generous for a loaded CI machine

/** GET a daemon route as the admin, parsed. */
export async function admin(path) {
  const response = await fetch(new URL(path, DAEMON_URL), { headers: { "x-admin-secret": ADMIN_SECRET } });
  return { status: response.status, body: await response.json() };
}

/** Poll `check` until it returns something truthy, or fail after `ms`. */
export async function until(check, what, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    const found = await check();
    if (found) return found;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/**
 * A proxy on 127.0.0.1:0 to the daemon. `script(n)` decides request n (from 1): "pass" forwards it,
 * "cut" closes the connection unanswered, "drop" forwards it and then answers 502 in place of the
 * daemon's answer (the event is stored, the client never hears), {status, headers} answers alone.
 * `seen` holds each request's headers and body and, when forwarded, the daemon's answer.
 */
export async function startProxy(script) {
  const seen = [];
  const server = http.createServer(async (request, response) => {
    const chunks = [];
    for await (const chunk of request) chunks.push(chunk);
    const entry = { headers: request.headers, body: Buffer.concat(chunks).toString("utf8"), answer: null };
    seen.push(entry);
    const action = script(seen.length);
    if (action === "cut") {
      request.socket.destroy();
      return;
    }
    if (typeof action === "object") {
      response.writeHead(action.status, action.headers ?? {}).end(action.body ?? "");
      return;
    }
    const upstream = await fetch(new URL(request.url, DAEMON_URL), {
      method: request.method,
      headers: forwardable(request.headers),
      body: entry.body,
    });
    entry.answer = { status: upstream.status, body: await upstream.text() };
    if (action === "drop") {
      response.writeHead(502, { "content-type": "text/plain" }).end("bad gateway");
      return;
    }
    response.writeHead(upstream.status, { "content-type": upstream.headers.get("content-type") ?? "text/plain" });
    response.end(entry.answer.body);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${server.address().port}`;
  const close = () =>
    new Promise((resolve) => {
      server.close(resolve);
      server.closeAllConnections(); // keep-alive connections would hold close() for seconds
    });
  return { url, seen, close };
}

function forwardable(headers) {
  const out = {};
  for (const name of ["content-type", "x-admin-secret", "authorization", "idempotency-key", "accept"]) {
    if (headers[name] !== undefined) out[name] = headers[name];
  }
  return out;
}
