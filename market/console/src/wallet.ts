// The signer behind every transaction and gateway call: an EIP-1193 browser wallet, or on
// a devnet (chain id 31337) one of anvil's public development accounts, so the console is
// fully usable without an extension. Dev keys are never offered on any other chain.
import {
  createPublicClient,
  createWalletClient,
  custom,
  defineChain,
  http,
  type Chain,
  type EIP1193Provider,
  type Hex,
  type PublicClient,
  type WalletClient,
  type Account,
} from "viem";
import { privateKeyToAccount } from "viem/accounts";
import type { MessageSigner } from "./gatewayAuth";
import type { Address } from "./types";

export const DEVNET_CHAIN_ID = 31337;

/// anvil's default development keys (mnemonic "test test … junk"): public, devnet only.
export const ANVIL_DEV_KEYS: readonly Hex[] = [
  "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
  "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
  "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
  "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
  "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
  "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
  "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
  "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
  "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
  "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
];

export interface Wallet {
  kind: "dev" | "eip1193";
  address: Address;
  chain: Chain;
  account: Account | Address;
  publicClient: PublicClient;
  walletClient: WalletClient;
  signer: MessageSigner;
}

declare global {
  interface Window {
    ethereum?: EIP1193Provider;
  }
}

export function chainOf(chainId: number, rpcUrl: string): Chain {
  return defineChain({
    id: chainId,
    name: chainId === DEVNET_CHAIN_ID ? "Leasehold devnet" : `chain ${chainId}`,
    nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 },
    rpcUrls: { default: { http: [rpcUrl] } },
  });
}

export function devAccounts(): Address[] {
  return ANVIL_DEV_KEYS.map((key) => privateKeyToAccount(key).address);
}

/// A dev account by index; refused off the devnet.
export function devWallet(chainId: number, rpcUrl: string, index: number): Wallet {
  if (chainId !== DEVNET_CHAIN_ID) {
    throw new Error(`dev accounts exist only on the devnet (chain id ${DEVNET_CHAIN_ID}); this market is on chain ${chainId}`);
  }
  const key = ANVIL_DEV_KEYS[index];
  if (key === undefined) throw new Error(`dev account: index ${index} is outside 0..${ANVIL_DEV_KEYS.length - 1}`);
  const account = privateKeyToAccount(key);
  const chain = chainOf(chainId, rpcUrl);
  const transport = http(rpcUrl);
  return {
    kind: "dev",
    address: account.address,
    chain,
    account,
    publicClient: createPublicClient({ chain, transport }),
    walletClient: createWalletClient({ chain, transport, account }),
    signer: { address: account.address, signMessage: (message) => account.signMessage({ message }) },
  };
}

/// The browser wallet's first account, after it agrees to connect; refused when the
/// wallet is on another chain than the market.
export async function browserWallet(chainId: number, rpcUrl: string): Promise<Wallet> {
  const provider = window.ethereum;
  if (!provider) throw new Error("no browser wallet (window.ethereum) found");
  const transport = custom(provider);
  const chain = chainOf(chainId, rpcUrl);
  const walletClient = createWalletClient({ chain, transport });
  const [address] = await walletClient.requestAddresses();
  if (!address) throw new Error("the wallet shared no account");
  const walletChain = await walletClient.getChainId();
  if (walletChain !== chainId) {
    throw new Error(`the wallet is on chain ${walletChain}, the market on chain ${chainId}: switch networks in the wallet`);
  }
  return {
    kind: "eip1193",
    address,
    chain,
    account: address,
    publicClient: createPublicClient({ chain, transport }),
    walletClient: createWalletClient({ chain, transport, account: address }),
    signer: { address, signMessage: (message) => walletClient.signMessage({ account: address, message }) },
  };
}
