// profile-engine web page: live figures, search as you type and keyboard shortcuts.
// Every page works without this file; it only adds to the server-rendered HTML.
(() => {
  "use strict";

  const numberFormat = new Intl.NumberFormat("en-US");
  const fmt = (value) => (value === null || value === undefined ? "–" : numberFormat.format(value));
  const pct = (part, whole) => (whole ? Math.round((1000 * part) / whole) / 10 : 0);
  const $ = (selector, root = document) => root.querySelector(selector);
  const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));
  const setText = (element, text) => {
    if (element && element.textContent !== text) element.textContent = text;
  };

  async function getJSON(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
    return response.json();
  }

  // -- keyboard ------------------------------------------------------------------------------
  document.addEventListener("keydown", (event) => {
    const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement?.tagName || "");
    if (event.key === "/" && !typing && !event.ctrlKey && !event.metaKey) {
      const target = $("[data-live-search] input[type=search]") || $("[data-shortcut='/']");
      if (target) {
        event.preventDefault();
        target.focus();
        target.select();
      }
    }
    if (event.key === "Escape" && document.activeElement?.type === "search") {
      document.activeElement.blur();
    }
  });

  // Whole table rows open their profile; the link inside stays the keyboard path.
  document.addEventListener("click", (event) => {
    const row = event.target.closest("tr[data-href]");
    if (!row || event.target.closest("a, button, input") || window.getSelection()?.toString()) return;
    window.location.href = row.dataset.href;
  });

  $$("[data-reload]").forEach((link) =>
    link.addEventListener("click", (event) => {
      event.preventDefault();
      window.location.reload();
    }),
  );

  // -- live status: header indicator, banner, the overview's stream panel ---------------------
  const OUTAGE = "The event stream is unreachable: new events wait in Kafka and the figures shown are as of the last folded batch.";
  const FOLD_STOPPED = "The fold has stopped and needs attention; the figures shown are as of its last batch.";
  function statusView(status) {
    if (status.broker.reachable === false) return { tone: "bad", label: "Kafka unreachable", banner: `${OUTAGE} ${status.broker.error}` };
    if (status.state === "failed") return { tone: "bad", label: "Fold stopped", banner: `${FOLD_STOPPED} ${status.error}` };
    if (status.state === "waiting") return { tone: "warn", label: "Waiting", banner: status.error };
    if (status.state === "starting") return { tone: "warn", label: "Starting", banner: null };
    if (status.state === "catching_up") return { tone: "warn", label: `Catching up · lag ${fmt(status.lag)}`, banner: null };
    if (status.state === "stopped") return { tone: "bad", label: "Stopped", banner: null };
    return { tone: "good", label: "Live", banner: null };
  }

  // The same sentence as pages.restarts_text.
  function restartsText(count) {
    if (!count) return "";
    return `The fold process died and was started again ${count === 1 ? "once" : `${fmt(count)} times`} since the server started.`;
  }

  function showStatus(view) {
    const indicator = $("[data-live-status]");
    if (indicator) {
      indicator.dataset.tone = view.tone;
      setText($("[data-live-label]", indicator), view.label);
    }
    const banner = $("[data-banner]");
    if (banner) {
      banner.hidden = !view.banner;
      setText(banner, view.banner || "");
    }
  }

  function showStream(status, view) {
    const panel = $("[data-fold-status]");
    if (!panel) return;
    const state = $("[data-s=state]", panel);
    state.className = `pill ${view.tone}`;
    setText(state, view.label);
    setText($("[data-s=lag]", panel), fmt(status.lag));
    setText($("[data-s=rate]", panel), fmt(Math.round(status.fold_rate)));
    setText($("[data-s=folded]", panel), fmt(status.since_start.folded));
    setText($("[data-s=duplicates]", panel), fmt(status.since_start.duplicates));
    setText($("[data-s=dead]", panel), fmt(status.since_start.dead_lettered));
    const last = status.last_batch;
    setText(
      $("[data-s=last-batch]", panel),
      last.at ? `${fmt(last.events)} ${last.events === 1 ? "event" : "events"} · ${last.at.slice(11, 19)} UTC` : "none yet",
    );
    const restarts = $("[data-s=restarts]", panel);
    if (restarts) {
      restarts.hidden = !status.fold_restarts;
      setText(restarts, restartsText(status.fold_restarts));
    }
    const body = $("[data-s=partitions]", panel);
    const rows = status.partitions.map(
      (p) =>
        `<tr><td>${p.partition}</td><td class="right num">${fmt(p.next_offset)}</td>` +
        `<td class="right num">${fmt(p.log_end_offset)}</td><td class="right num">${fmt(p.lag)}</td></tr>`,
    );
    const html = rows.length ? rows.join("") : '<tr><td colspan="4" class="muted">No partitions known yet.</td></tr>';
    if (body.innerHTML !== html) body.innerHTML = html;
  }

  async function pollStatus() {
    try {
      const status = await getJSON("/api/status");
      const view = statusView(status);
      showStatus(view);
      showStream(status, view);
    } catch (error) {
      showStatus({ tone: "bad", label: "Disconnected", banner: "The engine does not answer; the figures shown may be out of date." });
    }
  }

  // -- overview: live counts and the channel filter -------------------------------------------
  const overview = $("[data-overview]");
  const channelLabels = { any: "on any channel", email: "on Email", sms: "on SMS", push: "on Push" };

  function showCounts(counts) {
    const channel = overview.dataset.channel;
    const reachable = channel === "any" ? counts.reachable_any : counts.channels[channel].reachable;
    const unreachable = channel === "any" ? counts.total - counts.reachable_any : counts.channels[channel].unreachable;
    setText($("[data-f=total]", overview), fmt(counts.total));
    setText($("[data-f=reachable]", overview), fmt(reachable));
    setText($("[data-f=reachable-pct]", overview), String(pct(reachable, counts.total)));
    setText($("[data-f=unreachable]", overview), fmt(unreachable));
    setText($("[data-f=mau]", overview), fmt(counts.mau));
    setText($("[data-f=channel-label]", overview), channelLabels[channel]);
    const figures = { ...counts.channels, any: { reachable: counts.reachable_any, unreachable: counts.total - counts.reachable_any } };
    $$("[data-bar]").forEach((row) => {
      const name = row.dataset.bar;
      const f = figures[name];
      row.dataset.dim = String(!(channel === "any" || channel === name || name === "any"));
      $(".bar span", row).style.width = `${pct(f.reachable, counts.total)}%`;
      setText($("[data-f=reachable]", row), fmt(f.reachable));
      setText($("[data-f=unreachable]", row), fmt(f.unreachable));
    });
  }

  // -- overview: the "Customer profiles over time" chart ---------------------------------------
  // The server draws it (the same rows as `counts --daily` and the CSV export); the script
  // only swaps the panel for another channel, range or view, and redraws it after a batch.
  let chartGeneration = 0;
  async function showChart(url) {
    const panel = $("[data-history-chart]");
    if (!panel) return;
    const target = new URL(url, window.location.href);
    target.searchParams.set("month", overview.dataset.month);
    const channel = overview.dataset.channel;
    if (channel === "any") target.searchParams.delete("channel");
    else target.searchParams.set("channel", channel);
    const page = new URL(target);
    target.searchParams.set("fragment", "chart");
    const mine = ++chartGeneration;
    panel.setAttribute("aria-busy", "true");
    try {
      const response = await fetch(target, { credentials: "same-origin" });
      const html = await response.text();
      if (mine !== chartGeneration) return;
      panel.outerHTML = html;
      history.replaceState(null, "", `${page.pathname}${page.search}`);
    } catch (error) {
      panel.removeAttribute("aria-busy"); /* the status poll reports the outage */
    }
  }

  function chartURL(changes = {}) {
    const panel = $("[data-history-chart]");
    const url = new URL("/", window.location.href);
    // The default range moves on with the newest event: redrawn after a batch, it is asked
    // for again as the default, not pinned to the days it covered when the page opened.
    const follows = panel.dataset.follows === "true" && !changes.from && !changes.to;
    if (!follows) {
      url.searchParams.set("from", changes.from || panel.dataset.from);
      url.searchParams.set("to", changes.to || panel.dataset.to);
    }
    url.searchParams.set("view", changes.view || panel.dataset.view);
    return url;
  }

  document.addEventListener("click", (event) => {
    const link = event.target.closest("[data-history-chart] a[data-chart-view], [data-history-chart] a[data-chart-preset]");
    if (!link || event.ctrlKey || event.metaKey || event.shiftKey) return;
    event.preventDefault();
    showChart(link.href);
  });
  document.addEventListener("submit", (event) => {
    const form = event.target.closest("[data-chart-range]");
    if (!form) return;
    event.preventDefault();
    const fields = new FormData(form);
    showChart(chartURL({ from: fields.get("from"), to: fields.get("to") }));
  });

  let lastCounts = null;
  let lastChartRedraw = 0;
  async function pollCounts() {
    try {
      const counts = await getJSON(`/api/counts?month=${encodeURIComponent(overview.dataset.month)}`);
      const changed = lastCounts !== null && JSON.stringify(counts) !== JSON.stringify(lastCounts);
      lastCounts = counts;
      showCounts(lastCounts);
      // A batch moved the figures (a late event may move past days too): redraw, at most
      // every few seconds, so a fast fold does not redraw the chart all the time.
      if (changed && Date.now() - lastChartRedraw > 5000) {
        lastChartRedraw = Date.now();
        showChart(chartURL());
      }
    } catch (error) {
      /* the status poll reports a server that does not answer */
    }
  }

  if (overview) {
    const monthSelect = $("[data-month-select]");
    monthSelect?.addEventListener("change", () => {
      overview.dataset.month = monthSelect.value;
      const url = new URL(window.location.href);
      url.searchParams.set("month", monthSelect.value);
      history.replaceState(null, "", url);
      pollCounts();
    });
    $$("[data-channel-filter] a").forEach((link) =>
      link.addEventListener("click", (event) => {
        event.preventDefault();
        const channel = link.dataset.channel;
        overview.dataset.channel = channel;
        $$("[data-channel-filter] a").forEach((other) => other.setAttribute("aria-pressed", String(other === link)));
        const url = new URL(window.location.href);
        if (channel === "any") url.searchParams.delete("channel");
        else url.searchParams.set("channel", channel);
        history.replaceState(null, "", url);
        if (lastCounts) showCounts(lastCounts);
        pollCounts();
        showChart(chartURL());
      }),
    );
    pollCounts();
    setInterval(pollCounts, 2000);
  }
  setInterval(pollStatus, overview ? 2000 : 5000);

  // -- profiles: search as you type -----------------------------------------------------------
  const searchForm = $("[data-live-search]");
  if (searchForm) {
    const results = $("[data-results]");
    let timer = null;
    let generation = 0;
    const refresh = async () => {
      const params = new URLSearchParams(new FormData(searchForm));
      for (const [key, value] of Array.from(params.entries())) if (!value) params.delete(key);
      const query = params.toString();
      history.replaceState(null, "", `/profiles${query ? `?${query}` : ""}`);
      params.set("fragment", "results");
      const mine = ++generation;
      try {
        const response = await fetch(`/profiles?${params}`, { credentials: "same-origin" });
        const html = await response.text();
        if (mine === generation) results.innerHTML = html;
      } catch (error) {
        /* keep the last results; the status poll reports the outage */
      }
    };
    searchForm.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(refresh, 200);
    });
    searchForm.addEventListener("submit", (event) => {
      event.preventDefault();
      refresh();
    });
    const input = $("input[type=search]", searchForm);
    input.setSelectionRange(input.value.length, input.value.length);
  }

  // -- SQL: Ctrl/Cmd+Enter runs, examples fill the editor -------------------------------------
  const sqlForm = $("[data-sql-form]");
  if (sqlForm) {
    const editor = $("textarea", sqlForm);
    editor.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        sqlForm.requestSubmit();
      }
    });
    $$("[data-example]", sqlForm).forEach((button) =>
      button.addEventListener("click", () => {
        editor.value = button.dataset.example;
        editor.focus();
      }),
    );
  }
})();
