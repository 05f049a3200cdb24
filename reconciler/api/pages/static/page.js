// The status page's progressive enhancement: every page reads without it.
// - times are shown in the viewer's zone (the RFC 3339 value stays on hover), the plot's minutes too;
// - an integration's log follows the API's Server-Sent Events stream.
// Entries are built with textContent only: nothing from the stream is parsed as HTML.
"use strict";

function localTime(element) {
  const at = new Date(element.getAttribute("datetime"));
  if (isNaN(at)) return;
  element.textContent = at.toLocaleString(undefined, {
    year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short",
  });
}

// The plot's minutes (axis labels, hover texts) on the viewer's clock; the server drew them in UTC.
function localClock(element) {
  const at = new Date(element.dataset.at);
  if (isNaN(at)) return;
  const clock = at.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
  element.textContent = clock + (element.dataset.rest || "");
}

function timeElement(value) {
  const element = document.createElement("time");
  element.setAttribute("datetime", value);
  element.title = value;
  element.textContent = value;
  localTime(element);
  return element;
}

function span(text, className) {
  const element = document.createElement(className === "code" ? "code" : "span");
  if (className && className !== "code") element.className = className;
  element.textContent = text;
  return element;
}

function entryElement(entry) {
  const item = document.createElement("li");
  item.className = "entry new k-" + entry.kind;
  item.dataset.cursor = entry.cursor;
  const parts = [timeElement(entry.at), span(entry.kind, "tag")];
  const status = document.createElement("b");
  status.textContent = entry.status;
  parts.push(status);
  if (entry.event) parts.push(span(entry.event, "code"));
  if (entry.statusCode) parts.push(span("HTTP " + entry.statusCode));
  if (entry.latencyMs !== undefined && entry.latencyMs !== null) parts.push(span(Math.round(entry.latencyMs) + " ms"));
  if (entry.attempt) parts.push(span("attempt " + entry.attempt));
  if (entry.actor) parts.push(span("by " + entry.actor));
  if (entry.message) parts.push(span(entry.message, "msg"));
  if (entry.error) parts.push(span(entry.error, "msg bad"));
  if (entry.deliveryId) parts.push(span(entry.deliveryId, "code"));
  parts.forEach((part, index) => {
    if (index) item.append(" ");
    item.append(part);
  });
  return item;
}

function follow(log) {
  if (!window.EventSource) return;
  const after = log.dataset.after;
  const url = log.dataset.stream + "?follow=true" + (after ? "&after=" + encodeURIComponent(after) : "");
  const source = new EventSource(url);
  const live = document.getElementById("live");
  source.onopen = () => { if (live) live.hidden = false; };
  source.onerror = () => { if (live) live.hidden = true; };
  const add = (message) => {
    const entry = JSON.parse(message.data);
    log.prepend(entryElement(entry));
    const empty = document.getElementById("log-empty");
    if (empty) empty.remove();
  };
  for (const kind of ["attempt", "test", "sync", "reconcile", "receipt"]) source.addEventListener(kind, add);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("time[datetime]").forEach(localTime);
  document.querySelectorAll(".plot .clock[data-at]").forEach(localClock);
  const log = document.getElementById("log");
  if (log && log.dataset.stream) follow(log);
  document.documentElement.classList.add("js");
});
