// Turnout's status page: fetches /status.json every few seconds (same cookie, never cached)
// and re-renders each section in place, without reloading the page. The markup mirrors
// router/status/sections.py and chart.py, which render the first paint on the server; keep
// the two alike. Every value goes through esc() before it reaches innerHTML.
"use strict";
(function () {
  const DASH = "\u2014";
  const LIMIT_LABELS = {
    rpm: "requests / min", tpm: "tokens / min", budget_tokens: "token budget",
    budget_usd: "dollar budget", concurrency: "concurrent calls",
  };
  const CHART = { w: 160, h: 36, pad: 2 };

  const esc = (v) => String(v).replace(/[&<>"']/g, (c) => (
    { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#x27;" }[c]));
  const isNum = (v) => typeof v === "number" && isFinite(v);
  // router/status/numbers.py's fixed and attr_number: halves rounded up, no exponent.
  const fixed = (v, digits) => {
    const scale = Math.pow(10, digits);
    return (Math.floor(v * scale + 0.5) / scale).toFixed(digits);
  };
  const g = (n) => String(Number(n.toPrecision(6)));

  function clock(at) {
    return isNum(at) ? new Date(at * 1000).toISOString().slice(11, 19) : DASH;
  }
  function percent(rate) { return isNum(rate) ? fixed(rate * 100, 1) + "\u2009%" : DASH; }
  function ms(v) { return isNum(v) ? (v < 10 ? fixed(v, 1) : fixed(v, 0)) : DASH; }
  function pairMs(p) {
    if (!p || (p.p50 == null && p.p95 == null)) return DASH;
    return ms(p.p50) + " / " + ms(p.p95) + " ms";
  }
  function count(v) { return isNum(v) ? esc(v) : DASH; }
  function queue(q) {
    if (!q) return DASH;
    if (q.slots == null) return q.load != null ? "load " + count(q.load) : DASH;
    return count(q.depth) + " queued \u00b7 " + count(q.slots_in_use) + "/" + count(q.slots) +
      " slots";
  }
  function breakerBadge(b) {
    const state = String((b && b.state) || "unknown").replace(/-/g, "_");
    let text = state.replace(/_/g, "-");
    if (state === "open" && b.open_for_s != null) {
      text = "open \u00b7 " + Math.max(0, Math.round(b.open_for_s)) + " s left";
    }
    return '<span class="breaker breaker-' + esc(state) + '">' + esc(text) + "</span>";
  }
  // router/status/chart.py's latency_svg: a line per run of steps with calls, a dot for a
  // lone one, a gap for quiet ones, a red tick under the axis for a step with failures.
  function chart(history) {
    history = history || [];
    const values = history.filter((p) => isNum(p.p50_ms)).map((p) => p.p50_ms);
    const open = '<svg class="chart" viewBox="0 0 ' + CHART.w + " " + CHART.h + '" width="' +
      CHART.w + '" height="' + CHART.h + '" role="img" ';
    if (!values.length) {
      return open + 'aria-label="no calls yet"><text x="' + Math.floor(CHART.w / 2) + '" y="' +
        (Math.floor(CHART.h / 2) + 4) + '" text-anchor="middle">no calls</text></svg>';
    }
    const base = CHART.h - 5;
    const t0 = history[0].t;
    const span = Math.max(history[history.length - 1].t - t0, 1);
    const top = Math.max(...values) || 1;
    const x = (p) => fixed(CHART.pad + (p.t - t0) / span * (CHART.w - 2 * CHART.pad), 1);
    const y = (v) => fixed(base - v / top * (base - CHART.pad), 1);
    const marks = ['<line class="axis" x1="' + CHART.pad + '" y1="' + base + '" x2="' +
      (CHART.w - CHART.pad) + '" y2="' + base + '"/>'];
    const runs = [[]];
    for (const p of history) {
      if (isNum(p.p50_ms)) runs[runs.length - 1].push(p);
      else if (runs[runs.length - 1].length) runs.push([]);
    }
    for (const run of runs.filter((r) => r.length)) {
      if (run.length === 1) {
        marks.push('<circle cx="' + x(run[0]) + '" cy="' + y(run[0].p50_ms) + '" r="2"/>');
      } else {
        marks.push('<polyline points="' + run.map((p) => x(p) + "," + y(p.p50_ms)).join(" ") +
          '"/>');
      }
    }
    for (const p of history) {
      if (isNum(p.failures) && p.failures > 0) {
        marks.push('<line class="failed" x1="' + x(p) + '" y1="' + (base + 1) + '" x2="' + x(p) +
          '" y2="' + CHART.h + '"/>');
      }
    }
    const label = "p50 latency, highest " + fixed(top, 0) + " ms";
    return open + 'aria-label="' + label + '"><title>' + label + "</title>" + marks.join("") +
      "</svg>";
  }

  function deployment(d) {
    return '<tr data-deployment="' + esc(d.label) + '"><td class="label">' + esc(d.label) +
      "</td><td>" + esc(d.provider || DASH) + "</td><td>" + esc(d.kind || DASH) + "</td><td>" +
      breakerBadge(d.breaker || {}) + '</td><td class="num">' + percent(d.success_rate) +
      '</td><td class="num">' + pairMs(d.latency_ms) + '</td><td class="num">' +
      pairMs(d.ttft_ms) + '</td><td class="num">' + count(d.in_flight) +
      '</td><td class="num">' + queue(d.queue) + "</td><td>" + chart(d.history) + "</td></tr>";
  }
  function models(list, now) {
    if (!list || !list.length) return '<p class="empty">No models configured.</p>';
    return list.map((m) => '<article class="model" data-model="' + esc(m.name) + '"><h3>' +
      esc(m.name) + ' <span class="strategy">' + esc(m.strategy || "") + "</span></h3>" +
      (m.limits && m.limits.length ? limits(m.limits, now) : "") + '<table class="deployments"><thead><tr><th>Deployment</th><th>Provider</th>' +
      "<th>Kind</th><th>Breaker</th><th>Success</th><th>Latency p50 / p95</th>" +
      "<th>TTFT p50 / p95</th><th>In flight</th><th>Queue</th><th>p50, last minutes</th>" +
      "</tr></thead><tbody>" + (m.deployments || []).map(deployment).join("") +
      "</tbody></table></article>").join("");
  }

  function amount(kind, v) {
    if (kind === "budget_usd") {
      return "$" + Number(fixed(v, 2)).toLocaleString("en-US", {
        minimumFractionDigits: 2, maximumFractionDigits: 2,
      });
    }
    return Math.floor(v + 0.5).toLocaleString("en-US");
  }
  function duration(s) {
    s = Math.max(0, Math.round(s));
    if (s < 120) return s + " s";
    if (s < 7200) return Math.floor(s / 60) + " min";
    if (s < 172800) return Math.floor(s / 3600) + " h";
    return Math.floor(s / 86400) + " d";
  }
  function limit(l, now) {
    const kind = String(l.kind || "");
    let label = LIMIT_LABELS[kind] || kind;
    if (l.per) label += " / " + l.per;
    const cap = Number(l.capacity || 0);
    let bar, figures;
    if (!isNum(l.used)) {  // the store did not answer
      bar = "<meter></meter>";
      figures = "unknown of " + esc(amount(kind, cap));
    } else {
      bar = '<meter min="0" max="' + g(cap) + '" low="' + g(cap * 0.7) + '" high="' +
        g(cap * 0.9) + '" optimum="0" value="' + g(Math.min(l.used, cap)) + '"></meter>';
      figures = esc(amount(kind, l.used)) + " of " + esc(amount(kind, cap));
    }
    if (isNum(l.resets_at) && isNum(l.used) && l.used > 0) {
      figures += " \u00b7 resets in " + duration(l.resets_at - now);
    }
    return '<li class="limit" data-kind="' + esc(kind) + '"><span class="what">' + esc(label) +
      "</span>" + bar + '<span class="figures">' + figures + "</span></li>";
  }
  function limits(items, now) {
    if (!items || !items.length) return '<p class="empty">no limits</p>';
    return '<ul class="limits">' + items.map((l) => limit(l, now)).join("") + "</ul>";
  }
  function teams(list, keys, now) {
    list = list || [];
    keys = keys || [];
    if (!list.length && !keys.length) return '<p class="empty">No teams or keys configured.</p>';
    const outside = keys.length ? [{ name: "keys outside teams", limits: null, keys: keys }] : [];
    return list.concat(outside).map((t) => {
      const ks = (t.keys || []).map((k) => '<li class="key"><h4>' +
        esc(k.name || "unnamed key") + "</h4>" + limits(k.limits, now) + "</li>").join("");
      return '<article class="team" data-team="' + esc(t.name) + '"><h3>' + esc(t.name) +
        "</h3>" + (t.limits != null ? limits(t.limits, now) : "") +
        (ks ? "<ul class=keys>" + ks + "</ul>" : "") + "</article>";
    }).join("");
  }

  function reloads(list) {
    if (!list || !list.length) return '<p class="empty">No reloads since the start.</p>';
    return '<table class="reloads"><thead><tr><th>At (UTC)</th><th>Outcome</th><th>Trigger</th><th>Reason</th>' +
      "</tr></thead><tbody>" + list.map((r) => "<tr><td>" + esc(clock(r.at)) +
      '</td><td><span class="outcome outcome-' + esc(r.outcome || "") + '">' +
      esc(r.outcome || DASH) + "</span></td><td>" + esc(r.trigger || "") + "</td><td>" +
      esc(r.reason || "") + "</td></tr>").join("") +
      "</tbody></table>";
  }
  function store(s) {
    if (!s) return '<p class="empty">' + DASH + "</p>";
    return '<p class="store"><span class="kind">' + esc(s.kind || DASH) + "</span> " +
      (s.where && s.where !== s.kind ? '<span class="where">' + esc(s.where) + "</span> " : "") +
      '<span class="health health-' + (s.healthy ? "ok" : "bad") + '">' +
      (s.healthy ? "healthy" : "unhealthy") + "</span>" +
      (s.error ? " <span class=error>" + esc(s.error) + "</span>" : "") + "</p>";
  }
  function batches(list) {
    if (!list || !list.length) return '<p class="empty">No batches in progress.</p>';
    return '<table class="batches"><thead><tr><th>Batch</th><th>Owner</th><th>Status</th><th>Progress</th>' +
      "<th>Done / failed / total</th></tr></thead><tbody>" + list.map((b) => {
        const total = Number(b.total || 0);
        const max = Math.max(total, 1);
        const done = Number(b.completed || 0) + Number(b.failed || 0);
        return '<tr data-batch="' + esc(b.id) + '"><td class="label">' + esc(b.id) +
          "</td><td>" + esc(b.owner || DASH) + "</td><td>" + esc(b.status || DASH) + '</td><td><progress max="' + max +
          '" value="' + Math.min(done, max) + '"></progress></td><td class="num">' +
          esc(b.completed || 0) + " / " + esc(b.failed || 0) + " / " + total + "</td></tr>";
      }).join("") + "</tbody></table>";
  }

  // Each section's content by name, as router/status/document.py's section_html renders it.
  function sections(snap) {
    const now = Number(snap.generated_at || 0);
    return {
      models: models(snap.models, now), teams: teams(snap.teams, snap.keys, now),
      batches: batches(snap.batches), reloads: reloads(snap.reloads), store: store(snap.state_store),
    };
  }
  // The browser test compares these with the server's rendering of the same snapshot.
  window.turnoutStatus = Object.freeze({ sections: sections });

  const shown = {};  // what each section was last given, so an unchanged one is left alone
  function render(snap) {
    for (const [name, content] of Object.entries(sections(snap))) {
      const el = document.querySelector('[data-section="' + name + '"]');
      if (el && shown[name] !== content) {
        el.innerHTML = content;
        shown[name] = content;
      }
    }
    document.getElementById("generated").textContent = clock(Number(snap.generated_at || 0));
  }

  async function refresh() {
    const note = document.getElementById("refresh-state");
    try {
      const answer = await fetch("/status.json", {
        cache: "no-store", credentials: "same-origin", headers: { accept: "application/json" },
      });
      if (answer.status === 401 || answer.status === 403) {
        note.textContent = "session ended: reload to log in again";
        return false;
      }
      if (!answer.ok) throw new Error("HTTP " + answer.status);
      render(await answer.json());
      note.textContent = "";
    } catch (err) {
      note.textContent = "refresh failed (" + err.message + "), retrying";
    }
    return true;
  }

  function start() {
    const every = Number(document.body.dataset.refreshMs) || 2000;
    // A hidden tab asks nothing of the gateway; it catches up as soon as it is shown.
    const loop = async () => {
      if (document.hidden || (await refresh())) setTimeout(loop, every);
    };
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) refresh();
    });
    setTimeout(loop, every);
  }
  if (document.getElementById("generated")) start();
})();
