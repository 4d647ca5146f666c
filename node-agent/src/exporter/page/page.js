// Wattlet's page: reads api/v1/snapshot and api/v1/history from this agent every interval
// and draws them. Hand-written, no dependencies; text goes in with textContent only (cgroup
// paths and pod names are data, never markup). Every URL is relative.
"use strict";

(function () {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const ROWS = 10;
  let timer = null;

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v != null) e.setAttribute(k, v);
    }
    for (const c of children) {
      if (c != null) e.append(c);
    }
    return e;
  }

  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text != null) e.textContent = text;
    return e;
  }

  function setText(id, text) {
    $(id).textContent = text;
  }

  // Numbers as a person reads them: three significant digits or so, the unit always shown.
  function digits(x) {
    const a = Math.abs(x);
    return a >= 100 ? 0 : a >= 10 ? 1 : 2;
  }

  function watts(w) {
    return w == null ? "—" : w.toFixed(digits(w)) + " W";
  }

  function joules(j) {
    if (j == null) return "—";
    const units = [["GJ", 1e9], ["MJ", 1e6], ["kJ", 1e3]];
    for (const [unit, scale] of units) {
      if (Math.abs(j) >= scale) return (j / scale).toFixed(digits(j / scale)) + " " + unit;
    }
    return j.toFixed(digits(j)) + " J";
  }

  function wattHours(j) {
    const wh = j / 3600;
    return wh >= 1000 ? (wh / 1000).toFixed(digits(wh / 1000)) + " kWh" : wh.toFixed(digits(wh)) + " Wh";
  }

  // Small shares keep two decimals: the agent's own cost is usually well below 1%.
  function percent(share) {
    if (share == null) return "—";
    const p = share * 100;
    return p.toFixed(p < 1 ? 2 : 1) + "%";
  }

  function clock(unix) {
    return new Date(unix * 1000).toLocaleTimeString();
  }

  function duration(seconds) {
    if (seconds < 90) return Math.round(seconds) + " s";
    return Math.round(seconds / 60) + " min";
  }

  // Largest first; stopped workloads (no power) after running ones, by energy.
  function byPower(a, b) {
    const wa = a.watts == null ? -1 : a.watts;
    const wb = b.watts == null ? -1 : b.watts;
    return wb - wa || b.joules - a.joules;
  }

  async function getJSON(path) {
    const r = await fetch(path, { cache: "no-store", credentials: "same-origin" });
    if (!r.ok) {
      let why = r.status + " " + r.statusText;
      try {
        const body = await r.json();
        if (body.error) why = body.error;
      } catch (_) {
        // Not JSON: keep the status line.
      }
      throw new Error(why);
    }
    return r.json();
  }

  function showProblem(text) {
    const p = $("problem");
    p.hidden = text == null;
    p.textContent = text || "";
  }

  function header(s) {
    const n = s.node;
    setText("node-name", "· " + n.name);
    document.title = "Wattlet · " + n.name;
    const badge = $("source");
    if (n.source == null) {
      badge.textContent = "no power source";
      badge.className = "badge";
    } else if (n.estimated) {
      badge.textContent = "modelled · " + n.source + (n.model ? " (" + n.model + ")" : "");
      badge.className = "badge modelled";
      badge.title = "No power sensor: power is estimated from CPU busy time.";
    } else {
      badge.textContent = "measured · " + n.source;
      badge.className = "badge measured";
      badge.title = "Power read from the node's energy counters.";
    }
    const every = s.interval_seconds ? " · every " + duration(s.interval_seconds) : "";
    const updated = $("updated");
    updated.textContent = "updated " + clock(s.taken_at) + every;
    updated.setAttribute("data-taken-at", String(s.taken_at));
  }

  function cards(s) {
    const n = s.node;
    const zones = s.total_zones.join(" + ");
    setText("node-watts", watts(n.watts));
    setText("node-idle", watts(n.idle_watts));
    setText("node-active", watts(n.active_watts));
    setText("total-zones", zones ? "zones " + zones : "");
    setText("total-zones-2", zones || "—");
    const total = (n.idle_watts || 0) + (n.active_watts || 0);
    $("split-idle").style.width = total > 0 ? (100 * n.idle_watts / total) + "%" : "0";
    $("split-active").style.width = total > 0 ? (100 * n.active_watts / total) + "%" : "0";

    setText("node-busy", percent(n.cpu.busy_share));
    setText("node-cpus", "of " + n.cpu.cpus + " CPU" + (n.cpu.cpus === 1 ? "" : "s") +
      ", over the last interval");
    setText("node-energy", joules(n.joules));
    setText("node-energy-wh", "= " + wattHours(n.joules));

    const c = s.carbon;
    $("carbon-card").hidden = c == null;
    if (c != null) {
      const rate = c.grams_per_hour;
      setText("carbon-rate", rate == null ? "—" : rate.toFixed(digits(rate)) + " gCO₂e/h");
      setText("carbon-intensity", Math.round(c.intensity_grams_per_kwh) + " gCO₂e/kWh · " +
        c.source + (c.zone ? " · " + c.zone : "") + (c.pue !== 1 ? " · PUE " + c.pue : ""));
    }
    setText("agent-cpu", percent(s.agent.cpu_share));
    setText("agent-energy", joules(s.agent.joules));
  }

  function zonesTable(s) {
    const body = $("zones").tBodies[0];
    const rows = s.node.zones.map((z) => {
      const counted = s.total_zones.includes(z.zone);
      const name = el("td", { class: "name" }, z.zone);
      if (counted) name.append(el("span", { class: "in-total" }, "in totals"));
      const estimate = z.idle_estimate_watts == null ? "—"
        : watts(z.idle_estimate_watts) + " (" + z.idle_method + ")";
      return el("tr", {}, name,
        el("td", { class: "num power" }, watts(z.watts)),
        el("td", { class: "num" }, watts(z.active_watts)),
        el("td", { class: "num" }, watts(z.idle_watts)),
        el("td", { class: "num" }, estimate),
        el("td", { class: "num energy" }, joules(z.joules)));
    });
    body.replaceChildren(...rows);
  }

  function podName(p) {
    return p.name ? p.namespace + "/" + p.name : "pod " + p.uid;
  }

  function workloadTable(id, rows, nameOf, nodeWatts, none) {
    const table = $(id);
    table.tHead.replaceChildren(el("tr", {},
      el("th", {}, "name"), el("th", { class: "num" }, "power"),
      el("th", {}, "share of node power"), el("th", { class: "num" }, "CPU"),
      el("th", { class: "num" }, "energy since start")));
    const sorted = rows.slice().sort(byPower);
    const shown = sorted.slice(0, ROWS).map((r) => {
      const name = el("td", { class: "name", title: r.id || r.uid || r.path }, nameOf(r));
      if (!r.running) name.append(el("span", { class: "tag" }, "stopped"));
      const share = nodeWatts > 0 && r.watts != null ? Math.min(1, r.watts / nodeWatts) : 0;
      const fill = el("span");
      // Through the CSSOM: the page's Content-Security-Policy refuses style attributes.
      fill.style.width = (share * 100).toFixed(1) + "%";
      const meter = el("div", { class: "meter", title: percent(share) + " of node power" }, fill);
      return el("tr", {}, name,
        el("td", { class: "num power" }, watts(r.watts)),
        el("td", { class: "bar" }, meter),
        el("td", { class: "num cpu" }, percent(r.cpu_share)),
        el("td", { class: "num energy" }, joules(r.joules)));
    });
    if (sorted.length > ROWS) {
      shown.push(el("tr", {}, el("td", { class: "none", colspan: "5" },
        "… and " + (sorted.length - ROWS) + " more (see /metrics)")));
    }
    if (sorted.length === 0) {
      shown.push(el("tr", {}, el("td", { class: "none", colspan: "5" }, none)));
    }
    table.tBodies[0].replaceChildren(...shown);
  }

  // A round step for about `count` ticks up to `max`.
  function niceStep(max, count) {
    const raw = max / count;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 2.5, 5, 10]) {
      if (m * mag >= raw) return m * mag;
    }
    return 10 * mag;
  }

  function chart(hist) {
    const c = $("chart");
    const W = 960, H = 240, L = 56, R = 84, T = 14, B = 30;
    const pts = hist.points.filter((p) => p.active_watts != null && p.idle_watts != null);
    c.replaceChildren();
    if (pts.length < 2) {
      setText("chart-span", "minutes");
      c.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" },
        "collecting: the chart starts after a few intervals"));
      return;
    }
    const t0 = pts[0].at, t1 = pts[pts.length - 1].at;
    const span = Math.max(t1 - t0, 1);
    setText("chart-span", duration(span));
    const top = Math.max(...pts.map((p) => p.active_watts + p.idle_watts), 1);
    const step = niceStep(top * 1.1, 4);
    const ymax = Math.ceil(top * 1.1 / step) * step;
    const x = (t) => L + (t - t0) / span * (W - L - R);
    const y = (v) => T + (1 - v / ymax) * (H - T - B);
    const xy = (t, v) => x(t).toFixed(1) + "," + y(v).toFixed(1);

    for (let v = 0; v <= ymax + 1e-9; v += step) {
      c.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
      c.append(svg("text", { x: L - 8, y: y(v) + 4, "text-anchor": "end", class: "axis" },
        v.toFixed(step < 1 ? 1 : 0) + " W"));
    }
    const tstep = [5, 10, 15, 30, 60, 120, 300, 600, 900].find((s) => span / s <= 6) || 900;
    for (let ago = 0; ago <= span; ago += tstep) {
      const label = ago === 0 ? "now" : "−" + duration(ago);
      c.append(svg("text", { x: x(t1 - ago), y: H - 8, "text-anchor": "middle", class: "axis" }, label));
    }

    const idleTop = pts.map((p) => xy(p.at, p.idle_watts));
    const totalTop = pts.map((p) => xy(p.at, p.idle_watts + p.active_watts));
    const base = [xy(t1, 0), xy(t0, 0)];
    c.append(svg("polygon", { class: "idle", points: idleTop.concat(base).join(" ") }));
    c.append(svg("polygon", {
      class: "active", points: totalTop.concat(idleTop.slice().reverse()).join(" "),
    }));
    c.append(svg("polyline", { id: "total-line", class: "total", points: totalTop.join(" ") }));
    const last = pts[pts.length - 1];
    const lastTotal = last.idle_watts + last.active_watts;
    c.append(svg("circle", { cx: x(t1), cy: y(lastTotal), r: 4, class: "now" }));
    c.append(svg("text", { x: x(t1) + 8, y: y(lastTotal) + 4, class: "label" }, watts(lastTotal)));
  }

  function render(s, hist) {
    header(s);
    cards(s);
    zonesTable(s);
    const nodeWatts = s.node.watts;
    workloadTable("containers", s.containers, (c) => c.display_name, nodeWatts,
      "No containers seen on this node.");
    workloadTable("pods", s.pods, podName, nodeWatts, "No Kubernetes pods seen on this node.");
    workloadTable("cgroups", s.cgroups, (c) => c.path, nodeWatts, "None yet.");
    chart(hist);
  }

  async function refresh() {
    let every = 5;
    try {
      const [s, hist] = await Promise.all([getJSON("api/v1/snapshot"), getJSON("api/v1/history")]);
      render(s, hist);
      every = s.interval_seconds || every;
      showProblem(null);
    } catch (e) {
      showProblem("Cannot read this agent's API: " + e.message + ". Retrying.");
    }
    clearTimeout(timer);
    timer = setTimeout(refresh, Math.min(60, Math.max(1, every)) * 1000);
  }

  refresh();
})();
