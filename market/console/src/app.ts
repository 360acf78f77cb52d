// What every page shares: the API, the chain status, the wallet and the live stream.
import { Api } from "./api";
import type { ChainEvent, Status } from "./types";
import type { Wallet } from "./wallet";

export interface App {
  api: Api;
  /// Origin of the market server (relay calls go there too).
  base: string;
  rpcUrl: string;
  status: Status;
  wallet: Wallet | null;
  /// Subscribes to live chain events until the page is left.
  onEvent(listener: (event: ChainEvent) => void): void;
  /// Re-renders the current page.
  refresh(): void;
}

export type Page = (app: App, root: HTMLElement, params: URLSearchParams) => Promise<void>;
