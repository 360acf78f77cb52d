// Transactions, with the same call sequence as the tenant CLI
// (marketplace-contracts/src/client.rs `post_order`, `top_up`, `close_lease`, `withdraw`).
import { hashDomain, parseEventLogs, parseSignature, zeroAddress, type Hex, type TransactionReceipt } from "viem";
import { marketplaceAbi, tokenAbi } from "./generated/abi";
import type { Address, GroupOrderSpec, Status } from "./types";
import type { Wallet } from "./wallet";

/// How long a deposit permit stays valid (the CLI's PERMIT_LIFETIME_SECS).
const PERMIT_LIFETIME_SECS = 600n;
/// `CloseReason::TenantRequest`.
const CLOSE_REASON_TENANT_REQUEST = 1;
/// The CLI's defaults: `tenant deploy --bid-window 10`, the contracts' default delivery window.
export const DEFAULT_BID_WINDOW_SECS = 10n;
export const DEFAULT_DELIVERY_WINDOW_SECS = 600n;
/// Default deposit: 24 hours at the group's maximum price (the CLI's DEFAULT_DEPOSIT_HOURS).
export const DEFAULT_DEPOSIT_HOURS = 24n;

export type DepositFunding = "allowance" | "permit" | "approval";

export interface PostedOrder {
  tx: Hex;
  orderId: bigint;
  funding: DepositFunding;
}

export interface NewOrder {
  spec: GroupOrderSpec;
  manifestHash: Hex;
  deposit: bigint;
  bidWindowSecs: bigint;
  deliveryWindowSecs: bigint;
}

function contractSpec(spec: GroupOrderSpec) {
  return {
    groupName: spec.group_name,
    resources: {
      cpuMilli: BigInt(spec.resources.cpu_milli),
      memoryMiB: BigInt(spec.resources.memory_mib),
      storageMiB: BigInt(spec.resources.storage_mib),
    },
    gpuCount: spec.gpu_count,
    replicas: spec.replicas,
    leasedIps: spec.leased_ips,
    allowedGpuModels: spec.allowed_gpu_models,
    requiredAttributes: spec.required_attributes,
    signedByAllOf: spec.signed_by_all_of,
    signedByAnyOf: spec.signed_by_any_of,
  };
}

/// `leasehold_contracts::GAS_MARGIN_PERCENT` and `GAS_MARGIN_FLOOR`: the console sends
/// with the CLI's margin.
export const GAS_MARGIN_PERCENT = 25n;
export const GAS_MARGIN_FLOOR = 40_000n;

/// The gas limit sent for a transaction whose estimate is `estimate`: a quarter on top, at
/// least `GAS_MARGIN_FLOOR` (the CLI's `gas_limit_with_margin`). An estimate is taken against
/// the current block and the transaction runs in a later one, where e.g. `closeLease` has
/// accrued pay and makes a transfer the estimate did not include: sent at the bare
/// estimate, it runs out of gas.
export function gasLimitWithMargin(estimate: bigint): bigint {
  const margin = (estimate / 100n) * GAS_MARGIN_PERCENT;
  return estimate + (margin > GAS_MARGIN_FLOOR ? margin : GAS_MARGIN_FLOOR);
}

async function sendForReceipt(wallet: Wallet, request: Parameters<Wallet["walletClient"]["writeContract"]>[0]): Promise<TransactionReceipt> {
  const estimate = await wallet.publicClient.estimateContractGas({ ...request, account: wallet.account } as Parameters<
    Wallet["publicClient"]["estimateContractGas"]
  >[0]);
  const gas = gasLimitWithMargin(estimate);
  const hash = await wallet.walletClient.writeContract({ ...request, gas });
  const receipt = await wallet.publicClient.waitForTransactionReceipt({ hash });
  if (receipt.status !== "success") {
    const outOfGas = receipt.gasUsed >= gas ? ": it ran out of gas" : "";
    throw new Error(`transaction ${hash} (${request.functionName}) reverted, gas used ${receipt.gasUsed} of ${gas}${outOfGas}`);
  }
  return receipt;
}

async function send(wallet: Wallet, request: Parameters<Wallet["walletClient"]["writeContract"]>[0]): Promise<Hex> {
  return (await sendForReceipt(wallet, request)).transactionHash;
}

/// The order a create transaction announced in its `OrderCreated` event.
function postedOrder(receipt: TransactionReceipt, funding: DepositFunding): PostedOrder {
  const [created] = parseEventLogs({ abi: marketplaceAbi, eventName: "OrderCreated", logs: receipt.logs });
  if (!created) throw new Error(`transaction ${receipt.transactionHash} created no order (no OrderCreated event)`);
  return { tx: receipt.transactionHash, orderId: created.args.orderId, funding };
}

