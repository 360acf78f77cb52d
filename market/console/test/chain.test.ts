// The console's transactions against a real anvil chain with the committed contracts: the
// order's deposit goes by EIP-2612 permit in one transaction when nothing is approved (as
// `tenant deploy` does), by the allowance when it covers the deposit, and top-ups pay in.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { join, resolve } from "node:path";
import { after, before, test } from "node:test";
import { keccak256, parseEventLogs, stringToHex, toHex, type Hex, type TransactionReceipt } from "viem";
import { acceptBid, closeLease, createOrder, gasLimitWithMargin, topUp, tokenBalance, withdraw } from "../src/chain";
import { marketplaceAbi, tokenAbi } from "../src/generated/abi";
import type { GroupOrderSpec, Status } from "../src/types";
import { devWallet, type Wallet } from "../src/wallet";

const repo = resolve("..", "..");
const anvilBin = process.env.ANVIL ?? join(repo, ".tools", "bin", "anvil");
const artifact = (name: string) => JSON.parse(readFileSync(join(repo, "marketplace-contracts", "artifacts", `${name}.json`), "utf8")) as { bytecode: { object: Hex } };

let anvil: ChildProcess | undefined;
let deployer: Wallet;
let tenant: Wallet;
let provider: Wallet;
let registryAbi: readonly unknown[];
let status: Status;

async function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address ? done(address.port) : fail(new Error("no port"))));
    });
  });
}

async function deploy(wallet: Wallet, name: string, abi: readonly unknown[], args: unknown[]): Promise<Hex> {
  const hash = await wallet.walletClient.deployContract({ abi, bytecode: artifact(name).bytecode.object, args, account: wallet.account, chain: wallet.chain });
  const receipt = await wallet.publicClient.waitForTransactionReceipt({ hash });
  assert.ok(receipt.contractAddress, `${name} deployed`);
  return receipt.contractAddress;
}

