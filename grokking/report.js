"use strict";
(() => {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const status = document.getElementById("report-status");
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const W = 900, H = 290, M = { left: 64, right: 14, top: 12, bottom: 38 };

  const el = (tag, attrs = {}, parent = null) => {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  };

  // --- number formatting ---
  const fmtValue = (v, kind) => {
    if (v === null || v === undefined || !Number.isFinite(v)) return "—";
    if (kind === "percent") return (100 * v).toFixed(2) + "%";
    if (kind === "exp") return v.toExponential(3);
    return Math.abs(v) >= 1e5 || (v !== 0 && Math.abs(v) < 1e-3) ? v.toExponential(3) : String(+v.toPrecision(5));
  };
  const fmtTick = (v) => {
    if (v === 0) return "0";
    const a = Math.abs(v);
    return a >= 1e5 || a < 1e-3 ? v.toExponential(0).replace("e+", "e") : String(+v.toPrecision(6));
  };

  // --- scales: map data values to pixels (log scales work on log10 of the value) ---
  const niceStep = (span, count) => {
    const raw = span / Math.max(count, 1), mag = Math.pow(10, Math.floor(Math.log10(raw))), n = raw / mag;
    return (n < 1.5 ? 1 : n < 3 ? 2 : n < 7 ? 5 : 10) * mag;
  };
  function makeScale(log, lo, hi, pxLo, pxHi, snap) {
    let a = log ? Math.log10(lo) : lo, b = log ? Math.log10(hi) : hi;
    if (log && snap) { a = Math.floor(a); b = Math.ceil(b); }
    if (!(b > a)) { a -= log ? 1 : (Math.abs(a) || 1) * 0.5; b += log ? 1 : (Math.abs(b) || 1) * 0.5; }
    const t = (v) => (log ? Math.log10(v) : v);
    const scale = {
      log, toPx: (v) => pxLo + ((t(v) - a) / (b - a)) * (pxHi - pxLo),
      fromPx: (px) => { const u = a + ((px - pxLo) / (pxHi - pxLo)) * (b - a); return log ? Math.pow(10, u) : u; },
      valid: (v) => v !== null && v !== undefined && Number.isFinite(v) && (!log || v > 0),
      ticks: [],
    };
    if (log) {
      // powers of ten (every other one and so on past 8 decades); 2x and 5x too when under 3 decades show
      const every = Math.max(1, Math.ceil((b - a) / 8)), few = b - a < 3;
      const inside = (v) => Math.log10(v) >= a - 1e-9 && Math.log10(v) <= b + 1e-9;
      for (let e = Math.floor(a); e <= Math.ceil(b); e++) {
        for (const m of few ? [1, 2, 5] : [1]) {
          const v = m * Math.pow(10, e);
          if (inside(v) && (m > 1 || ((e % every) + every) % every === 0)) scale.ticks.push({ v, label: fmtTick(v) });
        }
      }
    } else {
      const step = niceStep(b - a, 6);
      for (let v = Math.ceil(a / step - 1e-9) * step; v <= b + step * 1e-9; v += step) {
        const r = +v.toPrecision(12);
        scale.ticks.push({ v: r, label: fmtTick(r) });
      }
    }
    return scale;
  }

  let logX = false;

  function renderChart(container, spec) {
    for (const old of container.querySelectorAll("svg, .legend, .tooltip")) old.remove();
    const metrics = data.metrics, epochs = metrics.epoch || [];
    const xValid = (x) => Number.isFinite(x) && (!logX || x > 0);
    const points = epochs.map((x, i) => i).filter((i) => xValid(epochs[i]));
    const shown = spec.series.filter((s) => !s.hidden && Array.isArray(metrics[s.key]));
    const yLog = !!spec.yLog;
    // y extent over the shown series
    let lo = Infinity, hi = -Infinity;
    for (const s of shown) for (const i of points) {
      const v = metrics[s.key][i];
      if (v !== null && Number.isFinite(v) && (!yLog || v > 0)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    }
    if (spec.yMin !== undefined) lo = Math.min(spec.yMin, lo === Infinity ? spec.yMin : lo);
    if (spec.yMax !== undefined) hi = Math.max(spec.yMax, hi === -Infinity ? spec.yMax : hi);
    if (lo === Infinity) { lo = yLog ? 1e-3 : 0; hi = yLog ? 10 : 1; }
    else if (!yLog && spec.yMin === undefined) { const pad = 0.05 * (hi - lo); lo -= pad; hi += pad; }  // headroom
    const xs = points.map((i) => epochs[i]);
    const xLo = xs.length ? xs[0] : 0, xHi = xs.length ? xs[xs.length - 1] : 1;
    const x = makeScale(logX, xLo, xHi, M.left, W - M.right, false);
    const y = makeScale(yLog, lo, hi, H - M.bottom, M.top, true);

    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": spec.title });
    const grid = el("g", { class: "grid" }, svg), axis = el("g", { class: "axis" }, svg);
    for (const t of y.ticks) {
      const py = y.toPx(t.v);
      el("line", { x1: M.left, x2: W - M.right, y1: py, y2: py }, grid);
      el("text", { x: M.left - 6, y: py + 4, "text-anchor": "end" }, axis).textContent = t.label;
    }
    for (const t of x.ticks) {
      if (t.v < xLo - 1e-9 || t.v > xHi + 1e-9) continue;
      const px = x.toPx(t.v);
      el("line", { x1: px, x2: px, y1: M.top, y2: H - M.bottom }, grid);
      el("text", { x: px, y: H - M.bottom + 16, "text-anchor": "middle" }, axis).textContent = t.label;
    }
    el("text", { x: (M.left + W - M.right) / 2, y: H - 4, "text-anchor": "middle" }, axis).textContent =
      logX ? "epoch (log scale)" : "epoch";
    el("rect", { x: M.left, y: M.top, width: W - M.left - M.right, height: H - M.top - M.bottom,
                 fill: "none", stroke: "#c9d0d7" }, svg);

    // the 99% epochs and phase boundaries
    data.markers.forEach((m, k) => {
      if (!xValid(m.epoch) || m.epoch < xLo || m.epoch > xHi) return;
      const px = x.toPx(m.epoch);
      el("line", { x1: px, x2: px, y1: M.top, y2: H - M.bottom, stroke: m.color, "stroke-width": 1.2,
                   "stroke-dasharray": m.phase ? "2 3" : "6 4" }, svg);
      const flip = px > W - M.right - 8 * m.label.length;  // near the right edge: label on the line's left
      el("text", { x: flip ? px - 4 : px + 4, y: M.top + 14 + 14 * k, fill: m.color, "font-size": 12,
                   "text-anchor": flip ? "end" : "start" }, svg).textContent = m.label;
    });

    // the curves, with gaps where a value is missing or cannot be drawn on a log axis
    for (const s of shown) {
      let d = "", pen = false;
      for (const i of points) {
        const v = metrics[s.key][i];
        if (!y.valid(v)) { pen = false; continue; }
        d += (pen ? "L" : "M") + x.toPx(epochs[i]).toFixed(1) + " " + y.toPx(v).toFixed(1);
        pen = true;
      }
      el("path", { d, fill: "none", stroke: s.color, "stroke-width": 1.6, "stroke-linejoin": "round",
                   "data-series": s.key }, svg);
    }

    // hover: nearest evaluation to the pointer, its values in a tooltip
    const cursor = el("line", { y1: M.top, y2: H - M.bottom, stroke: "#888", "stroke-width": 1, visibility: "hidden" }, svg);
    const dots = shown.map((s) => el("circle", { r: 3.5, fill: s.color, visibility: "hidden" }, svg));
    const overlay = el("rect", { x: M.left, y: M.top, width: W - M.left - M.right, height: H - M.top - M.bottom,
                                 fill: "transparent" }, svg);
    const tooltip = document.createElement("div");
    tooltip.className = "tooltip";
    tooltip.style.display = "none";
    const nearest = (epoch) => {
      let a = 0, b = xs.length - 1;
      while (b - a > 1) { const mid = (a + b) >> 1; if (xs[mid] < epoch) a = mid; else b = mid; }
      return Math.abs(xs[a] - epoch) <= Math.abs(xs[b] - epoch) ? points[a] : points[b];
    };
    overlay.addEventListener("mousemove", (event) => {
      if (!xs.length) return;
      const box = svg.getBoundingClientRect();
      const epoch = x.fromPx(((event.clientX - box.left) / box.width) * W);
      const i = nearest(epoch), px = x.toPx(epochs[i]);
      cursor.setAttribute("x1", px); cursor.setAttribute("x2", px); cursor.setAttribute("visibility", "visible");
      const lines = [`<b>epoch ${epochs[i]}</b>`];
      shown.forEach((s, k) => {
        const v = metrics[s.key][i];
        if (y.valid(v)) {
          dots[k].setAttribute("cx", px); dots[k].setAttribute("cy", y.toPx(v)); dots[k].setAttribute("visibility", "visible");
        } else dots[k].setAttribute("visibility", "hidden");
        lines.push(`<span style="color:${s.color}">●</span> ${s.label}: ${fmtValue(v, spec.format)}`);
      });
      tooltip.innerHTML = lines.join("<br>");
      tooltip.style.display = "block";
      const host = container.getBoundingClientRect();
      let left = event.clientX - host.left + 14;
      if (left + tooltip.offsetWidth > host.width) left = event.clientX - host.left - tooltip.offsetWidth - 14;
      tooltip.style.left = left + "px";
      tooltip.style.top = (event.clientY - host.top + 10) + "px";
    });
    overlay.addEventListener("mouseleave", () => {
      tooltip.style.display = "none";
      cursor.setAttribute("visibility", "hidden");
      for (const dot of dots) dot.setAttribute("visibility", "hidden");
    });
    container.appendChild(svg);

    const legend = document.createElement("div");
    legend.className = "legend";
    for (const s of spec.series) {
      if (!Array.isArray(metrics[s.key])) continue;
      const button = document.createElement("button");
      button.type = "button";
      button.className = s.hidden ? "off" : "";
      button.innerHTML = `<span class="swatch" style="background:${s.color}"></span>${s.label}`;
      button.addEventListener("click", () => { s.hidden = !s.hidden; renderChart(container, spec); });
      legend.appendChild(button);
    }
    container.appendChild(legend);
    container.appendChild(tooltip);
  }

  function renderAll() {
    let rendered = 0;
    for (const spec of data.charts) {
      const container = document.getElementById("chart-" + spec.id);
      if (!container) continue;
      renderChart(container, spec);
      rendered++;
    }
    status.setAttribute("data-charts-rendered", String(rendered));
  }

  // --- sortable tables: click a header; #sort=COLUMN:desc in the address sorts on load ---
  function sortTable(table, th, descending) {
    const col = Array.prototype.indexOf.call(th.parentNode.children, th);
    const body = table.tBodies[0], rows = Array.from(body.rows);
    const key = (row) => { const c = row.cells[col]; return c ? (c.dataset.value ?? c.textContent).trim() : ""; };
    const numeric = rows.every((r) => key(r) === "" || Number.isFinite(Number(key(r))));
    rows.sort((a, b) => {
      const ka = key(a), kb = key(b);
      if (ka === "" || kb === "") return (ka === "") - (kb === "");  // blanks last either way
      const order = numeric ? Number(ka) - Number(kb) : ka.localeCompare(kb, undefined, { numeric: true });
      return descending ? -order : order;
    });
    for (const row of rows) body.appendChild(row);
    for (const other of th.parentNode.children) other.setAttribute("aria-sort", "none");
    th.setAttribute("aria-sort", descending ? "descending" : "ascending");
  }
  for (const table of document.querySelectorAll("table.sortable")) {
    for (const th of table.tHead.rows[0].cells) {
      if (th.classList.contains("nosort")) continue;
      const activate = () => {
        const descending = th.getAttribute("aria-sort") === "ascending";
        sortTable(table, th, descending);
        try { history.replaceState(null, "", "#sort=" + encodeURIComponent(th.dataset.column) + (descending ? ":desc" : "")); }
        catch (e) { /* some file:// contexts refuse; sorting still works */ }
      };
      th.addEventListener("click", activate);
      th.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") { event.preventDefault(); activate(); } });
    }
  }
  const wanted = /^#sort=([^:]+)(:desc)?$/.exec(location.hash);
  if (wanted) {
    const column = decodeURIComponent(wanted[1]);
    for (const table of document.querySelectorAll("table.sortable")) {
      const th = Array.from(table.tHead.rows[0].cells).find((c) => c.dataset.column === column);
      if (th) sortTable(table, th, !!wanted[2]);
    }
  }

  const logToggle = document.getElementById("log-x");
  if (logToggle) logToggle.addEventListener("change", () => { logX = logToggle.checked; renderAll(); });
  renderAll();

  const countImages = () => {
    const images = Array.from(document.images);
    status.setAttribute("data-images-loaded", String(images.filter((img) => img.complete && img.naturalWidth > 0).length));
  };
  countImages();
  window.addEventListener("load", countImages);
})();
