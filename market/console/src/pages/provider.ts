import { withdraw } from "../chain";
import { errorBox, h, replace, table } from "../dom";
import { formatTime, formatUnits, parseBig, shortAddress } from "../format";
import type { Page } from "../app";

export const providerPage: Page = async (app, root, params) => {
  const { decimals, symbol } = app.status.token;
  const address = params.get("address") ?? app.wallet?.address;
  if (!address) {
    replace(root, h("h2", {}, "Provider"), h("p", { class: "empty" }, "Connect the provider's wallet, or open #/provider?address=0x…"));
    return;
  }
  const [provider, active, closed] = await Promise.all([
    app.api.provider(address),
    app.api.leases({ provider: address, state: "active", limit: 500 }),
    app.api.leases({ provider: address, state: "closed", limit: 500 }),
  ]);
  const all = [...active.items, ...closed.items];
  const earned = all.reduce((sum, lease) => sum + parseBig(lease.paid_total), 0n);
  const ownWallet = app.wallet?.address.toLowerCase() === provider.address.toLowerCase() ? app.wallet : null;
  replace(
    root,
    h("h2", {}, `Provider ${shortAddress(provider.address)}`),
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Endpoint"),
      h("dd", {}, provider.endpoint),
      h("dt", {}, "Status"),
      h("dd", {}, provider.status),
      h("dt", {}, "Stake"),
      h("dd", {}, formatUnits(provider.stake, decimals, symbol)),
      h("dt", {}, "Earned (paid out over all leases)"),
      h("dd", { id: "earned" }, formatUnits(earned, decimals, symbol)),
      h("dt", {}, "GPUs"),
      h("dd", {}, provider.gpus.map((gpu) => `${gpu.name ?? gpu.model_key}: ${gpu.allocated}/${gpu.total} allocated`).join(", ") || "—"),
    ),
    h("h3", {}, "Leases"),
    table(
      ["Lease", "Tenant", "Price/h", "State", "Paid", "Escrow left", "Created", ""],
      all.map((lease) => {
        const note = h("span", { class: "step" });
        return [
          lease.id,
          shortAddress(lease.tenant),
          formatUnits(lease.price_per_hour, decimals, symbol),
          lease.state,
          formatUnits(lease.paid_total, decimals, symbol),
          formatUnits(lease.escrow_left, decimals, symbol),
          formatTime(lease.created_at),
          ownWallet && lease.state === "active"
            ? h(
                "span",
                {},
                h("button", {
                  onclick: async () => {
                    replace(note, "withdrawing…");
                    try {
                      replace(note, `withdrawn, tx ${await withdraw(ownWallet, app.status, BigInt(lease.id))}`);
                    } catch (error) {
                      replace(note, errorBox(error));
                    }
                  },
                }, "Withdraw"),
                " ",
                note,
              )
            : "",
        ];
      }),
      "No lease yet.",
    ),
  );
};
