// Line charts as inline SVG: enough to see capacity use and prices move over time.
const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 560;
const HEIGHT = 180;
const PAD = 32;

export interface Series {
  label: string;
  points: { x: number; y: number }[];
  className: string;
}

function el(tag: string, attrs: Record<string, string | number>): SVGElement {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

export function lineChart(title: string, series: Series[], formatY: (y: number) => string): Element {
  const svg = el("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, class: "chart", role: "img", "aria-label": title });
  const all = series.flatMap((s) => s.points);
  if (all.length === 0) {
    const text = el("text", { x: WIDTH / 2, y: HEIGHT / 2, "text-anchor": "middle", class: "chart-empty" });
    text.textContent = `${title}: no data yet`;
    svg.appendChild(text);
    return svg;
  }
  const minX = Math.min(...all.map((p) => p.x));
  const maxX = Math.max(...all.map((p) => p.x));
  const maxY = Math.max(...all.map((p) => p.y), 0) || 1;
  const sx = (x: number) => PAD + ((x - minX) / (maxX - minX || 1)) * (WIDTH - 2 * PAD);
  const sy = (y: number) => HEIGHT - PAD - (y / maxY) * (HEIGHT - 2 * PAD);
  svg.appendChild(el("line", { x1: PAD, y1: HEIGHT - PAD, x2: WIDTH - PAD, y2: HEIGHT - PAD, class: "axis" }));
  svg.appendChild(el("line", { x1: PAD, y1: PAD, x2: PAD, y2: HEIGHT - PAD, class: "axis" }));
  const top = el("text", { x: PAD + 4, y: PAD - 6, class: "chart-label" });
  top.textContent = `${title} (max ${formatY(maxY)})`;
  svg.appendChild(top);
  series.forEach((s, index) => {
    const sorted = [...s.points].sort((a, b) => a.x - b.x);
    const d = sorted.map((p, i) => `${i === 0 ? "M" : "L"}${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join(" ");
    svg.appendChild(el("path", { d, class: `series ${s.className}` }));
    for (const p of sorted) svg.appendChild(el("circle", { cx: sx(p.x), cy: sy(p.y), r: 2.5, class: `series ${s.className}` }));
    const legend = el("text", { x: WIDTH - PAD, y: PAD - 6 + index * 14, "text-anchor": "end", class: `legend ${s.className}` });
    legend.textContent = s.label;
    svg.appendChild(legend);
  });
  return svg;
}
