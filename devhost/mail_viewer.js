// The list of /_dev/mail: polls messages.json and redraws the table when it changed.
// Built with DOM calls and textContent only: nothing from a message is ever parsed as HTML.
"use strict";

const table = document.getElementById("mail");
const rows = table.querySelector("tbody");
const empty = document.getElementById("empty");
const problems = document.getElementById("problems");
const updated = document.getElementById("updated");
const every = Number(table.dataset.poll) || 1000;
const source = table.dataset.source;
let shown = null;

function cell(row, ...content) {
  const td = row.insertCell();
  for (const item of content) td.append(item);
  return td;
}

function link(href, text) {
  const a = document.createElement("a");
  a.href = href;
  a.textContent = text;
  return a;
}

function recipients(message) {
  const lines = [];
  for (const [label, list] of [["to", message.to], ["cc", message.cc], ["bcc", message.bcc]]) {
    if (list.length) lines.push(`${label}: ${list.join(", ")}`);
  }
  return lines.join("\n");
}

function draw(messages) {
  rows.replaceChildren();
  for (const message of messages) {
    const row = rows.insertRow();
    row.dataset.key = message.key;
    const time = document.createElement("time");
    time.dateTime = message.time;
    time.textContent = new Date(message.time).toLocaleString();
    time.title = `${message.time} (${message.source})`;
    cell(row, time);
    cell(row, message.from);
    cell(row, recipients(message)).style.whiteSpace = "pre-line";
    cell(row, link(message.url, message.subject || "(no subject)")).className = "subject";
    cell(row, message.sizeText).className = "num";
    cell(row, message.statusUrl ? link(message.statusUrl, message.messageId) : "—");
  }
  empty.hidden = messages.length > 0;
}

async function poll() {
  try {
    const response = await fetch(source, { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const text = await response.text();
    if (text !== shown) {
      const answer = JSON.parse(text);
      draw(answer.messages);
      problems.textContent = answer.problems.join("\n");
      shown = text;
    }
    updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    updated.textContent = `Cannot reach the dev host (${error}); retrying.`;
  }
  setTimeout(poll, every);
}

poll();
