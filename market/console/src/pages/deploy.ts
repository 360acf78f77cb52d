import { acceptBid, createOrder, DEFAULT_BID_WINDOW_SECS, DEFAULT_DELIVERY_WINDOW_SECS, DEFAULT_DEPOSIT_HOURS } from "../chain";
import { Deliveries, deliver, type DeliveryProgress, type LeaseStatusView } from "../delivery";
import { errorBox, h, replace, table } from "../dom";
import { formatIn, formatUnits, parseUnits, shortAddress } from "../format";
import type { App, Page } from "../app";
import { preflightView, type PreflightRow } from "../preflight";
import type { Bid, SdlProblem, SdlValidation } from "../types";

const DRAFT_KEY = "leasehold.console.sdl";

/// Line numbers beside the SDL, errors and warnings marked on their lines.
function gutter(text: string, problems: SdlProblem[]): HTMLElement {
  const byLine = new Map<number, SdlProblem[]>();
  for (const problem of problems) {
    if (problem.line !== null) byLine.set(problem.line, [...(byLine.get(problem.line) ?? []), problem]);
  }
  const lines = text.split("\n").length;
  const rows = [];
  for (let line = 1; line <= lines; line += 1) {
    const marks = byLine.get(line);
    rows.push(h("div", { class: marks ? "marked" : "", title: marks?.map((p) => p.message).join("\n") ?? null }, String(line)));
  }
  return h("div", { class: "gutter", "aria-hidden": "true" }, rows);
}

function problemList(title: string, className: string, problems: SdlProblem[], editor: HTMLTextAreaElement): HTMLElement | null {
  if (problems.length === 0) return null;
  return h(
    "div",
    { class: className },
    h("strong", {}, title),
    h(
      "ul",
      {},
      problems.map((problem) => {
        const where = problem.line !== null ? `line ${problem.line}${problem.column !== null ? `, column ${problem.column}` : ""}` : "";
        return h(
          "li",
          {},
          h(
            "a",
            {
              href: "#",
              class: "problem",
              "data-line": problem.line ?? "",
              onclick: (event: Event) => {
                event.preventDefault();
                selectPosition(editor, problem.line, problem.column);
              },
            },
            where ? `${where}: ` : "",
          ),
          h("code", {}, problem.field),
          ` ${problem.message}`,
        );
      }),
    ),
  );
}

/// Puts the caret at a 1-based line and column of the text area.
function selectPosition(editor: HTMLTextAreaElement, line: number | null, column: number | null): void {
  if (line === null) return;
  const lines = editor.value.split("\n");
  let offset = 0;
  for (let i = 0; i < line - 1 && i < lines.length; i += 1) offset += (lines[i]?.length ?? 0) + 1;
  offset += Math.max(0, (column ?? 1) - 1);
  editor.focus();
  editor.setSelectionRange(offset, offset + 1);
}