before(async () => {
  assert.ok(existsSync(anvilBin), `anvil not found at ${anvilBin} (scripts/bootstrap foundry, or set ANVIL)`);
  const port = await freePort();
  anvil = spawn(anvilBin, ["--host", "127.0.0.1", "--port", String(port), "--silent"], { stdio: "ignore" });
  const rpc = `http://127.0.0.1:${port}`;
  deployer = devWallet(31337, rpc, 0);
  tenant = devWallet(31337, rpc, 1);
  provider = devWallet(31337, rpc, 2);
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      await deployer.publicClient.getBlockNumber();
      break;
    } catch (error) {
      if (Date.now() > deadline) throw new Error(`anvil did not answer on ${rpc}: ${String(error)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  registryAbi = JSON.parse(readFileSync(join(repo, "marketplace-contracts", "artifacts", "ProviderRegistry.json"), "utf8")).abi as readonly unknown[];
  const token = await deploy(deployer, "TestToken", tokenAbi, []);
  const registry = await deploy(deployer, "ProviderRegistry", registryAbi, [token, 100_000_000n, 60n, 1000, 1_000_000n]);
  const marketplace = await deploy(deployer, "Marketplace", marketplaceAbi, [registry]);
  const init = await deployer.walletClient.writeContract({ address: registry, abi: registryAbi, functionName: "initialize", args: [marketplace], account: deployer.account, chain: deployer.chain });
  await deployer.publicClient.waitForTransactionReceipt({ hash: init });
  for (const wallet of [tenant, provider]) {
    const faucet = await deployer.walletClient.writeContract({ address: token, abi: tokenAbi, functionName: "faucet", args: [wallet.address, 500_000_000n], account: deployer.account, chain: deployer.chain });
    await deployer.publicClient.waitForTransactionReceipt({ hash: faucet });
  }
  status = {
    chain_id: 31337,
    head_block: 0,
    indexed_block: 0,
    confirmations: 0,
    contracts: { marketplace, registry, token },
    token: { symbol: "tUSD", decimals: 6 },
    rpc_url: rpc,
  };
});

after(() => {
  anvil?.kill("SIGKILL");
});

const manifestHash = keccak256(toHex("manifest"));
const spec: GroupOrderSpec = {
  group_name: stringToHex("web", { size: 32 }),
  resources: { cpu_milli: "500", memory_mib: "256", storage_mib: "512" },
  gpu_count: 0,
  replicas: 1,
  leased_ips: 0,
  allowed_gpu_models: [],
  required_attributes: [],
  signed_by_all_of: [],
  signed_by_any_of: [],
  max_price_per_hour: "1000000",
  denom: "usdc",
  manifest_hash: manifestHash,
};
const order = { spec, manifestHash, deposit: 24_000_000n, bidWindowSecs: 10n, deliveryWindowSecs: 600n };

async function escrowOf(orderId: bigint): Promise<bigint> {
  const view = await tenant.publicClient.readContract({ address: status.contracts.marketplace, abi: marketplaceAbi, functionName: "getOrder", args: [orderId] });
  return view.escrow;
}

test("with no allowance the deposit is paid by permit in the createOrderWithPermit transaction", { timeout: 60_000 }, async () => {
  const before = await tokenBalance(tenant, status);
  const posted = await createOrder(tenant, status, order);
  assert.equal(posted.funding, "permit");
  assert.equal(await escrowOf(posted.orderId), order.deposit);
  assert.equal(await tokenBalance(tenant, status), before - order.deposit);
  const tx = await tenant.publicClient.getTransaction({ hash: posted.tx });
  assert.equal(tx.to?.toLowerCase(), status.contracts.marketplace.toLowerCase(), "one transaction, to the marketplace");
  const view = await tenant.publicClient.readContract({ address: status.contracts.marketplace, abi: marketplaceAbi, functionName: "getOrder", args: [posted.orderId] });
  assert.equal(view.tenant, tenant.address);
  assert.equal(view.manifestHash, manifestHash);
  assert.equal(view.maxPricePerHour, 1_000_000n);
  assert.equal(view.resources.cpuMilli, 500n);
});

test("an allowance that covers the deposit is used without a permit", { timeout: 60_000 }, async () => {
  const approve = await tenant.walletClient.writeContract({ address: status.contracts.token, abi: tokenAbi, functionName: "approve", args: [status.contracts.marketplace, order.deposit], account: tenant.account, chain: tenant.chain });
  await tenant.publicClient.waitForTransactionReceipt({ hash: approve });
  const posted = await createOrder(tenant, status, order);
  assert.equal(posted.funding, "allowance");
  assert.equal(await escrowOf(posted.orderId), order.deposit);
});

test("a top-up approves what it needs and adds to the escrow", { timeout: 60_000 }, async () => {
  const posted = await createOrder(tenant, status, order);
  const tx = await topUp(tenant, status, posted.orderId, 5_000_000n);
  assert.equal(await escrowOf(posted.orderId), order.deposit + 5_000_000n);
  const receipt = await tenant.publicClient.getTransactionReceipt({ hash: tx });
  const [event] = parseEventLogs({ abi: marketplaceAbi, eventName: "EscrowToppedUp", logs: receipt.logs });
  assert.equal(event?.args.amount, 5_000_000n);
});

/// A provider call the console never makes (it is the daemon's job), for the lease tests.
async function asProvider(address: Hex, abi: readonly unknown[], functionName: string, args: unknown[]): Promise<TransactionReceipt> {
  const hash = await provider.walletClient.writeContract({ address, abi, functionName, args, account: provider.account, chain: provider.chain });
  const receipt = await provider.publicClient.waitForTransactionReceipt({ hash });
  assert.equal(receipt.status, "success", `${functionName} succeeded`);
  return receipt;
}

test("accept a bid, the provider withdraws what accrued, closing refunds the rest: nothing lost", { timeout: 60_000 }, async () => {
  const { marketplace, registry, token } = status.contracts;
  await asProvider(token, tokenAbi, "approve", [registry, 100_000_000n]);
  await asProvider(registry, registryAbi, "register", [
    "https://127.0.0.1:8443",
    keccak256(toHex("cert")),
    [],
    { cpuMilli: 8000n, memoryMiB: 16384n, storageMiB: 65536n },
    [],
  ]);
  const posted = await createOrder(tenant, status, order);
  const noGpu = { model: { vendor: "", model: "", ram: "", iface: "" }, patternIndex: 0, wildcards: 0 };
  const bidReceipt = await asProvider(marketplace, marketplaceAbi, "placeBid", [posted.orderId, 900_000n, noGpu, [], []]);
  const [bid] = parseEventLogs({ abi: marketplaceAbi, eventName: "BidPlaced", logs: bidReceipt.logs });
  assert.ok(bid);

  const accepted = await tenant.publicClient.getTransactionReceipt({ hash: await acceptBid(tenant, status, posted.orderId, bid.args.bidId) });
  const [lease] = parseEventLogs({ abi: marketplaceAbi, eventName: "LeaseCreated", logs: accepted.logs });
  assert.ok(lease, "acceptBid created the lease");
  assert.equal(lease.args.pricePerHour, 900_000n);
  const leaseId = lease.args.leaseId;

  await asProvider(marketplace, marketplaceAbi, "confirmLease", [leaseId]);
  await provider.publicClient.request({ method: "evm_increaseTime" as never, params: [3600] as never });
  await provider.publicClient.request({ method: "evm_mine" as never });
  const paid = await provider.publicClient.getTransactionReceipt({ hash: await withdraw(provider, status, leaseId) });
  const [payment] = parseEventLogs({ abi: marketplaceAbi, eventName: "PaymentWithdrawn", logs: paid.logs });
  assert.ok(payment && payment.args.amount >= 900_000n, `about one hour paid, got ${payment?.args.amount}`);

  const before = await tokenBalance(tenant, status);
  const closed = await tenant.publicClient.getTransactionReceipt({ hash: await closeLease(tenant, status, leaseId) });
  const [close] = parseEventLogs({ abi: marketplaceAbi, eventName: "LeaseClosed", logs: closed.logs });
  assert.ok(close);
  assert.equal(close.args.reason, 1, "closed as a tenant request");
  assert.equal(payment.args.amount + close.args.paidToProvider + close.args.refundedToTenant, order.deposit, "the deposit is all accounted for");
  assert.ok(close.args.refundedToTenant > 0n);
  assert.equal(await tokenBalance(tenant, status), before + close.args.refundedToTenant, "the refund is paid to the tenant");
});

test("the gas limit is the estimate plus the CLI's margin: a quarter, at least 40,000", () => {
  assert.equal(gasLimitWithMargin(100_000n), 140_000n);
  assert.equal(gasLimitWithMargin(1_000_000n), 1_250_000n);
  assert.equal(gasLimitWithMargin(0n), 40_000n);
});

test("dev accounts are refused off the devnet", () => {
  assert.throws(() => devWallet(1, "http://127.0.0.1:1", 0), /dev accounts exist only on the devnet/);
  assert.throws(() => devWallet(31337, "http://127.0.0.1:1", 10), /index 10 is outside/);
});