/// The token's EIP-712 domain when it supports EIP-2612 permits: `eip712Domain` answers and
/// hashes to its DOMAIN_SEPARATOR. `null` otherwise (approve instead).
async function permitDomain(wallet: Wallet, token: Address) {
  try {
    const [, name, version, chainId, verifyingContract] = await wallet.publicClient.readContract({
      address: token,
      abi: tokenAbi,
      functionName: "eip712Domain",
    });
    const separator = await wallet.publicClient.readContract({ address: token, abi: tokenAbi, functionName: "DOMAIN_SEPARATOR" });
    const domain = { name, version, chainId, verifyingContract };
    const computed = hashDomain({
      domain,
      types: {
        EIP712Domain: [
          { name: "name", type: "string" },
          { name: "version", type: "string" },
          { name: "chainId", type: "uint256" },
          { name: "verifyingContract", type: "address" },
        ],
      },
    });
    return computed === separator ? domain : null;
  } catch {
    return null;
  }
}

async function ensureAllowance(wallet: Wallet, token: Address, spender: Address, amount: bigint): Promise<void> {
  const allowance = await wallet.publicClient.readContract({ address: token, abi: tokenAbi, functionName: "allowance", args: [wallet.address, spender] });
  if (allowance < amount) {
    await send(wallet, { address: token, abi: tokenAbi, functionName: "approve", args: [spender, amount], account: wallet.account, chain: wallet.chain });
  }
}

/// Posts the order in one transaction where the token allows: nothing to approve when the
/// allowance covers the deposit, else an EIP-2612 permit with `createOrderWithPermit`, else
/// `approve` then `createOrder`.
export async function createOrder(wallet: Wallet, status: Status, order: NewOrder): Promise<PostedOrder> {
  const { marketplace, token } = status.contracts;
  const spec = contractSpec(order.spec);
  const maxPrice = BigInt(order.spec.max_price_per_hour);
  const common = [token, spec, order.manifestHash, maxPrice, order.deposit, order.bidWindowSecs, order.deliveryWindowSecs] as const;
  const base = { address: marketplace, abi: marketplaceAbi, account: wallet.account, chain: wallet.chain } as const;
  const allowance = await wallet.publicClient.readContract({ address: token, abi: tokenAbi, functionName: "allowance", args: [wallet.address, marketplace] });
  if (allowance >= order.deposit) {
    return postedOrder(await sendForReceipt(wallet, { ...base, functionName: "createOrder", args: common }), "allowance");
  }
  const domain = await permitDomain(wallet, token);
  if (!domain) {
    await ensureAllowance(wallet, token, marketplace, order.deposit);
    return postedOrder(await sendForReceipt(wallet, { ...base, functionName: "createOrder", args: common }), "approval");
  }
  const nonce = await wallet.publicClient.readContract({ address: token, abi: tokenAbi, functionName: "nonces", args: [wallet.address] });
  const deadline = BigInt(Math.floor(Date.now() / 1000)) + PERMIT_LIFETIME_SECS;
  const signature = await wallet.walletClient.signTypedData({
    account: wallet.account,
    domain,
    types: {
      Permit: [
        { name: "owner", type: "address" },
        { name: "spender", type: "address" },
        { name: "value", type: "uint256" },
        { name: "nonce", type: "uint256" },
        { name: "deadline", type: "uint256" },
      ],
    },
    primaryType: "Permit",
    message: { owner: wallet.address, spender: marketplace, value: order.deposit, nonce, deadline },
  });
  const { r, s, yParity } = parseSignature(signature);
  const permit = { deadline, v: 27 + (yParity ?? 0), r, s };
  const noRule = { provider: zeroAddress, maxPricePerHour: 0n };
  return postedOrder(await sendForReceipt(wallet, { ...base, functionName: "createOrderWithPermit", args: [...common, permit, noRule] }), "permit");
}

export async function acceptBid(wallet: Wallet, status: Status, orderId: bigint, bidId: bigint): Promise<Hex> {
  return send(wallet, {
    address: status.contracts.marketplace,
    abi: marketplaceAbi,
    functionName: "acceptBid",
    args: [orderId, bidId],
    account: wallet.account,
    chain: wallet.chain,
  });
}

export async function topUp(wallet: Wallet, status: Status, orderId: bigint, amount: bigint): Promise<Hex> {
  await ensureAllowance(wallet, status.contracts.token, status.contracts.marketplace, amount);
  return send(wallet, {
    address: status.contracts.marketplace,
    abi: marketplaceAbi,
    functionName: "topUp",
    args: [orderId, amount],
    account: wallet.account,
    chain: wallet.chain,
  });
}

export async function closeLease(wallet: Wallet, status: Status, leaseId: bigint): Promise<Hex> {
  return send(wallet, {
    address: status.contracts.marketplace,
    abi: marketplaceAbi,
    functionName: "closeLease",
    args: [leaseId, CLOSE_REASON_TENANT_REQUEST],
    account: wallet.account,
    chain: wallet.chain,
  });
}

export async function withdraw(wallet: Wallet, status: Status, leaseId: bigint): Promise<Hex> {
  return send(wallet, {
    address: status.contracts.marketplace,
    abi: marketplaceAbi,
    functionName: "withdraw",
    args: [leaseId],
    account: wallet.account,
    chain: wallet.chain,
  });
}

export async function tokenBalance(wallet: Wallet, status: Status): Promise<bigint> {
  return wallet.publicClient.readContract({ address: status.contracts.token, abi: tokenAbi, functionName: "balanceOf", args: [wallet.address] });
}