export const deployPage: Page = async (app, root) => {
  const { decimals, symbol } = app.status.token;
  const editor = h("textarea", { id: "sdl", spellcheck: "false", rows: 24, placeholder: "Paste an SDL (version: \"2.0\" …) or upload a file" }) as HTMLTextAreaElement;
  editor.value = localStorage.getItem(DRAFT_KEY) ?? "";
  const lineNumbers = h("div", { class: "gutter-wrap" });
  const results = h("div", { id: "validation" });
  const preflightBox = h("div", { id: "preflight" });
  const orderBox = h("div", { id: "order" });
  const bidsBox = h("div", { id: "bids" });
  const deploymentsBox = h("div", { id: "deployments" });
  let validation: SdlValidation | null = null;

  const upload = h("input", { type: "file", accept: ".yaml,.yml,text/yaml" }) as HTMLInputElement;
  upload.addEventListener("change", async () => {
    const file = upload.files?.[0];
    if (file) {
      editor.value = await file.text();
      renderGutter([]);
    }
  });
  const renderGutter = (problems: SdlProblem[]) => replace(lineNumbers, gutter(editor.value, problems));
  editor.addEventListener("input", () => {
    localStorage.setItem(DRAFT_KEY, editor.value);
    renderGutter([]);
  });
  editor.addEventListener("scroll", () => {
    lineNumbers.scrollTop = editor.scrollTop;
  });

  async function validate(): Promise<void> {
    replace(results, "validating…");
    replace(preflightBox);
    replace(orderBox);
    try {
      validation = await app.api.validateSdl(editor.value);
    } catch (error) {
      replace(results, errorBox(error));
      return;
    }
    renderGutter([...validation.errors, ...validation.warnings]);
    replace(
      results,
      validation.ok ? h("p", { class: "ok" }, `valid: ${validation.groups.length} group(s), manifest ${validation.manifest_hash ?? "?"}`) : h("p", { class: "error" }, `${validation.errors.length} error(s)`),
      problemList("Errors", "errors", validation.errors, editor),
      problemList("Warnings", "warnings", validation.warnings, editor),
    );
    if (validation.ok) {
      renderOrderForm(validation);
      void preflight(editor.value);
    }
  }

  /// Who can serve each group and why the others cannot, as `tenant preflight` says it.
  async function preflight(yaml: string): Promise<void> {
    replace(preflightBox, "checking which providers can serve it…");
    try {
      const groups = preflightView(await app.api.preflight(yaml), decimals, symbol);
      const rows = (list: PreflightRow[]) => list.map((row) => [h("span", { title: row.provider }, shortAddress(row.provider)), row.endpoint, row.gpuModels, row.detail]);
      replace(
        preflightBox,
        h("h3", {}, "Providers"),
        groups.map((group) =>
          h(
            "section",
            { class: "preflight-group" },
            h("p", {}, h("strong", {}, `group ${group.group}`), `: ${group.summary}`),
            table(["Can serve it", "Endpoint", "GPU models", "Estimated price"], rows(group.eligible), "No provider can serve this group now."),
            group.ineligible.length ? table(["Cannot", "Endpoint", "GPU models", "Why not"], rows(group.ineligible), "") : null,
          ),
        ),
      );
    } catch (error) {
      replace(preflightBox, errorBox(error));
    }
  }

  function renderOrderForm(valid: SdlValidation): void {
    const rows = valid.groups.map((group) => {
      const spec = group.order;
      if (!spec) {
        return h("p", { class: "error" }, `group ${group.name}: the API's validation gives no order for this group, so the console cannot post it (the market server must be newer).`);
      }
      const defaultDeposit = BigInt(spec.max_price_per_hour) * DEFAULT_DEPOSIT_HOURS;
      const deposit = h("input", { name: `deposit-${group.name}`, value: formatUnits(defaultDeposit, decimals), size: 14 }) as HTMLInputElement;
      const status = h("span", { class: "step" });
      const post = h("button", {
        onclick: async () => {
          if (!app.wallet) return replace(status, errorBox("connect a wallet first"));
          const manifestJson = valid.manifest_json;
          if (manifestJson === null) {
            return replace(status, errorBox("the API's validation gives no manifest to send, so the console cannot deploy it (the market server must be newer)"));
          }
          try {
            const amount = parseUnits(deposit.value, decimals, "deposit");
            if (amount === 0n) throw new Error("deposit: must be more than 0");
            replace(status, "posting the order…");
            const { orderId, funding } = await createOrder(app.wallet, app.status, {
              spec,
              manifestHash: spec.manifest_hash,
              deposit: amount,
              bidWindowSecs: DEFAULT_BID_WINDOW_SECS,
              deliveryWindowSecs: DEFAULT_DELIVERY_WINDOW_SECS,
            });
            new Deliveries(localStorage).remember(orderId.toString(), manifestJson);
            replace(status, `order ${orderId} posted (deposit paid by ${funding}); its bids appear below`);
            watchBids(app, bidsBox);
            void followDeliveries(app, deploymentsBox);
          } catch (error) {
            replace(status, errorBox(error));
          }
        },
      }, "Create order");
      return h("div", { class: "group" }, h("strong", {}, `group ${group.name}`), ` max ${formatUnits(spec.max_price_per_hour, decimals, symbol)}/h · deposit `, deposit, ` ${symbol} `, post, " ", status);
    });
    replace(orderBox, h("h3", {}, "Order"), rows);
  }

  renderGutter([]);
  replace(
    root,
    h("h2", {}, "Deploy"),
    h("p", {}, upload, " ", h("button", { id: "validate", onclick: () => void validate() }, "Validate")),
    h("div", { class: "editor" }, lineNumbers, editor),
    results,
    preflightBox,
    orderBox,
    bidsBox,
    deploymentsBox,
  );
  if (app.wallet) {
    watchBids(app, bidsBox);
    void followDeliveries(app, deploymentsBox);
    app.onEvent((event) => {
      if (event.kind === "LeaseCreated") void followDeliveries(app, deploymentsBox);
    });
  }
};

/// What each delivery this page follows shows, by order id; module-wide so that a re-render
/// of the page shows a delivery started before it instead of starting it twice.
const deliveryRows = new Map<string, HTMLElement>();
let deploymentsShownIn: HTMLElement | null = null;

function showDeployments(): void {
  const box = deploymentsShownIn;
  if (!box?.isConnected) return;
  replace(box, deliveryRows.size ? [h("h2", {}, "Deployments"), ...deliveryRows.values()] : null);
}

function setRow(orderId: string, ...content: (Node | string)[]): void {
  deliveryRows.set(orderId, h("p", { class: "deployment", "data-order": orderId }, `order ${orderId}: `, ...content));
  showDeployments();
}

/// `web 1/1 (running), db 0/1 (restarting)`.
function servicesLine(status: LeaseStatusView): string {
  return status.services
    .map((service) => `${service.name} ${service.ready_replicas}/${service.total_replicas}${service.states.length ? ` (${service.states.join(", ")})` : ""}`)
    .join(", ");
}

