import { closeLease, topUp } from "../chain";
import { errorBox, h, replace, table } from "../dom";
import { formatIn, formatTime, formatUnits, parseUnits, shortAddress } from "../format";
import { GATEWAY_METHODS } from "../gatewayAuth";
import { relayCall } from "../relay";
import type { Page } from "../app";
import type { Lease } from "../types";

export const leasesPage: Page = async (app, root) => {
  const { decimals, symbol } = app.status.token;
  if (!app.wallet) {
    replace(root, h("h2", {}, "My leases"), h("p", { class: "empty" }, "Connect a wallet (top right) to see your leases."));
    return;
  }
  const wallet = app.wallet;
  const leases = await app.api.leases({ tenant: wallet.address, limit: 200 });
  const detail = h("div", { id: "lease-detail" });

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
            const reply = await relayCall(app.base, lease.provider, wallet.signer, { method: GATEWAY_METHODS.getStatus, leaseId: BigInt(lease.id) });
            replace(detail, h("h3", {}, `Lease ${lease.id} status`), h("pre", {}, JSON.stringify(reply, null, 2)));
            return "status below";
          }),
        },
        "Status",
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
