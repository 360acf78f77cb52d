import { closeLease, topUp } from "../chain";
import { errorBox, h, replace, table } from "../dom";
import { formatIn, formatTime, formatUnits, parseUnits, shortAddress } from "../format";
import { GATEWAY_METHODS } from "../gatewayAuth";
import type { LeaseRequest } from "../gatewayRequests";
import { chainHistory, type HistoryRow, providerRow, type RelayedLeaseEvent } from "../history";
import { relayCall, relayStream } from "../relay";
import type { Page } from "../app";
import type { Lease } from "../types";

/// Lines the log view keeps: a followed stream runs as long as the page is open.
export const MAX_LOG_LINES = 1000;

interface RelayedLogLine {
  service: string;
  replica: number;
  stderr: boolean;
  line: string;
}

export const leasesPage: Page = async (app, root) => {
  const { decimals, symbol } = app.status.token;
  if (!app.wallet) {
    replace(root, h("h2", {}, "My leases"), h("p", { class: "empty" }, "Connect a wallet (top right) to see your leases."));
    return;
  }
  const wallet = app.wallet;
  const leases = await app.api.leases({ tenant: wallet.address, limit: 200 });
  const detail = h("div", { id: "lease-detail" });
  // The one log stream shown; a new Logs or Status click ends it.
  let logStream: AbortController | null = null;
  const stopLogs = () => {
    logStream?.abort();
    logStream = null;
  };

  /// Shows `view` under the table and feeds it a gateway stream through the relay until the
  /// stream ends, Stop is clicked, another stream starts, or a re-render removes the view.
  async function follow(
    lease: Lease,
    what: string,
    view: HTMLElement,
    request: LeaseRequest,
    onMessage: (message: unknown) => void,
  ): Promise<string> {
    stopLogs();
    const controller = new AbortController();
    logStream = controller;
    replace(detail, h("h3", {}, `Lease ${lease.id} ${what}s`), h("button", { onclick: () => controller.abort() }, "Stop"), view);
    // A quiet stream (a followed log that says nothing) would outlive its view by hours,
    // holding a relay call: a re-render that removed the view ends it within seconds.
    const watch = setInterval(() => {
      if (!view.isConnected) controller.abort();
    }, 2000);
    try {
      await relayStream(
        app.base,
        lease.provider,
        wallet.signer,
        request,
        (message) => {
          // A re-render (navigation, a lease event) replaced the view: end its stream.
          if (!view.isConnected) {
            controller.abort();
            return;
          }
          onMessage(message);
        },
        controller.signal,
      );
      return `${what} stream ended`;
    } catch (error) {
      if (controller.signal.aborted) return `${what} stream stopped`;
      throw error;
    } finally {
      clearInterval(watch);
    }
  }

  function actions(lease: Lease): HTMLElement | string {
    if (lease.state !== "active") {
      return lease.closed ? `closed ${formatTime(lease.closed.at)}: refund ${formatUnits(lease.closed.refund, decimals, symbol)}` : "closed";
    }
    const amount = h("input", { size: 8, placeholder: `amount ${symbol}`, name: `top-up-${lease.id}` }) as HTMLInputElement;
    const note = h("span", { class: "step" });
    const run = (label: string, action: () => Promise<string>) => async () => {
      replace(note, `${label}…`);
      try {
        replace(note, await action());
      } catch (error) {
        replace(note, errorBox(error));
      }
    };
    return h(
      "span",
      {},
      amount,
      h("button", { onclick: run("topping up", async () => `topped up, tx ${await topUp(wallet, app.status, BigInt(lease.order_id), parseUnits(amount.value, decimals, "top-up amount"))}`) }, "Top up"),
      " ",
      h("button", { class: "danger", onclick: run("closing", async () => `closed, tx ${await closeLease(wallet, app.status, BigInt(lease.id))}`) }, "Close"),
      " ",
      h(
        "button",
        {
          onclick: run("asking the provider", async () => {
            stopLogs();
            const reply = await relayCall(app.base, lease.provider, wallet.signer, { method: GATEWAY_METHODS.getStatus, leaseId: BigInt(lease.id) });
            replace(detail, h("h3", {}, `Lease ${lease.id} status`), h("pre", {}, JSON.stringify(reply, null, 2)));
            return "status below";
          }),
        },
        "Status",
      ),
      " ",
      h(
        "button",
        {
          onclick: run("streaming the logs", async () => {
            const lines: string[] = [];
            const pre = h("pre", { class: "logs" });
            const request = { method: GATEWAY_METHODS.streamLogs, leaseId: BigInt(lease.id), service: "", follow: true, tail: 200 } as const;
            return follow(lease, "log", pre, request, (message) => {
              const log = message as RelayedLogLine;
              lines.push(`${log.service}[${log.replica}]${log.stderr ? " !" : ""} ${log.line.replace(/\n$/, "")}`);
              if (lines.length > MAX_LOG_LINES) lines.splice(0, lines.length - MAX_LOG_LINES);
              pre.textContent = lines.join("\n");
              pre.scrollTop = pre.scrollHeight;
            });
          }),
        },
        "Logs",
      ),
      " ",
      h(
        "button",
        {
          onclick: run("streaming the events", async () => {
            const rows = h("tbody");
            const add = (row: HistoryRow) =>
              rows.appendChild(h("tr", {}, h("td", {}, formatTime(row.at)), h("td", {}, row.source), h("td", {}, row.what)));
            chainHistory(await app.api.lease(lease.id), decimals, symbol).forEach(add);
            const view = h("table", { class: "events" }, h("thead", {}, h("tr", {}, h("th", {}, "Time"), h("th", {}, "Source"), h("th", {}, "Event"))), rows);
            // The provider's recorded lease events, then its live ones as they happen.
            const request = { method: GATEWAY_METHODS.streamEvents, leaseId: BigInt(lease.id) } as const;
            return follow(lease, "event", view, request, (message) => add(providerRow(message as RelayedLeaseEvent)));
          }),
        },
        "Events",
      ),
      " ",
      note,
    );
  }

  replace(
    root,
    h("h2", {}, "My leases"),
    table(
      ["Lease", "Order", "Provider", "Price/h", "State", "Confirmed", "Escrow left", "Paid", "Runs out", ""],
      leases.items.map((lease) => [
        lease.id,
        lease.order_id,
        h("span", { title: lease.provider, class: "mono" }, shortAddress(lease.provider)),
        formatUnits(lease.price_per_hour, decimals, symbol),
        lease.state,
        lease.confirmed ? "yes" : "pending",
        formatUnits(lease.escrow_left, decimals, symbol),
        formatUnits(lease.paid_total, decimals, symbol),
        lease.runs_out_at === null ? "—" : `${formatTime(lease.runs_out_at)} (${formatIn(lease.runs_out_at)})`,
        actions(lease),
      ]),
      "You have no lease yet: deploy an SDL first.",
    ),
    detail,
  );
  app.onEvent((event) => {
    if (["LeaseCreated", "LeaseConfirmed", "LeaseClosed", "EscrowToppedUp", "PaymentWithdrawn"].includes(event.kind)) app.refresh();
  });
};