function statusLine(status: LeaseStatusView | null): string {
  if (!status) return "";
  const services = servicesLine(status);
  return ` ${status.state}${services ? `: ${services}` : ""}`;
}

function progressText(leaseId: string, progress: DeliveryProgress): string {
  const retry = progress.lastError ? ` (retrying: ${progress.lastError})` : "";
  return progress.step === "sending"
    ? `lease ${leaseId}: sending the manifest to the provider${retry}`
    : `lease ${leaseId}: manifest delivered, starting…${statusLine(progress.status)}${retry}`;
}

/// Sends each remembered manifest whose order became a lease and follows it until it runs.
async function followDeliveries(app: App, box: HTMLElement): Promise<void> {
  const wallet = app.wallet;
  if (!wallet) return;
  deploymentsShownIn = box;
  const deliveries = new Deliveries(localStorage);
  const pending = deliveries.all().filter((entry) => !deliveryRows.has(entry.orderId));
  if (pending.length === 0) return showDeployments();
  let leases;
  try {
    leases = (await app.api.leases({ tenant: wallet.address, limit: 200 })).items;
  } catch (error) {
    return replace(box, errorBox(error));
  }
  for (const entry of pending) {
    if (deliveryRows.has(entry.orderId)) continue;
    const lease = leases.find((candidate) => candidate.order_id === entry.orderId);
    if (!lease) {
      // A cancelled order never gets a lease: its manifest need not be kept (an unknown or
      // unreadable order is asked about again at the next lease event).
      const order = await app.api.order(entry.orderId).catch(() => null);
      if (order?.state === "cancelled") deliveries.forget(entry.orderId);
      continue;
    }
    if (lease.state !== "active") {
      deliveries.forget(entry.orderId);
      continue;
    }
    setRow(entry.orderId, `lease ${lease.id} with ${shortAddress(lease.provider)}`);
    const target = { base: app.base, provider: lease.provider, leaseId: lease.id, signer: wallet.signer };
    deliver(
      target,
      entry.manifestJson,
      entry.sentToLease === lease.id,
      () => deliveries.markSent(entry.orderId, lease.id),
      (progress) => setRow(entry.orderId, progressText(lease.id, progress)),
    ).then(
      (status) => {
        deliveries.forget(entry.orderId);
        const links = status.services.flatMap((service) => [...service.uris, ...service.hostnames.map((host) => `http://${host}`)]);
        setRow(
          entry.orderId,
          `lease ${lease.id} is running (${servicesLine(status)}) at `,
          ...links.flatMap((uri, index) => [index ? " " : "", h("a", { href: uri, target: "_blank", rel: "noopener", class: "uri" }, uri)]),
        );
      },
      (error: unknown) => setRow(entry.orderId, h("span", { class: "error", role: "alert" }, `lease ${lease.id}: ${error instanceof Error ? error.message : String(error)}`)),
    );
  }
}

/// The newest open orders of the connected tenant with their live bids.
function watchBids(app: App, box: HTMLElement): void {
  const { decimals, symbol } = app.status.token;
  const tenant = app.wallet?.address;
  if (!tenant) return;
  const render = async () => {
    try {
      const orders = await app.api.orders({ tenant, state: "open" });
      const sections = await Promise.all(
        orders.items.map(async (order) => {
          const bids = (await app.api.bids(order.id)).items;
          return h(
            "section",
            {},
            h("h3", {}, `Order ${order.id}: bid window closes ${formatIn(order.bid_window_end)}`),
            table(
              ["Bid", "Provider", "Price/h", "GPU", "State", ""],
              bids.map((bid: Bid) => [
                bid.bid_id,
                shortAddress(bid.provider),
                formatUnits(bid.price_per_hour, decimals, symbol),
                bid.gpu_model ?? "—",
                bid.state,
                bid.state === "open"
                  ? h("button", {
                      onclick: async (event: Event) => {
                        const button = event.target as HTMLButtonElement;
                        button.disabled = true;
                        try {
                          if (!app.wallet) throw new Error("connect a wallet first");
                          await acceptBid(app.wallet, app.status, BigInt(order.id), BigInt(bid.bid_id));
                          button.replaceWith("accepted: see My leases");
                        } catch (error) {
                          button.replaceWith(errorBox(error));
                        }
                      },
                    }, "Accept")
                  : "",
              ]),
              "No bids yet (they appear here as they are placed).",
            ),
          );
        }),
      );
      replace(box, h("h2", {}, "Bids"), sections.length ? sections : h("p", { class: "empty" }, "No open order of yours yet."));
    } catch (error) {
      replace(box, errorBox(error));
    }
  };
  void render();
  app.onEvent((event) => {
    if (["OrderCreated", "BidPlaced", "BidWithdrawn", "LeaseCreated"].includes(event.kind)) void render();
  });
}
