// Entry point: configuration, wallet bar, hash routing and the live stream.
//   ?api=<origin>  market server (default: the page's own origin, which serves the console)
//   ?rpc=<url>     chain RPC for the wallet clients (default: the market's `rpc_url` from
//                  /api/v1/status, which `leasehold-market run --public-rpc-url` sets)
//   ?fake          fixture data for UI work without a chain (never the default)
import { Api, HttpBackend, type Backend } from "./api";
import type { App, Page } from "./app";
import { errorBox, h, replace } from "./dom";
import { FakeBackend } from "./fake";
import { shortAddress } from "./format";
import { deployPage } from "./pages/deploy";
import { leasesPage } from "./pages/leases";
import { marketPage } from "./pages/market";
import { providerPage } from "./pages/provider";
import type { ChainEvent, Status } from "./types";
import { browserWallet, DEVNET_CHAIN_ID, devAccounts, devWallet } from "./wallet";

const ROUTES: Record<string, { title: string; page: Page }> = {
  market: { title: "Market", page: marketPage },
  deploy: { title: "Deploy", page: deployPage },
  leases: { title: "My leases", page: leasesPage },
  provider: { title: "Provider", page: providerPage },
};
const WALLET_KEY = "leasehold.console.wallet";

function route(): { name: string; params: URLSearchParams } {
  const [path = "", search = ""] = location.hash.replace(/^#\/?/, "").split("?");
  return { name: path in ROUTES ? path : "market", params: new URLSearchParams(search) };
}

async function start(): Promise<void> {
  const search = new URLSearchParams(location.search);
  const base = search.get("api") ?? location.origin;
  const backend: Backend = search.has("fake") ? new FakeBackend() : new HttpBackend(base);
  const api = new Api(backend);
  const main = document.getElementById("page")!;
  const nav = document.getElementById("nav")!;
  const walletBar = document.getElementById("wallet")!;
  const streamState = document.getElementById("stream")!;

  let status: Status;
  try {
    status = await api.status();
  } catch (error) {
    replace(main, h("h2", {}, "The market API cannot be reached"), errorBox(error));
    return;
  }
  // The market names the chain's RPC for browsers; never remembered, so a restarted devnet
  // on another port is followed.
  const rpcUrl = search.get("rpc") ?? status.rpc_url;

  let listeners: ((event: ChainEvent) => void)[] = [];
  let rendering = 0;
  const app: App = {
    api,
    base,
    rpcUrl,
    status,
    wallet: null,
    onEvent: (listener) => listeners.push(listener),
    refresh: () => void render(),
  };

  // The wallet bar's block height follows the live stream (the status is read once, at start).
  const height = h("span", { id: "height" });
  const showHeight = () => {
    height.textContent = `block ${status.indexed_block}/${status.head_block}`;
  };
  backend.stream(
    (event) => {
      if (typeof event.block === "number" && event.block > status.indexed_block) {
        status.indexed_block = event.block;
        status.head_block = Math.max(status.head_block, event.block);
        showHeight();
      }
      for (const listener of listeners) listener(event);
    },
    (open) => {
      streamState.textContent = open ? "live" : "reconnecting…";
      streamState.className = open ? "live-on" : "live-off";
    },
  );

  async function render(): Promise<void> {
    const ticket = ++rendering;
    const { name, params } = route();
    listeners = [];
    replace(nav, ...Object.entries(ROUTES).map(([key, { title }]) => h("a", { href: `#/${key}`, class: key === name ? "active" : "" }, title)));
    const target = h("div");
    try {
      await ROUTES[name]!.page(app, target, params);
    } catch (error) {
      replace(target, errorBox(error));
    }
    // A slower earlier render must not overwrite a newer page.
    if (ticket === rendering) replace(main, target);
  }

  function renderWallet(): void {
    const select = h("select", { id: "account", "aria-label": "account" }, h("option", { value: "" }, "no wallet"));
    if (window.ethereum) select.appendChild(h("option", { value: "eip1193" }, "browser wallet"));
    if (status.chain_id === DEVNET_CHAIN_ID) {
      devAccounts().forEach((address, index) => select.appendChild(h("option", { value: `dev:${index}` }, `dev #${index} ${shortAddress(address)}`)));
    }
    select.value = localStorage.getItem(WALLET_KEY) ?? "";
    const note = h("span", { class: "mono" }, app.wallet ? app.wallet.address : "");
    select.addEventListener("change", () => void connect(select.value));
    showHeight();
    replace(walletBar, h("span", {}, `chain ${status.chain_id} · `), height, " · ", select, " ", note);
  }

  async function connect(choice: string): Promise<void> {
    try {
      if (choice.startsWith("dev:")) app.wallet = devWallet(status.chain_id, rpcUrl, Number(choice.slice(4)));
      else if (choice === "eip1193") app.wallet = await browserWallet(status.chain_id, rpcUrl);
      else app.wallet = null;
      localStorage.setItem(WALLET_KEY, choice);
    } catch (error) {
      app.wallet = null;
      localStorage.removeItem(WALLET_KEY);
      replace(walletBar, errorBox(error));
      setTimeout(renderWallet, 4000);
      return;
    }
    renderWallet();
    void render();
  }

  window.addEventListener("hashchange", () => void render());
  const remembered = localStorage.getItem(WALLET_KEY);
  // A browser wallet asks the user first: reconnect only dev accounts by themselves.
  if (remembered?.startsWith("dev:") && status.chain_id === DEVNET_CHAIN_ID) await connect(remembered);
  else {
    renderWallet();
    await render();
  }
}

void start();
