// hybridroute dashboard charts: small SVG line charts drawn from the admin API's time series.
// No third-party code: a chart is an <svg> with a grid, axes, one path per series and a legend.
"use strict";

(function () {
  const NS = "http://www.w3.org/2000/svg";
  const WIDTH = 640;
  const HEIGHT = 220;
  const PAD = { left: 60, right: 12, top: 12, bottom: 28 };
  const PALETTE = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#db2777"];

  function svg(tag, attrs) {
    const node = document.createElementNS(NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    return node;
  }

  function niceMax(value) {
    if (!(value > 0)) return 1;
    const power = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 2.5, 5, 10]) {
      if (value <= step * power) return step * power;
    }
    return 10 * power;
  }

  function clock(seconds) {
    const d = new Date(seconds * 1000);
    return d.toISOString().slice(11, 19);
  }

  // Tick labels: at most three significant digits (0.25, 2.5, 150, 0.00188).
  function tickFormat(value) {
    return value === 0 ? "0" : String(Number(value.toPrecision(3)));
  }

  // Draw `series` ([{name, points: [[x, y|null], ...]}]) into `container` (replacing what is
  // there). Options: label (the chart's accessible name).
  function line(container, series, options) {
    const opts = options || {};
    const xs = [];
    let top = 0;
    let values = 0;
    for (const s of series) {
      for (const [x, y] of s.points) {
        xs.push(x);
        if (y !== null && y !== undefined) {
          values += 1;
          if (y > top) top = y;
        }
      }
    }
    const yMax = niceMax(top);
    const format = tickFormat;
    const xMin = xs.length ? Math.min(...xs) : 0;
    const xMax = xs.length ? Math.max(...xs) : 1;
    const xSpan = xMax - xMin || 1;
    const plotW = WIDTH - PAD.left - PAD.right;
    const plotH = HEIGHT - PAD.top - PAD.bottom;
    const px = (x) => PAD.left + ((x - xMin) / xSpan) * plotW;
    const py = (y) => PAD.top + plotH - (y / yMax) * plotH;

    const root = svg("svg", {
      viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
      role: "img",
      "aria-label": opts.label || "chart",
      class: "chart-svg",
    });
    for (let i = 0; i <= 4; i++) {
      const value = (yMax * i) / 4;
      const y = py(value);
      root.appendChild(svg("line", { x1: PAD.left, x2: WIDTH - PAD.right, y1: y, y2: y, class: "grid" }));
      const text = svg("text", { x: PAD.left - 6, y: y + 4, class: "tick", "text-anchor": "end" });
      text.textContent = format(value);
      root.appendChild(text);
    }
    if (xs.length) {
      for (let i = 0; i <= 3; i++) {
        const x = xMin + (xSpan * i) / 3;
        const text = svg("text", {
          x: px(x),
          y: HEIGHT - 8,
          class: "tick",
          "text-anchor": i === 0 ? "start" : i === 3 ? "end" : "middle",
        });
        text.textContent = clock(x);
        root.appendChild(text);
      }
    }
    series.forEach((s, index) => {
      let d = "";
      let drawing = false;
      for (const [x, y] of s.points) {
        if (y === null || y === undefined) {
          drawing = false;
          continue;
        }
        d += `${drawing ? "L" : "M"}${px(x).toFixed(1)},${py(y).toFixed(1)}`;
        drawing = true;
      }
      const color = PALETTE[index % PALETTE.length];
      const path = svg("path", { d: d || "M0,0", stroke: color, class: "series" });
      path.setAttribute("data-series", s.name);
      root.appendChild(path);
      for (const [x, y] of s.points) {  // a dot per value: a lone value shows too
        if (y === null || y === undefined) continue;
        root.appendChild(svg("circle", { cx: px(x).toFixed(1), cy: py(y).toFixed(1), r: 2.2, fill: color }));
      }
    });
    if (!values) {
      const empty = svg("text", { x: WIDTH / 2, y: HEIGHT / 2, class: "empty", "text-anchor": "middle" });
      empty.textContent = xs.length ? "no traffic in this window yet" : "no data";
      root.appendChild(empty);
    }

    const legend = document.createElement("ul");
    legend.className = "legend";
    series.forEach((s, index) => {
      const item = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = PALETTE[index % PALETTE.length];
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(s.name));
      legend.appendChild(item);
    });
    container.replaceChildren(root, legend);
  }

  window.HRCharts = { line: line, palette: PALETTE };
})();
