import { lineChart } from "../charts";
import { h, replace, table } from "../dom";
import { formatBytes, formatCpu, formatTime, formatUnits, share, shortAddress } from "../format";
import type { Page } from "../app";
import type { Provider } from "../types";

const HISTORY_SECS = 7 * 24 * 3600;

function gpuCells(provider: Provider): string {
  if (provider.gpus.length === 0) return "—";
  return provider.gpus.map((gpu) => `${gpu.name ?? gpu.model_key} ${gpu.total - gpu.allocated}/${gpu.total}`).join(", ");
}

function capacityCell(provider: Provider): HTMLElement {
  const free = (used: string, total: string) => `${Math.round((1 - share(used, total)) * 100)}%`;
  return h(
    "span",
    { class: "capacity" },
    `CPU ${formatCpu(provider.allocated.cpu_millis)} / ${formatCpu(provider.capacity.cpu_millis)} (${free(provider.allocated.cpu_millis, provider.capacity.cpu_millis)} free)`,
    h("br"),
    `mem ${formatBytes(provider.allocated.memory_bytes)} / ${formatBytes(provider.capacity.memory_bytes)}`,
    h("br"),
    `disk ${formatBytes(provider.allocated.storage_bytes)} / ${formatBytes(provider.capacity.storage_bytes)}`,
  );
}

export const marketPage: Page = async (app, root) => {
  const { decimals, symbol } = app.status.token;
  const since = Math.floor(Date.now() / 1000) - HISTORY_SECS;
  const [providers, leases, prices, capacity] = await Promise.all([
    app.api.providers(),
    app.api.leases({ limit: 20 }),
    app.api.prices(since),
    app.api.capacityHistory(since),
  ]);
  const providerTable = table(
    ["Provider", "Status", "GPUs (free/total)", "Capacity (allocated / total)", "Attributes", "Stake", "Deliveries ✓/✗", "Leases"],
    providers.items.map((p) => [
      h("span", { title: p.address, class: "mono" }, shortAddress(p.address)),
      p.status,
      gpuCells(p),
      capacityCell(p),
      p.attributes.map((a) => a.name ?? a.key).join(", ") || "—",
      formatUnits(p.stake, decimals, symbol),
      `${p.deliveries_confirmed}/${p.deliveries_failed}`,
      p.active_leases,
    ]),
    "No provider has registered yet.",
  );
  providerTable.id = "providers";
  const leaseTable = table(
    ["Lease", "Provider", "Tenant", "Price/h", "State", "Created"],
    leases.items.map((l) => [l.id, shortAddress(l.provider), shortAddress(l.tenant), formatUnits(l.price_per_hour, decimals, symbol), l.state, formatTime(l.created_at)]),
    "No lease yet.",
  );
  // Capacity use: the market's CPU share allocated over time, summed over providers.
  const latest = new Map<string, { capacity: bigint; allocated: bigint }>();
  const cpuUse = capacity.items
    .slice()
    .sort((a, b) => a.block - b.block)
    .map((point) => {
      latest.set(point.provider, { capacity: BigInt(point.capacity.cpu_millis), allocated: BigInt(point.allocated.cpu_millis) });
      let total = 0n;
      let used = 0n;
      for (const value of latest.values()) {
        total += value.capacity;
        used += value.allocated;
      }
      return { x: point.at, y: total === 0n ? 0 : Number((used * 1000n) / total) / 10 };
    });
  const scale = 10 ** decimals;
  const priceSeries = new Map<string, { x: number; y: number }[]>();
  for (const point of prices.items) {
    const key = point.gpu_model ?? "CPU only";
    const series = priceSeries.get(key) ?? [];
    series.push({ x: point.at, y: Number(BigInt(point.price_per_hour)) / scale });
    priceSeries.set(key, series);
  }
  const live = h("ul", { class: "live", id: "live-events" });
  app.onEvent((event) => {
    live.prepend(h("li", {}, `block ${event.block}: ${event.kind}`));
    while (live.children.length > 20) live.lastElementChild?.remove();
    if (["ProviderRegistered", "ProviderUpdated", "LeaseCreated", "LeaseClosed"].includes(event.kind)) {
      // The tables are the indexer's view: render again rather than patch rows by hand.
      app.refresh();
    }
  });
  replace(
    root,
    h("h2", {}, "Providers"),
    providerTable,
    h(
      "div",
      { class: "charts" },
      lineChart("CPU allocated (% of market)", [{ label: "CPU use", points: cpuUse, className: "s0" }], (y) => `${y.toFixed(0)}%`),
      lineChart(
        `Accepted prices (${symbol}/h)`,
        [...priceSeries.entries()].map(([label, points], index) => ({ label, points, className: `s${index % 4}` })),
        (y) => y.toFixed(4),
      ),
    ),
    h("h2", {}, "Recent leases"),
    leaseTable,
    h("h2", {}, "Live events"),
    live,
  );
};
