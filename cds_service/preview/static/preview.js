// Card preview: build a request for a fixture patient, call the service, show the cards,
// send feedback. Card text goes into the page as text (textContent), never as HTML; the one
// exception is `detail`, rendered to HTML on the server with raw HTML disabled.
"use strict";

(function () {
  const patients = JSON.parse(document.getElementById("patients-data").textContent);
  const byName = new Map(patients.map((p) => [p.name, p]));
  const $ = (id) => document.getElementById(id);
  const urls = $("preview").dataset; // from url_for: right behind a path prefix too

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "class") node.className = value;
      else if (key.startsWith("data-")) node.setAttribute(key, value);
      else node[key] = value;
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function setStatus(text, kind) {
    const status = $("status");
    status.textContent = text;
    status.className = "status " + (kind || "");
  }

  // Cards belong to one patient, hook and draft: choosing another clears them (and the raw
  // request and response), so no card is ever shown under a patient it was not made for.
  let generation = 0; // bumped by every clear: an answer to an older call is dropped

  function clearCards() {
    generation += 1;
    $("cards").replaceChildren();
    $("request-json").textContent = "";
    $("response-json").textContent = "";
    setStatus("", "");
  }

  function showPatient() {
    clearCards();
    const p = byName.get($("patient").value);
    $("patient-name").textContent = p.name;
    $("patient-about").textContent = p.about;
    const list = $("patient-record");
    list.replaceChildren(...p.record.map((line) => el("li", {}, line)));
    $("patient-history").href = urls.historyUrl.replace("PATIENT", encodeURIComponent(p.name));
    $("patient-drafts").textContent = p.drafts.length
      ? "Own draft orders: " + p.drafts.join("; ")
      : "No draft orders of its own.";
  }

  async function postJson(url, body) {
    const reply = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    let payload = {};
    try {
      payload = await reply.json();
    } catch (e) {
      payload = { error: "the answer was not JSON" };
    }
    return { status: reply.status, payload };
  }

  function safeUrl(url) {
    try {
      const parsed = new URL(url, window.location.href);
      return parsed.protocol === "https:" || parsed.protocol === "http:" ? parsed.href : null;
    } catch (e) {
      return null;
    }
  }

  function resourceLabel(action) {
    if (action.resourceId) return action.resourceId;
    const r = action.resource || {};
    return r.resourceType ? r.resourceType + (r.id ? "/" + r.id : "") : "";
  }

  function showActions(card, suggestion, box) {
    const items = (suggestion.actions || []).map((action) =>
      el(
        "li",
        { class: "action action-" + action.type, "data-type": String(action.type) },
        el("strong", {}, String(action.type).toUpperCase() + " " + resourceLabel(action)),
        " — " + (action.description || ""),
        action.resource ? el("pre", { class: "resource" }, JSON.stringify(action.resource, null, 2)) : null
      )
    );
    box.replaceChildren(
      el("h4", {}, "Accepted: " + suggestion.label + " — the EHR would apply:"),
      el("ul", { class: "actions" }, ...items)
    );
  }

  async function sendFeedback(service, card, item, article) {
    const result = article.querySelector(".feedback-result");
    result.textContent = "sending feedback…";
    const feedback = { card: card.uuid, outcomeTimestamp: new Date().toISOString(), ...item };
    const { status, payload } = await postJson(
      urls.servicesUrl + "/" + encodeURIComponent(service) + "/feedback",
      { feedback: [feedback] }
    );
    if (status === 200) {
      result.textContent =
        "Feedback (" + item.outcome + ") sent: received " + payload.received + ", stored " + payload.stored + ".";
      result.className = "feedback-result ok";
      article.classList.add("answered");
      article.querySelectorAll("button, select").forEach((b) => (b.disabled = true));
    } else {
      result.textContent = "Feedback failed: HTTP " + status + " " + (payload.error || "");
      result.className = "feedback-result error";
    }
  }

  function renderCard(service, card, detailHtml) {
    const indicator = ["info", "warning", "critical"].includes(card.indicator) ? card.indicator : "info";
    const source = card.source || {};
    const topic = (source.topic || {}).code || "";
    const article = el("article", {
      class: "card card-" + indicator,
      "data-uuid": String(card.uuid || ""),
      "data-topic": String(topic),
      "data-indicator": indicator,
    });
    const detail = el("div", { class: "detail" });
    detail.innerHTML = detailHtml; // rendered by the server from markdown, raw HTML disabled
    const href = source.url ? safeUrl(source.url) : null;
    const sourceLine = el(
      "p",
      { class: "source" },
      "Source: ",
      href
        ? el("a", { href: href, target: "_blank", rel: "noopener noreferrer" }, source.label || href)
        : source.label || "",
      topic ? el("span", { class: "topic" }, " · topic " + topic) : null
    );
    const links = (card.links || []).map((link) => {
      const url = safeUrl(link.url || "");
      const label = (link.label || link.url || "") + (link.type === "smart" ? " (SMART app)" : "");
      return url
        ? el("a", { class: "link", href: url, target: "_blank", rel: "noopener noreferrer" }, label)
        : el("span", { class: "link" }, label + " (link not shown: not an http(s) URL)");
    });
    const linkBox = links.length ? el("p", { class: "links" }, "Links: ", ...links) : null;
    const applied = el("div", { class: "applied" });
    const suggestions = el("div", { class: "suggestions" });
    for (const suggestion of card.suggestions || []) {
      const button = el(
        "button",
        {
          type: "button",
          class: "accept" + (suggestion.isRecommended ? " recommended" : ""),
          "data-suggestion": String(suggestion.uuid || ""),
        },
        suggestion.label
      );
      button.addEventListener("click", () => {
        button.classList.add("chosen");
        showActions(card, suggestion, applied);
        if (suggestion.uuid) {
          sendFeedback(service, card, { outcome: "accepted", acceptedSuggestions: [{ id: suggestion.uuid }] }, article);
        }
      });
      suggestions.append(button);
    }
    let override = null;
    const reasons = card.overrideReasons || [];
    if (card.uuid) {
      // No reason is chosen until the user picks one: a dismissal without a reason sends none
      // (defaulting to the first would skew the override figures).
      const select = el(
        "select",
        { class: "override-reason", "aria-label": "override reason" },
        el("option", { value: "" }, "reason (optional)…"),
        ...reasons.map((r, i) => el("option", { value: String(i) }, r.display || r.code))
      );
      const dismiss = el("button", { type: "button", class: "dismiss" }, "Dismiss");
      dismiss.addEventListener("click", () => {
        const item = { outcome: "overridden" };
        if (reasons.length && select.value !== "") {
          item.overrideReason = { reason: reasons[Number(select.value)] };
        }
        sendFeedback(service, card, item, article);
      });
      override = el("div", { class: "override" }, reasons.length ? select : null, dismiss);
    }
    const parts = [
      el(
        "header",
        {},
        el("span", { class: "badge" }, indicator.toUpperCase()),
        el("h3", { class: "summary" }, card.summary || "")
      ),
      detail,
      sourceLine,
      linkBox,
      suggestions,
      override,
      applied,
      el("p", { class: "feedback-result", role: "status" }),
    ];
    article.append(...parts.filter((part) => part !== null)); // optional parts may be absent
    return article;
  }

  async function run(event) {
    if (event) event.preventDefault();
    const service = $("service").value;
    const params = new URLSearchParams({
      patient: $("patient").value,
      service: service,
      draft: $("draft").value,
    });
    clearCards();
    const mine = generation;
    const stale = () => mine !== generation;
    setStatus("calling " + service + "…", "busy");
    const built = await fetch(urls.requestUrl + "?" + params.toString());
    const request = await built.json();
    if (stale()) return;
    if (!built.ok) {
      setStatus("could not build the request: " + (request.error || built.status), "error");
      return;
    }
    $("request-json").textContent = JSON.stringify(request, null, 2);
    const started = performance.now();
    const { status, payload } = await postJson(urls.servicesUrl + "/" + encodeURIComponent(service), request);
    const ms = Math.round(performance.now() - started);
    if (stale()) return;
    $("response-json").textContent = JSON.stringify(payload, null, 2);
    if (status !== 200) {
      setStatus("HTTP " + status + ": " + (payload.error || "") + " " + (payload.details || []).join("; "), "error");
      return;
    }
    const cards = payload.cards || [];
    const rendered = await postJson(urls.markdownUrl, { texts: cards.map((c) => c.detail || "") });
    const html = rendered.status === 200 ? rendered.payload.html : cards.map(() => "");
    if (stale()) return;
    $("cards").replaceChildren(...cards.map((card, i) => renderCard(service, card, html[i])));
    if (!cards.length) $("cards").append(el("p", { class: "no-cards" }, "No cards: nothing to say for this patient and hook."));
    setStatus(cards.length + " card(s) in " + ms + " ms", "done");
  }

  $("patient").addEventListener("change", showPatient);
  $("service").addEventListener("change", clearCards);
  $("draft").addEventListener("change", clearCards);
  const start = (event) =>
    run(event).catch((error) => setStatus("the call failed: " + error.message, "error"));
  $("chooser").addEventListener("submit", start);
  const wanted = new URLSearchParams(window.location.search);
  const unknown = [];
  for (const key of ["patient", "service", "draft"]) {
    const value = wanted.get(key);
    if (value === null) continue;
    if ([...$(key).options].some((o) => o.value === value)) $(key).value = value;
    else unknown.push("no " + key + " " + JSON.stringify(value));
  }
  showPatient();
  if (unknown.length) {
    // Say so rather than silently show another patient's record and cards.
    if (unknown[0].startsWith("no patient")) {
      $("patient-name").textContent = "Unknown patient " + JSON.stringify(wanted.get("patient"));
      $("patient-about").textContent = "No fixture patient of that name: choose one above.";
      $("patient-record").replaceChildren();
      $("patient-drafts").textContent = "";
    }
    setStatus(unknown.join("; ") + " in this preview: choose one above", "error");
  } else if (wanted.has("patient")) {
    start(); // a link such as /preview?patient=X&service=Y shows the cards
  }
})();
