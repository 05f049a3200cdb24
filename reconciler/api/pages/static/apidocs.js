// The API reference's "Try it" forms: each sends its operation's request from the browser and
// shows the answer. The page reads without this script; curl lines do the same from a shell.
// The admin secret is read from the page's field at each send and never stored anywhere.
// Answers are shown with textContent only: nothing received is parsed as HTML.
"use strict";

const STREAM_LIMIT = 64 * 1024; // a followed log is shown until Stop, or this many characters

function openTarget() {
  const id = decodeURIComponent(location.hash.slice(1));
  const target = id && document.getElementById(id);
  if (target && target.tagName === "DETAILS") target.open = true;
}

function requestOf(form, operation) {
  let path = operation.dataset.path;
  const query = new URLSearchParams();
  const headers = { accept: "application/json, application/problem+json, text/plain, text/event-stream" };
  for (const input of form.querySelectorAll("input[data-in]")) {
    const value = input.value;
    if (value === "") continue;
    if (input.dataset.in === "path") path = path.replace("{" + input.name + "}", encodeURIComponent(value));
    else if (input.dataset.in === "query") query.append(input.name, value);
    else if (input.dataset.in === "header") headers[input.name] = value;
  }
  const secret = document.getElementById("api-secret").value;
  if (operation.hasAttribute("data-admin") && secret) headers["x-admin-secret"] = secret;
  const init = { method: operation.dataset.method.toUpperCase(), headers, credentials: "omit" };
  const body = form.querySelector("textarea[name=body]");
  if (body && body.value.trim() !== "") {
    JSON.parse(body.value); // a SyntaxError is shown to the user before anything is sent
    headers["content-type"] = "application/json";
    init.body = body.value;
  }
  const search = query.toString();
  return { url: path + (search ? "?" + search : ""), init };
}

function pretty(text, contentType) {
  if (!/json/.test(contentType || "")) return text;
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch (_) {
    return text;
  }
}

async function readStream(response, shown, signal) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  shown.textContent = "";
  try {
    while (!signal.aborted && shown.textContent.length < STREAM_LIMIT) {
      const { value, done } = await reader.read();
      if (done) break;
      shown.textContent += decoder.decode(value, { stream: true });
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

async function send(form, operation) {
  const output = form.querySelector(".answer");
  const status = output.querySelector(".answer-status");
  const shown = output.querySelector(".answer-body");
  const stop = form.querySelector(".stop");
  output.hidden = false;
  status.className = "answer-status";
  let request;
  try {
    request = requestOf(form, operation);
  } catch (error) {
    status.textContent = "Not sent: the body is not JSON (" + error.message + ")";
    status.classList.add("bad");
    shown.textContent = "";
    return;
  }
  const controller = new AbortController();
  request.init.signal = controller.signal;
  stop.hidden = false;
  stop.onclick = () => controller.abort();
  status.textContent = request.init.method + " " + request.url + " …";
  shown.textContent = "";
  try {
    const response = await fetch(request.url, request.init);
    const type = response.headers.get("content-type") || "";
    status.textContent = request.init.method + " " + request.url + " → " + response.status + " " + response.statusText;
    status.classList.add(response.ok ? "ok" : "bad");
    if (type.startsWith("text/event-stream")) await readStream(response, shown, controller.signal);
    else shown.textContent = pretty(await response.text(), type);
  } catch (error) {
    if (error.name !== "AbortError") {
      status.textContent = "Not answered: " + error.message;
      status.classList.add("bad");
    }
  } finally {
    stop.hidden = true;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  for (const operation of document.querySelectorAll("details.op")) {
    const form = operation.querySelector("form.try");
    if (!form) continue;
    form.hidden = false;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      send(form, operation);
    });
  }
  openTarget();
  window.addEventListener("hashchange", openTarget);
});
