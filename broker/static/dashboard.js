// Event Grid emulator dashboard: live events over server-sent events, no framework, no build step.
// Every piece of event or subscription data reaches the page through textContent (see `el`),
// never as markup, and the page's Content-Security-Policy forbids inline scripts besides.
"use strict";

(() => {
  const API = {
    topics: "/dashboard/api/topics",
    events: "/dashboard/api/events",
    deadLetters: "/dashboard/api/deadletters",
    stream: "/dashboard/stream",
  };
  const PAGE_SIZE = 50;
  const MAX_EVENTS = 500; // rows kept in the page; older ones stay reachable with "Load older"
  const POLL_MS = 10000; // subscriptions created through the API do not appear on the stream
  const STREAM_RETRY_MS = 10000;

  const state = {
    events: new Map(), // seq -> {seq, topic, id, type, subject, time, receivedAt, deliveries: [...]}
    rows: new Map(), // seq -> <tr>
    topics: [],
    before: undefined, // cursor for older events; null when the oldest stored event is loaded
    openSeq: null,
    detailOpen: new Map(), // <details> key -> open, kept across detail refreshes
    filter: { type: "", subject: "", status: "" },
    everConnected: false,
    streamLive: false,
    fetching: new Set(),
    renderedTopics: "",
    renderedDead: "",
  };

  const $ = (id) => document.getElementById(id);

  // -- DOM helpers ----------------------------------------------------------------------------

  // Build an element; strings become text nodes, so data can never be parsed as HTML.
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    if (props) {
      for (const [key, value] of Object.entries(props)) {
        if (value === null || value === undefined || value === false) continue;
        if (key === "class") node.className = value;
        else if (key === "text") node.textContent = value;
        else if (key === "dataset") Object.assign(node.dataset, value);
        else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
        else node.setAttribute(key, value === true ? "" : String(value));
      }
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  const pad = (n, width = 2) => String(n).padStart(width, "0");

  function clock(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const d = new Date(seconds * 1000);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  }

  function fullDate(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    return new Date(seconds * 1000).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
  }

  function latency(value) {
    if (value === null || value === undefined) return "–";
    return value < 10 ? `${value.toFixed(1)} ms` : `${Math.round(value)} ms`;
  }

  function fromNow(seconds) {
    const delta = seconds - Date.now() / 1000;
    if (delta <= 0) return "due now";
    if (delta < 1) return `in ${Math.round(delta * 1000)} ms`;
    if (delta < 90) return `in ${delta.toFixed(1)} s`;
    if (delta < 5400) return `in ${Math.round(delta / 60)} min`;
    return `in ${(delta / 3600).toFixed(1)} h`;
  }

  // Long dotted or slashed names (Contoso.Orders.OrderPlaced, orders/1001/items) may wrap after a
  // separator instead of mid-word: <wbr> elements between text nodes, no markup parsing involved.
  function breakable(text) {
    if (text === null || text === undefined) return [];
    return String(text).split(/(?<=[./])/).flatMap((part, i) => (i ? [el("wbr"), part] : [part]));
  }

  const sameName = (a, b) => String(a).toLowerCase() === String(b).toLowerCase();
  const isSuccess = (code) => code !== null && code !== undefined && code >= 200 && code <= 204;

  let toastTimer = null;
  function toast(message, isError = false) {
    const box = $("toast");
    box.textContent = message;
    box.classList.toggle("error", isError);
    box.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { box.hidden = true; }, 4000);
  }

  async function errorMessage(resp) {
    try {
      const body = await resp.json();
      if (body && body.error) return `${resp.status} ${body.error.code}: ${body.error.message}`;
    } catch (_) { /* not JSON */ }
    return `HTTP ${resp.status}`;
  }

  async function getJSON(url) {
    const resp = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
    if (!resp.ok) throw new Error(await errorMessage(resp));
    return resp.json();
  }

  // -- delivery status ------------------------------------------------------------------------

  const STATUS = {
    pending: ["Pending", "info"],
    inflight: ["Sending", "info"],
    delivered: ["Delivered", "ok"],
    deadlettered: ["Dead-lettered", "bad"],
    dropped: ["Dropped", "bad"],
  };

  const isOpen = (d) => d.status === "pending" || d.status === "inflight";

  function statusBadge(d) {
    let [label, tone] = STATUS[d.status] || [d.status, ""];
    if (d.status === "pending" && d.attemptCount > 0) [label, tone] = ["Retrying", "warn"];
    return el("span", { class: `badge ${tone}`, title: d.deadLetterReason || null }, label);
  }

  function timeline(d) {
    if (!d.attempts || !d.attempts.length) return null;
    return el("ol", { class: "timeline", "aria-label": `Attempts to ${d.subscription}` },
      d.attempts.map((a) => el("li", {
        class: isSuccess(a.statusCode) ? "ok" : "bad",
        title: `Attempt ${a.attempt} at ${clock(a.at)}: ${a.outcome}${a.error ? ` (${a.error})` : ""}`,
      }, `#${a.attempt} ${a.statusCode ?? "no answer"} · ${latency(a.latencyMs)}`)));
  }

  function nextRetry(d) {
    if (!isOpen(d) || !d.attemptCount || !d.nextAttemptAt) return null;
    return el("span", { class: "next-retry", dataset: { next: String(d.nextAttemptAt) } },
      `next retry ${clock(d.nextAttemptAt)} (${fromNow(d.nextAttemptAt)})`);
  }

  // -- events table ---------------------------------------------------------------------------

  function deliveriesCell(ev) {
    if (!ev.deliveries.length) return el("span", { class: "delivery none" }, "No matching subscription");
    return el("ul", { class: "deliveries" }, ev.deliveries.map((d) =>
      el("li", { class: "delivery", dataset: { subscription: d.subscription, status: d.status } },
        el("span", { class: "sub-label" }, d.subscription),
        statusBadge(d),
        timeline(d),
        nextRetry(d),
        d.status === "deadlettered" || d.status === "dropped"
          ? el("span", { class: "muted" }, d.deadLetterReason || "") : null)));
  }

  function renderRow(ev, fresh = false) {
    let tr = state.rows.get(ev.seq);
    if (!tr) {
      tr = el("tr", { class: "event-row", tabindex: "0", dataset: { seq: String(ev.seq) } });
      tr.addEventListener("click", () => openDetail(ev.seq));
      tr.addEventListener("keydown", (e) => onRowKey(e, tr, ev.seq));
      insertRow(tr, ev.seq);
      state.rows.set(ev.seq, tr);
      if (fresh) tr.classList.add("fresh");
    }
    tr.replaceChildren(
      el("td", { class: "event-time", title: fullDate(ev.receivedAt) }, clock(ev.receivedAt)),
      el("td", { class: "event-topic" }, ev.topic),
      el("td", { class: "event-type" }, ev.type === null || ev.type === undefined ? "…" : breakable(ev.type)),
      el("td", { class: "event-subject" }, breakable(ev.subject)),
      el("td", null, deliveriesCell(ev)),
    );
    tr.setAttribute("aria-label", `${ev.type ?? "event"} ${ev.subject ?? ""}, received ${clock(ev.receivedAt)}`);
    tr.classList.toggle("selected", state.openSeq === ev.seq);
    tr.hidden = !matches(ev);
  }

  // Newest first: a row goes before the first row with a smaller sequence number.
  function insertRow(tr, seq) {
    const body = $("event-rows");
    for (const row of body.rows) {
      if (Number(row.dataset.seq) < seq) { body.insertBefore(tr, row); return; }
    }
    body.append(tr);
  }

  function onRowKey(e, tr, seq) {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      openDetail(seq);
    } else if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      let next = e.key === "ArrowDown" ? tr.nextElementSibling : tr.previousElementSibling;
      while (next && next.hidden) next = e.key === "ArrowDown" ? next.nextElementSibling : next.previousElementSibling;
      if (next) next.focus();
    }
  }

  function matches(ev) {
    const f = state.filter;
    if (f.type && !String(ev.type ?? "").toLowerCase().includes(f.type)) return false;
    if (f.subject && !String(ev.subject ?? "").toLowerCase().includes(f.subject)) return false;
    switch (f.status) {
      case "": return true;
      case "unrouted": return ev.deliveries.length === 0;
      case "pending": return ev.deliveries.some(isOpen);
      case "retrying": return ev.deliveries.some((d) => isOpen(d) && d.attemptCount > 0);
      default: return ev.deliveries.some((d) => d.status === f.status);
    }
  }

  function applyFilter() {
    for (const [seq, tr] of state.rows) tr.hidden = !matches(state.events.get(seq));
    updateEventCount();
  }

  function updateEventCount() {
    const total = state.events.size;
    const shown = [...state.rows.values()].filter((tr) => !tr.hidden).length;
    $("events-empty").hidden = total > 0;
    $("events-count").textContent = total === 0 ? ""
      : shown === total ? `${total} event${total === 1 ? "" : "s"} loaded`
      : `Showing ${shown} of ${total} loaded events`;
    $("load-older").hidden = !state.before;
  }

  function trim() {
    if (state.events.size <= MAX_EVENTS) return;
    const seqs = [...state.events.keys()].sort((a, b) => a - b);
    for (const seq of seqs.slice(0, state.events.size - MAX_EVENTS)) {
      if (seq === state.openSeq) continue;
      state.events.delete(seq);
      state.rows.get(seq)?.remove();
      state.rows.delete(seq);
    }
    state.before = Math.min(...state.events.keys());
  }

  // A snapshot (list or detail fetch) replaces what the page knows about a delivery, unless the
  // stream updated that delivery after the request started: then the stream is newer.
  function mergeSnapshot(snap, startedAt) {
    const ev = state.events.get(snap.seq);
    if (!ev) {
      const fresh = { ...snap, deliveries: snap.deliveries.map((d) => ({ ...d })) };
      state.events.set(snap.seq, fresh);
      renderRow(fresh);
      return;
    }
    const merged = snap.deliveries.map((sd) => {
      const cur = ev.deliveries.find((d) => d.id === sd.id || (d.id === null && sameName(d.subscription, sd.subscription)));
      return cur && cur.touched > startedAt ? { ...cur, id: sd.id } : { ...sd };
    });
    Object.assign(ev, {
      topic: snap.topic, id: snap.id, type: snap.type, subject: snap.subject, time: snap.time,
      receivedAt: snap.receivedAt, deliveries: merged,
    });
    renderRow(ev);
  }

  async function loadEvents({ older = false } = {}) {
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (older && state.before) params.set("before", String(state.before));
    const startedAt = performance.now();
    const page = await getJSON(`${API.events}?${params}`);
    for (const snap of page.events) mergeSnapshot(snap, startedAt);
    // The first page sets the cursor; a reload of the newest page must not move it.
    if (older || state.before === undefined) state.before = page.before;
    updateEventCount();
  }

  async function fetchEvent(seq) {
    if (state.fetching.has(seq)) return;
    state.fetching.add(seq);
    const startedAt = performance.now();
    try {
      mergeSnapshot(await getJSON(`${API.events}/${seq}`), startedAt);
      updateEventCount();
    } catch (_) { /* pruned meanwhile: nothing to show */ } finally {
      state.fetching.delete(seq);
    }
  }

  // -- the live stream ------------------------------------------------------------------------

  function setConnection(kind, text) {
    const box = $("connection");
    box.dataset.state = kind;
    box.textContent = text;
  }

  function connect() {
    const source = new EventSource(API.stream);
    source.addEventListener("open", () => {
      setConnection("live", "Live");
      state.streamLive = true;
      // After a reconnect the page may have missed items: catch up from the store.
      if (state.everConnected) loadEvents().catch(() => {});
      state.everConnected = true;
    });
    source.addEventListener("event", (m) => onEventItem(JSON.parse(m.data)));
    source.addEventListener("attempt", (m) => onAttemptItem(JSON.parse(m.data)));
    source.addEventListener("error", () => {
      state.streamLive = false;
      if (source.readyState === EventSource.CLOSED) {
        // Refused (e.g. too many open dashboards) or the broker is gone: try again later.
        source.close();
        setConnection("offline", "Offline, retrying");
        setTimeout(connect, STREAM_RETRY_MS);
      } else {
        setConnection("reconnecting", "Reconnecting…");
      }
    });
  }

  function placeholder(name) {
    return { id: null, subscription: name, status: "pending", attemptCount: 0, attempts: [], nextAttemptAt: null, touched: performance.now() };
  }

  function onEventItem(item) {
    const known = state.events.get(item.seq);
    if (known) {
      // An attempt raced ahead of its event: fill in what the skeleton row lacked.
      Object.assign(known, { id: item.id, type: item.type, subject: item.subject, topic: item.topic, receivedAt: item.receivedAt });
      for (const name of item.subscriptions) {
        if (!known.deliveries.some((d) => sameName(d.subscription, name))) known.deliveries.push(placeholder(name));
      }
      renderRow(known);
    } else {
      const ev = {
        seq: item.seq, topic: item.topic, id: item.id, type: item.type, subject: item.subject,
        time: item.time ?? null, receivedAt: item.receivedAt, deliveries: item.subscriptions.map(placeholder),
      };
      state.events.set(ev.seq, ev);
      renderRow(ev, true);
      trim();
    }
    updateEventCount();
    scheduleSideRefresh();
  }

  function onAttemptItem(a) {
    let ev = state.events.get(a.seq);
    if (!ev) {
      const oldest = state.events.size ? Math.min(...state.events.keys()) : 0;
      if (a.seq < oldest) { scheduleSideRefresh(); return; } // an old event, e.g. redelivered: not on screen
      ev = { seq: a.seq, topic: a.topic, id: null, type: null, subject: null, time: null, receivedAt: a.at, deliveries: [] };
      state.events.set(a.seq, ev);
      fetchEvent(a.seq);
    }
    let d = ev.deliveries.find((x) => x.id === a.delivery)
      || ev.deliveries.find((x) => x.id === null && sameName(x.subscription, a.subscription));
    if (!d) {
      d = placeholder(a.subscription);
      ev.deliveries.push(d);
    }
    // A delivery that ran out of time-to-live ends without a request: no attempt to record.
    const attempted = !(a.outcome === "TimeToLiveExceeded" && a.statusCode === null && a.latencyMs === null);
    if (attempted) {
      // Attempt numbers restart at 1 after a redelivery: drop the earlier round.
      d.attempts = (d.attempts || []).filter((x) => x.attempt < a.attempt);
      d.attempts.push({ attempt: a.attempt, at: a.at, statusCode: a.statusCode, latencyMs: a.latencyMs, outcome: a.outcome });
    }
    Object.assign(d, {
      id: a.delivery, status: a.status, attemptCount: a.attempt, lastStatus: a.statusCode ?? d.lastStatus,
      nextAttemptAt: a.status === "pending" ? a.nextAttemptAt : null, deadLetterReason: a.deadLetterReason,
      touched: performance.now(),
    });
    renderRow(ev);
    updateEventCount();
    if (state.openSeq === a.seq) scheduleDetailRefresh();
    scheduleSideRefresh();
  }

  // -- topics and subscriptions ---------------------------------------------------------------

  const VALIDATION = {
    Succeeded: ["Validated", "ok"],
    AwaitingValidation: ["Awaiting validation", "warn"],
    AwaitingManualAction: ["Awaiting manual validation", "warn"],
    Failed: ["Validation failed", "bad"],
  };

  function filterSummary(f) {
    const parts = [];
    if (f.includedEventTypes && f.includedEventTypes.length) parts.push(`types: ${f.includedEventTypes.join(", ")}`);
    if (f.subjectBeginsWith) parts.push(`subject begins “${f.subjectBeginsWith}”`);
    if (f.subjectEndsWith) parts.push(`subject ends “${f.subjectEndsWith}”`);
    if (f.advancedFilters && f.advancedFilters.length) parts.push(`${f.advancedFilters.length} advanced filter${f.advancedFilters.length > 1 ? "s" : ""}`);
    return parts.length ? parts.join(" · ") : "all events";
  }

  function countBox(label, value, tone) {
    return el("div", { class: `count ${value ? tone : ""}` }, el("b", null, value), el("span", null, label));
  }

  function subscriptionItem(s) {
    const [label, tone] = VALIDATION[s.state] || [s.state, ""];
    const queue = s.mode === "queue";
    return el("li", { class: `sub${queue ? " queue" : ""}`, dataset: { subscription: s.name } },
      el("div", { class: "sub-head" },
        el("span", { class: "sub-name" }, s.name),
        queue ? el("span", { class: "badge" }, "queue") : el("span", { class: `badge ${tone}`, title: s.stateDetail || null }, label)),
      queue
        ? el("div", { class: "sub-endpoint", title: "Received by the application (pull delivery)" }, `Pull delivery · lock ${s.lockSeconds} s`)
        : el("div", { class: "sub-endpoint", title: "Webhook endpoint" }, s.endpoint),
      el("div", { class: "sub-props" },
        el("span", { title: JSON.stringify(s.filter, null, 2) }, `Filter: ${filterSummary(s.filter)}`),
        el("span", null, `Schema: ${s.deliverySchema}`),
        el("span", null, queue ? `Max ${s.maxDeliveryAttempts} deliveries` : `Max ${s.maxDeliveryAttempts} attempts`),
        el("span", null, s.deadLetter ? "Dead-letter on" : "No dead-letter (drops)"),
        s.maxEventsPerBatch > 1 ? el("span", null, `Batches of ≤${s.maxEventsPerBatch}`) : null),
      s.state !== "Succeeded" && s.stateDetail
        ? el("p", { class: `sub-detail ${s.state === "Failed" ? "" : "waiting"}` }, s.stateDetail) : null,
      el("div", { class: "counts", "aria-label": `Deliveries to ${s.name}` },
        countBox(queue ? "acknowledged" : "delivered", s.counts.delivered, "ok"),
        countBox(queue ? "in queue" : "pending", s.counts.pending, "warn"),
        queue ? countBox("locked", s.counts.locked, "warn") : null,
        countBox("dropped", s.counts.dropped, "bad"),
        countBox("dead-lettered", s.counts.deadlettered, "bad")));
  }

  const SCHEMAS = { EventGridSchema: "Event Grid schema", CloudEventSchemaV1_0: "CloudEvents 1.0", CustomEventSchema: "custom schema", Auto: "any schema" };

  function subscriptionList(subs, empty) {
    return subs.length ? el("ul", { class: "subs" }, subs.map(subscriptionItem)) : el("p", { class: "no-subs" }, empty);
  }

  // A topic, domain or namespace card; `kind` names it ("topic", "domain", "namespace"), and the
  // topics of a domain or namespace are nested cards.
  function topicCard(t, kind = "topic") {
    const head = [el("h3", null, t.name)];
    if (kind !== "topic") head.unshift(el("span", { class: "tag kind" }, kind));
    if (t.inputSchema) head.push(el("span", { class: "tag" }, SCHEMAS[t.inputSchema] || t.inputSchema));
    if (t.anonymous !== undefined) head.push(el("span", { class: "tag" }, t.anonymous ? "anonymous" : "key required"));
    if (t.events !== undefined) head.push(el("span", { class: "topic-meta" }, `${t.events} event${t.events === 1 ? "" : "s"} stored`));
    const children = t.topics || [];
    const emptyText = kind === "domain" ? "No domain-wide subscriptions." : kind === "namespace" ? "" : "No subscriptions: events are stored but not delivered.";
    return el("article", { class: `topic ${kind}`, dataset: { topic: t.name, kind } },
      el("div", { class: "topic-head" }, ...head),
      kind === "namespace" && !t.subscriptions.length ? null : subscriptionList(t.subscriptions, emptyText),
      children.length ? el("div", { class: "child-topics" }, children.map((c) => topicCard(c, kind === "domain" ? "domain topic" : "namespace topic"))) : null);
  }

  function allSubscriptions(data) {
    const out = [];
    const walk = (t) => { out.push(...t.subscriptions); (t.topics || []).forEach(walk); };
    [...data.topics, ...(data.domains || []), ...(data.namespaces || [])].forEach(walk);
    return out;
  }

  async function refreshTopics() {
    const data = await getJSON(API.topics);
    state.topics = data.topics;
    const names = $("topic-names");
    names.replaceChildren(...data.topics.map((t) => el("option", { value: t.name })));
    const subs = allSubscriptions(data);
    let pending = 0;
    for (const s of subs) pending += s.counts.pending;
    $("total-topics").textContent = String(data.topics.length + (data.domains || []).length + (data.namespaces || []).length);
    $("total-subs").textContent = String(subs.length);
    $("total-pending").textContent = String(pending);
    const snapshot = JSON.stringify(data);
    if (snapshot === state.renderedTopics) return; // unchanged: keep the DOM (and scroll) as it is
    state.renderedTopics = snapshot;
    const cards = [
      ...data.topics.map((t) => topicCard(t)),
      ...(data.domains || []).map((d) => topicCard(d, "domain")),
      ...(data.namespaces || []).map((n) => topicCard(n, "namespace")),
    ];
    $("topics").replaceChildren(...(cards.length ? cards : [el("p", { class: "empty" }, "No topics yet.")]));
  }

  // -- dead letters ---------------------------------------------------------------------------

  // The subscription's own path (`url`, from the server): a topic's, a domain's or a domain topic's.
  function deadLetterUrl(dl) {
    return `${dl.url}/deadLetters`;
  }

  // Show the redelivered deliveries as pending at once; their attempts arrive on the stream.
  function markRedelivered(deliveryIds) {
    for (const ev of state.events.values()) {
      let changed = false;
      for (const d of ev.deliveries) {
        if (deliveryIds.has(d.id) && d.status === "deadlettered") {
          Object.assign(d, { status: "pending", attemptCount: 0, attempts: [], deadLetterReason: null, nextAttemptAt: null, touched: performance.now() });
          changed = true;
        }
      }
      if (changed) renderRow(ev);
    }
  }

  async function redeliver(button, url, subscription, ids) {
    button.disabled = true;
    try {
      const resp = await fetch(url, { method: "POST" });
      if (!resp.ok) throw new Error(await errorMessage(resp));
      const body = await resp.json();
      markRedelivered(new Set(ids));
      toast(`Redelivering ${body.redelivered} event${body.redelivered === 1 ? "" : "s"} to ${subscription}`);
    } catch (err) {
      toast(`Redeliver failed: ${err.message}`, true);
      button.disabled = false;
    }
    const hadFocus = document.activeElement === button;
    await refreshDeadLetters().catch(() => {});
    if (hadFocus && !button.isConnected) $("dead-heading").focus();
  }

  function deadGroup(key, items) {
    const { topic, subscription } = items[0];
    const base = deadLetterUrl(items[0]);
    const all = el("button", { type: "button", class: "button small", disabled: !items[0].url }, `Redeliver all (${items.length})`);
    all.addEventListener("click", () => redeliver(all, `${base}/redeliver`, subscription, items.map((i) => i.deliveryId)));
    return el("div", { class: "dead-group", dataset: { key } },
      el("div", { class: "dead-head" }, el("h3", null, `${topic} / ${subscription}`), all),
      el("table", { class: "dead-table" },
        el("thead", null, el("tr", null,
          ["Event", "Reason", "Last status", "Attempts", "Dead-lettered", ""].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", null, items.map((dl) => {
          const view = el("button", { type: "button", class: "button small", "aria-label": `View event ${dl.eventId}` }, "View");
          view.addEventListener("click", () => openDetail(dl.seq));
          const again = el("button", { type: "button", class: "button small primary", "aria-label": `Redeliver event ${dl.eventId} to ${subscription}` }, "Redeliver");
          again.addEventListener("click", () => redeliver(again, `${base}/${dl.deliveryId}/redeliver`, subscription, [dl.deliveryId]));
          return el("tr", { dataset: { delivery: String(dl.deliveryId) } },
            el("td", null, el("div", { class: "event-type" }, dl.type), el("div", { class: "event-subject muted" }, dl.subject ?? "")),
            el("td", null, el("span", { class: "badge bad" }, dl.reason ?? "–")),
            el("td", { class: "mono" }, dl.lastStatus ? `${dl.lastStatus} ${dl.lastOutcome ?? ""}` : (dl.lastOutcome ?? "–")),
            el("td", { class: "mono" }, String(dl.attempts)),
            el("td", { class: "mono", title: fullDate(dl.at) }, clock(dl.at)),
            el("td", null, el("span", { class: "form-actions" }, view, again)));
        }))));
  }

  async function refreshDeadLetters() {
    const data = await getJSON(API.deadLetters);
    $("total-dead").textContent = String(data.total);
    const count = $("dead-count");
    count.textContent = String(data.total);
    count.classList.toggle("alert", data.total > 0);
    const snapshot = JSON.stringify(data.deadLetters);
    if (snapshot === state.renderedDead) return;
    state.renderedDead = snapshot;
    const groups = new Map();
    for (const dl of data.deadLetters) {
      const key = `${dl.topic}\u0000${dl.subscription}`.toLowerCase();
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(dl);
    }
    $("dead-letters").replaceChildren(...(groups.size
      ? [...groups].map(([key, items]) => deadGroup(key, items))
      : [el("p", { class: "empty" }, "No dead letters. Events a subscriber rejects or never accepts end up here when the subscription has a dead-letter destination.")]));
  }

  // -- event detail panel ---------------------------------------------------------------------

  // `text` is the server's rendering (exact for integers beyond 2**53); `value` the fallback.
  function jsonBlock(text, value, label) {
    return el("pre", { class: "json", tabindex: "0", "aria-label": label }, text ?? JSON.stringify(value, null, 2));
  }

  function rememberedDetails(key, defaultOpen, summary, ...content) {
    const details = el("details", { dataset: { key } }, el("summary", null, summary), ...content);
    details.open = state.detailOpen.has(key) ? state.detailOpen.get(key) : defaultOpen;
    details.addEventListener("toggle", () => state.detailOpen.set(key, details.open));
    return details;
  }

  function headersTable(headers) {
    const entries = Object.entries(headers || {});
    if (!entries.length) return el("p", { class: "note" }, "No headers recorded.");
    return el("table", { class: "headers" }, el("tbody", null,
      entries.map(([name, value]) => el("tr", null, el("th", { scope: "row" }, name), el("td", null, value)))));
  }

  function deliveryCard(d) {
    const last = d.attempts.length ? d.attempts[d.attempts.length - 1] : null;
    const batch = last && last.batchSize > 1 ? last.batchSize : 0;
    return el("section", { class: "delivery-card", dataset: { subscription: d.subscription } },
      el("header", null,
        el("h3", null, d.subscription),
        statusBadge(d),
        el("span", { class: "tag" }, d.deliverySchema),
        el("span", { class: "tag" }, `${d.attemptCount} attempt${d.attemptCount === 1 ? "" : "s"}`),
        d.subscriptionDeleted ? el("span", { class: "tag" }, "subscription deleted") : null),
      el("div", { class: "inner" },
        d.deadLetterReason ? el("p", { class: "note" }, `Reason: ${d.deadLetterReason}${d.lastStatus ? ` · last HTTP status ${d.lastStatus}` : ""}`) : null,
        isOpen(d) && d.attemptCount && d.nextAttemptAt
          ? el("p", { class: "note" }, `Next retry at ${clock(d.nextAttemptAt)} (${fromNow(d.nextAttemptAt)})`) : null,
        batch ? el("p", { class: "note" }, `Sent in a batch of ${batch} events; the body below is this event's part of it.`) : null,
        d.attempts.length ? el("table", { class: "attempts" },
          el("thead", null, el("tr", null, ["#", "Time", "Status", "Latency", "Outcome", "Error"].map((h) => el("th", { scope: "col" }, h)))),
          el("tbody", null, d.attempts.map((a) => el("tr", null,
            el("td", null, String(a.attempt)), el("td", null, clock(a.at)),
            el("td", null, a.statusCode ?? "–"), el("td", null, latency(a.latencyMs)),
            el("td", null, a.outcome), el("td", null, a.error ?? "")))))
          : el("p", { class: "note" }, "Not attempted yet."),
        d.attempts.map((a, i) => rememberedDetails(`${d.id}:headers:${a.attempt}`, i === d.attempts.length - 1,
          `Request headers, attempt ${a.attempt}`, headersTable(a.headers))),
        d.body !== undefined
          ? rememberedDetails(`${d.id}:body`, true, d.attempts.length ? "Body sent" : "Body to be sent",
            d.body === null ? el("p", { class: "note" }, d.bodyError || "Cannot render") : jsonBlock(d.bodyJson, d.body, `Body sent to ${d.subscription}`))
          : null));
  }

  function renderDetail(data) {
    $("detail-heading").textContent = data.type;
    const facts = [
      ["Sequence", `#${data.seq}`], ["Event id", data.id], ["Topic", data.topic], ["Subject", data.subject ?? "–"],
      ["Event time", data.time ?? "–"], ["Received", fullDate(data.receivedAt)], ["Input schema", data.inputSchema],
    ];
    const body = $("detail-body");
    const scroll = body.scrollTop;
    body.replaceChildren(
      el("dl", { class: "facts" }, facts.map(([k, v]) => [el("dt", null, k), el("dd", null, v)])),
      el("h3", null, "Event"),
      jsonBlock(data.eventJson, data.event, "Event JSON"),
      el("h3", null, `Deliveries (${data.deliveries.length})`),
      ...(data.deliveries.length ? data.deliveries.map(deliveryCard) : [el("p", { class: "note" }, "No subscription matched this event.")]));
    body.scrollTop = scroll;
  }

  async function loadDetail(seq) {
    const startedAt = performance.now();
    try {
      const data = await getJSON(`${API.events}/${seq}`);
      if (state.openSeq !== seq) return;
      renderDetail(data);
      mergeSnapshot(data, startedAt);
    } catch (err) {
      if (state.openSeq === seq) $("detail-body").replaceChildren(el("p", { class: "note" }, err.message));
    }
  }

  function openDetail(seq) {
    const panel = $("detail");
    if (state.openSeq !== seq) {
      state.rows.get(state.openSeq)?.classList.remove("selected");
      state.openSeq = seq;
      $("detail-heading").textContent = `Event #${seq}`;
      $("detail-body").replaceChildren(el("p", { class: "note" }, "Loading…"));
    }
    state.rows.get(seq)?.classList.add("selected");
    panel.hidden = false;
    $("detail-heading").focus();
    loadDetail(seq);
  }

  function closeDetail() {
    const seq = state.openSeq;
    $("detail").hidden = true;
    state.openSeq = null;
    const row = state.rows.get(seq);
    if (row) {
      row.classList.remove("selected");
      if (!row.hidden) row.focus();
    }
  }

  // -- publishing -----------------------------------------------------------------------------

  function uuid() {
    if (crypto.randomUUID) return crypto.randomUUID(); // only in secure contexts (localhost is one)
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  function invalid(input, message) {
    input.setAttribute("aria-invalid", "true");
    input.focus();
    setResult(message, "error");
  }

  function setResult(message, kind) {
    const box = $("publish-result");
    box.textContent = message;
    box.className = `form-result ${kind}`;
  }

  async function publish(e) {
    e.preventDefault();
    const form = e.currentTarget;
    for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
    const topicInput = $("publish-topic");
    const topic = topicInput.value.trim();
    const type = $("publish-type").value.trim();
    const subject = $("publish-subject").value.trim();
    if (!/^[A-Za-z0-9-]{3,50}$/.test(topic)) return invalid(topicInput, "Topic: 3-50 letters, digits or hyphens.");
    if (!type) return invalid($("publish-type"), "Event type is required.");
    if (!subject) return invalid($("publish-subject"), "Subject is required.");
    let data = null;
    const raw = $("publish-data").value.trim();
    if (raw) {
      try { data = JSON.parse(raw); } catch (err) { return invalid($("publish-data"), `Data is not valid JSON: ${err.message}`); }
    }
    const id = uuid();
    const now = new Date().toISOString();
    const known = state.topics.find((t) => sameName(t.name, topic));
    // A CloudEvents-only topic refuses the Event Grid schema, so speak its language.
    const cloud = known && known.inputSchema === "CloudEventSchemaV1_0";
    const events = cloud
      ? [{ specversion: "1.0", id, source: "/eventgrid-emulator/dashboard", type, subject, time: now, datacontenttype: "application/json", data }]
      : [{ id, eventType: type, subject, eventTime: now, data, dataVersion: "1.0" }];
    const headers = { "Content-Type": cloud ? "application/cloudevents-batch+json; charset=utf-8" : "application/json" };
    const key = $("publish-key").value;
    if (key) headers["aeg-sas-key"] = key;
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    setResult("Publishing…", "");
    try {
      const resp = await fetch(`/topics/${encodeURIComponent(topic)}/api/events`, { method: "POST", headers, body: JSON.stringify(events) });
      if (!resp.ok) throw new Error(await errorMessage(resp));
      setResult(`Published ${type} (id ${id.slice(0, 8)}…) to ${topic}.`, "ok");
      if (!known) refreshTopics().catch(() => {});
      if (!state.streamLive) loadEvents().catch(() => {}); // no stream: show it anyway
    } catch (err) {
      setResult(`Not published: ${err.message}`, "error");
    } finally {
      button.disabled = false;
    }
  }

  // -- refresh scheduling ---------------------------------------------------------------------

  let sideTimer = null;
  function scheduleSideRefresh() {
    if (sideTimer) return;
    sideTimer = setTimeout(() => {
      sideTimer = null;
      refreshTopics().catch(() => {});
      refreshDeadLetters().catch(() => {});
    }, 750); // at most a couple of refreshes a second, however busy the stream
  }

  let detailTimer = null;
  function scheduleDetailRefresh() {
    if (detailTimer) return;
    detailTimer = setTimeout(() => {
      detailTimer = null;
      if (state.openSeq !== null) loadDetail(state.openSeq);
    }, 250);
  }

  function tick() {
    for (const node of document.querySelectorAll(".next-retry[data-next]")) {
      const at = Number(node.dataset.next);
      node.textContent = `next retry ${clock(at)} (${fromNow(at)})`;
    }
  }

  // -- start ----------------------------------------------------------------------------------

  function start() {
    $("publish-form").addEventListener("submit", publish);
    for (const id of ["publish-topic", "publish-type", "publish-subject", "publish-data"]) {
      $(id).addEventListener("input", (e) => e.target.removeAttribute("aria-invalid"));
    }
    const filters = { "filter-type": "type", "filter-subject": "subject", "filter-status": "status" };
    for (const [id, key] of Object.entries(filters)) {
      $(id).addEventListener("input", (e) => {
        state.filter[key] = e.target.value.trim().toLowerCase();
        applyFilter();
      });
    }
    $("filter-form").addEventListener("submit", (e) => e.preventDefault());
    $("load-older").addEventListener("click", () => loadEvents({ older: true }).catch((err) => toast(err.message, true)));
    $("detail-close").addEventListener("click", closeDetail);
    document.addEventListener("keydown", (e) => {
      if (e.key === "Escape" && !$("detail").hidden) closeDetail();
    });

    connect(); // first, so nothing published while the first page loads is missed
    loadEvents().catch((err) => toast(`Could not load events: ${err.message}`, true));
    refreshTopics().catch((err) => toast(`Could not load topics: ${err.message}`, true));
    refreshDeadLetters().catch(() => {});
    setInterval(() => {
      refreshTopics().catch(() => {});
      refreshDeadLetters().catch(() => {});
      if (!state.streamLive) loadEvents().catch(() => {});
    }, POLL_MS);
    setInterval(tick, 1000);
  }

  start();
})();
