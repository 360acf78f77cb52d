// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {Resources} from "./Types.sol";
import {TokenTransfers, PullPayments} from "./TokenTransfers.sol";
import {ProviderRegistry} from "./ProviderRegistry.sol";
import {GpuBid, GpuModels} from "./GpuModels.sol";

/// @title Marketplace
/// @notice Orders with escrow, bids, leases and per-second payment streaming.
///
/// One order describes one deployment group and yields at most one lease; the lease id equals
/// the order id, and the escrow is shared (top-ups before and after matching land in the same
/// balance). Each order names its own ERC-20 payment token; only plain, fee-less, non-rebasing
/// tokens are supported (deposits are balance-checked, so fee-on-transfer tokens revert).
/// There is no owner: no function can move escrow anywhere but to the order's tenant or to its
/// lease's provider.
///
/// The allowed GPU models and required attributes are stored as one hash
/// (`requirementsHash`, zero when both lists are empty) and re-supplied in calldata by bidders,
/// which keeps `createOrder` cheap while `placeBid` still verifies them on chain. The full lists
/// are in the `OrderCreated` event.
///
/// A lease starts pending: nothing accrues until its provider `confirmLease`s that the workload
/// runs, within the order's `deliveryWindow`. Without that, anyone may `closeUndelivered`: the
/// tenant gets the whole escrow back plus `registry.deliverySlashBps` of the provider's stake.
/// Every transfer out goes through `_payOrCredit` (see `PullPayments`), so no close or cancel
/// depends on a transfer succeeding.
contract Marketplace is ReentrancyGuardTransient, PullPayments {
    using SafeERC20 for IERC20;
    using TokenTransfers for IERC20;

    enum OrderStatus {
        None,
        Open,
        Leased,
        Cancelled,
        Closed
    }

    /// @notice What the tenant asks for: the group's total resources across all replicas.
    /// `groupName` is keccak256 of the SDL group's (placement's) name: the provider deploys
    /// exactly the manifest group of that name, so sizes never decide which group runs.
    struct OrderSpec {
        bytes32 groupName;
        Resources resources;
        uint32 gpuCount;
        uint16 replicas;
        /// Leased IP addresses the group needs (distinct `ip:` endpoints its services use):
        /// only providers with that many free addresses in their pool bid.
        uint8 leasedIps;
        bytes32[] allowedGpuModels;
        bytes32[] requiredAttributes;
        /// Akash's `signedBy`: auditors that must attest the required attributes (see
        /// `ProviderRegistry.checkAudit`); both empty for no audit requirement.
        address[] signedByAllOf;
        address[] signedByAnyOf;
    }

    /// @notice The tenant's standing acceptance of an order (`createOrderWithPermit`): the first
    /// bid from `provider` (zero: any provider) at or below `maxPricePerHour` (zero: off) becomes
    /// the lease in the same transaction, if it passes exactly the checks of `acceptBid`.
    struct AutoAccept {
        address provider;
        uint88 maxPricePerHour;
    }

    /// @notice An EIP-2612 permit signature of the tenant for `createOrderWithPermit`.
    struct Permit {
        uint256 deadline;
        uint8 v;
        bytes32 r;
        bytes32 s;
    }

    struct OrderView {
        address tenant;
        IERC20 token;
        OrderStatus status;
        uint8 bidCount;
        uint16 replicas;
        uint32 gpuCount;
        uint64 bidWindowEnd;
        Resources resources;
        uint256 maxPricePerHour;
        uint256 escrow;
        bytes32 manifestHash;
        bytes32 groupName;
        bytes32 requirementsHash;
        uint64 expiresAt;
        uint32 deliveryWindow;
    }

    struct BidView {
        address provider;
        uint256 pricePerHour;
        bytes32 gpuModel;
        bool withdrawn;
    }

    struct LeaseView {
        address tenant;
        address provider;
        IERC20 token;
        uint8 bidId;
        bool active;
        uint64 startedAt;
        uint64 closedAt;
        uint256 pricePerHour;
        bytes32 gpuModel;
        uint256 paid;
        uint256 escrow;
        bool confirmed;
        uint64 deliveryDeadline;
        /// @notice 1 for the order's manifest, one more for each `updateManifest`.
        uint32 revision;
        /// @notice The manifest the provider must run: the order's, or the latest update's.
        bytes32 manifestHash;
    }

    /// @dev Six slots; the last stays empty for orders without GPU-model or attribute lists.
    /// The third packs everything a bid and a close touch, so each reads it once.
    struct Order {
        address tenant;
        uint40 bidWindowEnd;
        uint16 replicas;
        uint16 deliveryWindow;
        bool hasRequiredAttributes;
        bool requiresAudit;
        /// @dev Set when `_autoAccept` holds a rule, so other orders' bids never read it.
        bool autoAccept;
        IERC20 token;
        uint96 escrow;
        uint32 cpuMilli;
        uint32 memoryMiB;
        uint32 storageMiB;
        uint16 gpuCount;
        uint8 bidCount;
        OrderStatus status;
        uint88 maxPricePerHour;
        uint40 closedAt;
        bytes32 manifestHash;
        bytes32 groupName;
        bytes32 requirementsHash;
    }

    struct Bid {
        address provider;
        uint88 pricePerHour;
        bool withdrawn;
    }

    /// @dev Whether the lease is active lives in its order's status (Leased or Closed).
    /// `startedAt` stays zero until the provider confirms delivery (pending: nothing accrues).
    struct Lease {
        address provider;
        uint40 startedAt;
        uint8 bidId;
        uint40 deliveryDeadline;
        uint96 pricePerHour;
        uint128 paid;
    }

    uint256 public constant MAX_BIDS = 16;
    uint256 internal constant MAX_ALLOWED_GPU_MODELS = 16;
    uint256 internal constant MAX_REQUIRED_ATTRIBUTES = 16;
    uint64 public constant MIN_BID_WINDOW = 1;
    uint64 public constant MAX_BID_WINDOW = 7 days;
    uint256 public constant MAX_PRICE_PER_HOUR = 1e26;
    /// @notice Cap on one escrow balance (deposit plus top-ups still held).
    uint256 public constant MAX_ESCROW = 1e28;
    uint16 public constant MAX_REPLICAS = 1024;
    uint32 public constant MAX_GPU_COUNT = 4096;
    /// @notice Bound on an order's leased IP addresses (Akash providers lease a handful at most).
    uint8 internal constant MAX_LEASED_IPS = 16;
    /// @notice Per-order bound on each of cpuMilli, memoryMiB and storageMiB (4 PiB of memory).
    uint64 public constant MAX_RESOURCE_PER_ORDER = type(uint32).max;
    uint256 internal constant SECONDS_PER_HOUR = 3600;
    /// @notice After the bid window only the tenant may match (`acceptBid` or `settle`) for this
    /// long, so a stranger's `settle` cannot pre-empt the tenant's own choice.
    uint64 public constant TENANT_GRACE = 120;
    /// @notice An order not matched this long after its bid window expires: it can then only
    /// be cancelled (no one is matched at a forgotten order's maximum price).
    uint64 public constant MATCH_PERIOD = 1 days;
    /// @notice Bounds on the seconds a provider has to confirm delivery after the lease starts.
    uint64 internal constant MIN_DELIVERY_WINDOW = 60;
    uint64 internal constant MAX_DELIVERY_WINDOW = 3600;
    /// @notice Bound on an order's `signedByAllOf` and `signedByAnyOf` auditors together: every
    /// match-time check reads each auditor's revocation counter, and `settle` must stay within
    /// 200k gas (`test_gas_settle_sixteenBidsOneSkip_maxAuditors`; Akash SDLs name one auditor,
    /// sometimes one per list).
    uint256 public constant MAX_AUDITORS = 4;
    /// @notice Bids one `settle` call may pass over before it returns (bounds its gas); one on
    /// orders with auditors, whose checks cost more.
    uint256 internal constant SETTLE_SKIP_LIMIT = 2;

    /// @dev `BidEvicted` reasons.
    uint8 private constant EVICTED_WITHDRAWN = 0;
    uint8 private constant EVICTED_INELIGIBLE = 1;
    uint8 private constant EVICTED_OUTBID = 2;

    /// @dev The `LeaseClosed` reason of `closeUndelivered`.
    uint8 private constant CLOSE_REASON_NOT_DELIVERED = 3;

    /// @dev Marks "this provider bid without a GPU" in `_bidGpuModel`; zero means "no bid".
    bytes32 private constant NO_GPU_MODEL = bytes32(uint256(1));

    ProviderRegistry public immutable registry;
    uint256 public nextOrderId = 1;

    mapping(uint256 orderId => Order) private _orders;
    mapping(uint256 orderId => Bid[MAX_BIDS]) private _bids;
    /// @dev Doubles as the one-bid-per-provider check and as the bid's GPU model.
    mapping(uint256 orderId => mapping(address provider => bytes32)) private _bidGpuModel;
    mapping(uint256 leaseId => Lease) private _leases;
    /// @dev The provider's attribute epoch when it bid, kept only for orders with required
    /// attributes: a different epoch at match time means the attributes changed since the check.
    mapping(uint256 orderId => uint32[MAX_BIDS]) private _bidAttributeEpochs;
    /// @dev Manifest updates of each lease (0: none, the order's manifest is revision 1). The
    /// latest hash replaces the order's `manifestHash`.
    mapping(uint256 leaseId => uint32) private _manifestUpdates;
    /// @dev The auditors of orders with `signedBy` requirements, stored (not re-supplied like the
    /// other lists) because every match re-checks them.
    mapping(uint256 orderId => Auditors) private _orderAuditors;
    /// @dev The registry's `auditEpoch` of the order's auditors for the bidder when it bid, kept
    /// only for orders requiring audits: a revocation since then makes the bid ineligible.
    mapping(uint256 orderId => uint64[MAX_BIDS]) private _bidAuditEpochs;
    /// @dev Orders with `autoAccept` set: the tenant's standing acceptance rule.
    mapping(uint256 orderId => AutoAccept) private _autoAccept;

    struct Auditors {
        address[] allOf;
        address[] anyOf;
    }

    event OrderCreated(
        uint256 indexed orderId,
        address indexed tenant,
        address indexed token,
        OrderSpec spec,
        bytes32 manifestHash,
        uint256 maxPricePerHour,
        uint256 deposit,
        uint64 bidWindowEnd
    );
    /// @notice The order's first qualifying bid becomes its lease when placed (see `AutoAccept`).
    event AutoAcceptSet(uint256 indexed orderId, address indexed provider, uint256 maxPricePerHour);
    event OrderCancelled(uint256 indexed orderId, address indexed tenant, uint256 refund);
    event BidPlaced(
        uint256 indexed orderId, uint256 bidId, address indexed provider, uint256 pricePerHour, bytes32 gpuModel
    );
    event BidWithdrawn(uint256 indexed orderId, uint256 bidId, address indexed provider);
    /// @notice A new bid on a full order took this bid's slot. `reason`: 0 withdrawn or skipped,
    /// 1 provider no longer eligible (or no longer audited), 2 outbid (the most expensive, by a strictly cheaper bid).
    /// The evicted provider may bid on the order again (its one-bid check is cleared).
    event BidEvicted(uint256 indexed orderId, uint256 bidId, address indexed provider, uint8 reason);
    /// @notice `settle` passed over this bid because its provider had no room (or stopped).
    event BidSkipped(uint256 indexed orderId, uint256 bidId, address indexed provider);
    event LeaseCreated(
        uint256 indexed leaseId,
        address indexed tenant,
        address indexed provider,
        uint256 bidId,
        uint256 pricePerHour,
        bytes32 gpuModel
    );
    event EscrowToppedUp(uint256 indexed orderId, address indexed from, uint256 amount, uint256 escrow);
    event PaymentWithdrawn(uint256 indexed leaseId, address indexed provider, uint256 amount, uint256 totalPaid);
    /// @notice `reason` is free-form for the caller: 0 unspecified, 1 tenant request,
    /// 2 provider request, 3 manifest not delivered, 4 insolvent, 5 workload failed.
    /// @notice The provider confirmed that the workload runs; payment accrues from now.
    event LeaseConfirmed(uint256 indexed leaseId, address indexed provider);
    /// @notice The lease ended undelivered: `slashed` of the provider's stake went to the tenant.
    event DeliveryFailed(uint256 indexed leaseId, address indexed provider, uint256 slashed);
    /// @notice The tenant replaced the lease's manifest; the provider runs `manifestHash` next.
    event ManifestUpdated(uint256 indexed leaseId, uint32 revision, bytes32 manifestHash);
    event LeaseClosed(
        uint256 indexed leaseId,
        address indexed closedBy,
        uint8 reason,
        uint256 paidToProvider,
        uint256 refundedToTenant
    );

    error ZeroAddress();
    error OrderNotFound(uint256 orderId);
    error OrderNotOpen(uint256 orderId, OrderStatus status);
    error LeaseNotFound(uint256 leaseId);
    error LeaseNotActive(uint256 leaseId);
    error NotTenant(address caller);
    error NotProvider(address caller);
    error ZeroResources();
    error ZeroGroupName();
    error ResourcesOutOfRange(uint256 max);
    error GpuCountOutOfRange(uint256 gpuCount, uint256 max);
    error ReplicasOutOfRange(uint256 replicas, uint256 max);
    error LeasedIpsOutOfRange(uint256 leasedIps, uint256 max);
    error TooManyAllowedGpuModels(uint256 count, uint256 max);
    error TooManyRequiredAttributes(uint256 count, uint256 max);
    error GpuModelsWithoutGpus();
    error PriceOutOfRange(uint256 price, uint256 max);
    error DepositOutOfRange(uint256 amount, uint256 max);
    error EscrowCapExceeded(uint256 escrow, uint256 amount, uint256 max);
    error BidWindowOutOfRange(uint256 bidWindow, uint256 min, uint256 max);
    error RequirementsMismatch(bytes32 expected, bytes32 supplied);
    error PriceAboveMax(uint256 price, uint256 maxPricePerHour);
    error TooManyBids(uint256 orderId, uint256 max);
    error AlreadyBid(uint256 orderId, address provider);
    error ProviderNotActive(address provider);
    error ProviderLacksAttribute(address provider, bytes32 attribute);
    error ProviderLacksGpuModel(address provider, bytes32 gpuModel);
    error ProviderLacksCapacity(address provider);
    error GpuModelNotAllowed(bytes32 gpuModel);
    error BidNotFound(uint256 orderId, uint256 bidId);
    error BidAlreadyWithdrawn(uint256 orderId, uint256 bidId);
    error BidWindowOpen(uint256 orderId, uint64 bidWindowEnd);
    error NoEligibleBid(uint256 orderId);
    error LeaseSolvent(uint256 leaseId);
    error ZeroAmount();
    error BidWindowClosed(uint256 orderId, uint64 bidWindowEnd);
    error OrderExpired(uint256 orderId, uint64 expiresAt);
    error TenantGracePeriod(uint256 orderId, uint64 graceEnd);
    error DeliveryWindowOutOfRange(uint256 deliveryWindow, uint256 min, uint256 max);
    error LeaseNotPending(uint256 leaseId);
    error DeliveryDeadlinePassed(uint256 leaseId, uint64 deliveryDeadline);
    error DeliveryWindowOpen(uint256 leaseId, uint64 deliveryDeadline);
    error ZeroManifestHash();
    error TooManyAuditors(uint256 count, uint256 max);
    error InvalidAuditor(address auditor);
    /// @notice `auditor` (zero: every `signedByAnyOf` auditor) does not attest the provider's
    /// required attributes, or an attestation the bid relied on was revoked.
    error ProviderNotAudited(address provider, address auditor);
    /// @notice The provider's stake was slashed below the registry's minimum: no bid or match
    /// until it tops the stake up (`registry.addStake`).
    error ProviderStakeBelowMinimum(address provider);

    constructor(ProviderRegistry registry_) {
        if (address(registry_) == address(0)) revert ZeroAddress();
        registry = registry_;
    }

    // ---------------------------------------------------------------- orders

    /// @notice Posts an order and moves `deposit` of `token` from the caller into escrow.
    /// @param bidWindow Seconds providers may bid (MIN_BID_WINDOW..MAX_BID_WINDOW); the tenant
    /// may match after it, anyone `TENANT_GRACE` later, until `MATCH_PERIOD` after it.
    /// @param deliveryWindow Seconds the winner has to confirm delivery once the lease starts
    /// (MIN_DELIVERY_WINDOW..MAX_DELIVERY_WINDOW).
    /// @return orderId The new order, also the id of the lease it may become.
    function createOrder(
        IERC20 token,
        OrderSpec calldata spec,
        bytes32 manifestHash,
        uint256 maxPricePerHour,
        uint256 deposit,
        uint64 bidWindow,
        uint64 deliveryWindow
    ) external nonReentrant returns (uint256 orderId) {
        orderId = _createOrder(token, spec, manifestHash, maxPricePerHour, deposit, bidWindow, deliveryWindow);
        token.pullExact(msg.sender, deposit);
    }

    function _createOrder(
        IERC20 token,
        OrderSpec calldata spec,
        bytes32 manifestHash,
        uint256 maxPricePerHour,
        uint256 deposit,
        uint64 bidWindow,
        uint64 deliveryWindow
    ) private returns (uint256 orderId) {
        if (address(token) == address(0)) revert ZeroAddress();
        if (spec.groupName == bytes32(0)) revert ZeroGroupName();
        if (spec.resources.cpuMilli == 0 || spec.resources.memoryMiB == 0) revert ZeroResources();
        if (
            spec.resources.cpuMilli > MAX_RESOURCE_PER_ORDER || spec.resources.memoryMiB > MAX_RESOURCE_PER_ORDER
                || spec.resources.storageMiB > MAX_RESOURCE_PER_ORDER
        ) revert ResourcesOutOfRange(MAX_RESOURCE_PER_ORDER);
        if (spec.gpuCount > MAX_GPU_COUNT) revert GpuCountOutOfRange(spec.gpuCount, MAX_GPU_COUNT);
        if (spec.replicas == 0 || spec.replicas > MAX_REPLICAS) revert ReplicasOutOfRange(spec.replicas, MAX_REPLICAS);
        if (spec.leasedIps > MAX_LEASED_IPS) revert LeasedIpsOutOfRange(spec.leasedIps, MAX_LEASED_IPS);
        if (spec.allowedGpuModels.length > MAX_ALLOWED_GPU_MODELS) {
            revert TooManyAllowedGpuModels(spec.allowedGpuModels.length, MAX_ALLOWED_GPU_MODELS);
        }
        if (spec.gpuCount == 0 && spec.allowedGpuModels.length != 0) revert GpuModelsWithoutGpus();
        if (spec.requiredAttributes.length > MAX_REQUIRED_ATTRIBUTES) {
            revert TooManyRequiredAttributes(spec.requiredAttributes.length, MAX_REQUIRED_ATTRIBUTES);
        }
        if (maxPricePerHour == 0 || maxPricePerHour > MAX_PRICE_PER_HOUR) {
            revert PriceOutOfRange(maxPricePerHour, MAX_PRICE_PER_HOUR);
        }
        if (deposit == 0 || deposit > MAX_ESCROW) revert DepositOutOfRange(deposit, MAX_ESCROW);
        if (bidWindow < MIN_BID_WINDOW || bidWindow > MAX_BID_WINDOW) {
            revert BidWindowOutOfRange(bidWindow, MIN_BID_WINDOW, MAX_BID_WINDOW);
        }
        if (deliveryWindow < MIN_DELIVERY_WINDOW || deliveryWindow > MAX_DELIVERY_WINDOW) {
            revert DeliveryWindowOutOfRange(deliveryWindow, MIN_DELIVERY_WINDOW, MAX_DELIVERY_WINDOW);
        }

        orderId = nextOrderId++;
        uint64 bidWindowEnd = uint64(block.timestamp) + bidWindow;
        Order storage order = _orders[orderId];
        order.tenant = msg.sender;
        order.maxPricePerHour = uint88(maxPricePerHour);
        order.token = token;
        order.escrow = uint96(deposit);
        order.cpuMilli = uint32(spec.resources.cpuMilli);
        order.memoryMiB = uint32(spec.resources.memoryMiB);
        order.storageMiB = uint32(spec.resources.storageMiB);
        order.gpuCount = uint16(spec.gpuCount);
        order.replicas = spec.replicas;
        order.status = OrderStatus.Open;
        order.bidWindowEnd = uint40(bidWindowEnd);
        order.deliveryWindow = uint16(deliveryWindow);
        if (spec.requiredAttributes.length != 0) order.hasRequiredAttributes = true;
        order.manifestHash = manifestHash;
        order.groupName = spec.groupName;
        bytes32 reqHash = requirementsHash(spec.allowedGpuModels, spec.requiredAttributes);
        if (reqHash != bytes32(0)) order.requirementsHash = reqHash;
        if (spec.signedByAllOf.length != 0 || spec.signedByAnyOf.length != 0) _storeAuditors(orderId, order, spec);

        emit OrderCreated(
            orderId, msg.sender, address(token), spec, manifestHash, maxPricePerHour, deposit, bidWindowEnd
        );
    }

    /// @notice `createOrder` after an EIP-2612 `permit` of `deposit` to this contract: approval
    /// and order in one transaction. A failing permit (e.g. its signature already used by
    /// someone who copied it from the mempool) is ignored, so the order still stands when the
    /// allowance covers the deposit; otherwise pulling the deposit reverts.
    /// @param autoAccept The order's acceptance rule (`AutoAccept`; all zero: none, the tenant
    /// matches with `acceptBid` or `settle`). Its price may not exceed `maxPricePerHour`.
    function createOrderWithPermit(
        IERC20 token,
        OrderSpec calldata spec,
        bytes32 manifestHash,
        uint256 maxPricePerHour,
        uint256 deposit,
        uint64 bidWindow,
        uint64 deliveryWindow,
        Permit calldata permit,
        AutoAccept calldata autoAccept
    ) external nonReentrant returns (uint256 orderId) {
        try IERC20Permit(address(token))
            .permit(msg.sender, address(this), deposit, permit.deadline, permit.v, permit.r, permit.s) {}
            catch {}
        orderId = _createOrder(token, spec, manifestHash, maxPricePerHour, deposit, bidWindow, deliveryWindow);
        if (autoAccept.maxPricePerHour != 0) _setAutoAccept(orderId, autoAccept, maxPricePerHour);
        token.pullExact(msg.sender, deposit);
    }

    /// @notice Withdraws an unmatched order and refunds its whole escrow to the tenant.
    function cancelOrder(uint256 orderId) external nonReentrant {
        Order storage order = _openOrder(orderId);
        if (msg.sender != order.tenant) revert NotTenant(msg.sender);
        uint256 refund = order.escrow;
        order.escrow = 0;
        order.status = OrderStatus.Cancelled;
        emit OrderCancelled(orderId, msg.sender, refund);
        _payOrCredit(order.token, msg.sender, refund);
    }

    /// @notice Adds `amount` to the escrow of an open order or an active lease (same id). Anyone.
    function topUp(uint256 orderId, uint256 amount) external nonReentrant {
        Order storage order = _orders[orderId];
        OrderStatus status = order.status;
        if (status == OrderStatus.None) revert OrderNotFound(orderId);
        if (status != OrderStatus.Open && status != OrderStatus.Leased) revert OrderNotOpen(orderId, status);
        if (amount == 0) revert ZeroAmount();
        uint256 escrow = order.escrow;
        if (amount > MAX_ESCROW - escrow) revert EscrowCapExceeded(escrow, amount, MAX_ESCROW);
        escrow += amount;
        order.escrow = uint96(escrow);
        emit EscrowToppedUp(orderId, msg.sender, amount, escrow);
        order.token.pullExact(msg.sender, amount);
    }

    // ---------------------------------------------------------------- bids

    /// @notice Bids on an open order inside its bid window. On a full order (MAX_BIDS) the bid
    /// takes the slot of a withdrawn or skipped bid, else of a bid whose provider is no longer
    /// eligible, else of the most expensive bid if it is strictly cheaper (`BidEvicted`); only
    /// then does it revert `TooManyBids`. So a cheaper eligible bid always gets in.
    /// The caller must be an active provider holding every
    /// required attribute and, for GPU orders, offering `gpuCount` GPUs of the concrete model
    /// `gpu.model` names. Unless the order allows any model, that model must match the entry
    /// `gpu.patternIndex` of the allowed list with the parts `gpu.wildcards` selects replaced by
    /// `*` (see `GpuModels`). CPU-only orders take an all-empty `gpu`.
    /// @param allowedGpuModels The order's list, re-supplied from `OrderCreated`.
    /// @param requiredAttributes The order's list, re-supplied from `OrderCreated`.
    /// @return bidId Index of the bid within the order (0..MAX_BIDS-1).
    function placeBid(
        uint256 orderId,
        uint256 pricePerHour,
        GpuBid calldata gpu,
        bytes32[] calldata allowedGpuModels,
        bytes32[] calldata requiredAttributes
    ) external returns (uint256 bidId) {
        Order storage order = _openOrder(orderId);
        uint64 bidWindowEnd = order.bidWindowEnd;
        if (block.timestamp >= bidWindowEnd) revert BidWindowClosed(orderId, bidWindowEnd);
        if (pricePerHour == 0) revert PriceOutOfRange(0, MAX_PRICE_PER_HOUR);
        if (pricePerHour > order.maxPricePerHour) revert PriceAboveMax(pricePerHour, order.maxPricePerHour);
        bytes32 supplied = requirementsHash(allowedGpuModels, requiredAttributes);
        if (supplied != order.requirementsHash) revert RequirementsMismatch(order.requirementsHash, supplied);
        if (_bidGpuModel[orderId][msg.sender] != bytes32(0)) revert AlreadyBid(orderId, msg.sender);

        uint32 gpuCount = order.gpuCount;
        bytes32 gpuModel = _bidGpuKey(gpu, gpuCount, allowedGpuModels);
        registry.requireEligible(msg.sender, requiredAttributes, _resourcesOf(order), gpuModel, gpuCount);

        bidId = order.bidCount;
        if (bidId < MAX_BIDS) order.bidCount = uint8(bidId + 1);
        else bidId = _evictionSlot(orderId, order, pricePerHour, requiredAttributes);
        registry.lockBond(orderId, bidId, msg.sender);
        _bids[orderId][bidId] = Bid(msg.sender, uint88(pricePerHour), false);
        _bidGpuModel[orderId][msg.sender] = gpuCount == 0 ? NO_GPU_MODEL : gpuModel;
        if (order.hasRequiredAttributes) _bidAttributeEpochs[orderId][bidId] = registry.attributeEpoch(msg.sender);
        if (order.requiresAudit) {
            _bidAuditEpochs[orderId][bidId] = _requireAudited(orderId, msg.sender, requiredAttributes);
        }
        emit BidPlaced(orderId, bidId, msg.sender, pricePerHour, gpuModel);
        if (order.autoAccept) _autoMatch(orderId, order, bidId, pricePerHour, gpuModel);
    }

    /// @notice Withdraws the caller's bid on an open order. The provider may not bid again on it,
    /// and its bond goes to the tenant (`registry.releaseBonds`).
    function withdrawBid(uint256 orderId, uint256 bidId) external {
        Order storage order = _openOrder(orderId);
        Bid storage bid = _existingBid(orderId, bidId);
        if (bid.provider != msg.sender) revert NotProvider(msg.sender);
        if (bid.withdrawn) revert BidAlreadyWithdrawn(orderId, bidId);
        bid.withdrawn = true;
        // Past the tenant's grace the tenant had its turn to match: a provider that stops
        // holding capacity for an order nobody matched keeps its bond (else a tenant could
        // post orders it never matches and collect the bonds of every honest bidder).
        if (block.timestamp >= uint256(order.bidWindowEnd) + TENANT_GRACE) {
            registry.resolveBond(orderId, bidId, msg.sender, address(0));
        }
        emit BidWithdrawn(orderId, bidId, msg.sender);
    }

    /// @notice The tenant picks a bid at any time while the order is open and not expired.
    /// Reverts when the provider is no longer eligible: inactive, without room, without the GPU
    /// model, or with its attributes changed since it bid (on orders requiring attributes).
    function acceptBid(uint256 orderId, uint256 bidId) external nonReentrant {
        Order storage order = _matchableOrder(orderId);
        if (msg.sender != order.tenant) revert NotTenant(msg.sender);
        Bid storage bid = _existingBid(orderId, bidId);
        if (bid.withdrawn) revert BidAlreadyWithdrawn(orderId, bidId);
        address provider = bid.provider;
        bytes32 gpuModel = _gpuModelOfBid(orderId, provider, order.gpuCount);
        ProviderRegistry.Eligibility result = _tryMatch(orderId, order, bidId, provider, bid.pricePerHour, gpuModel);
        if (result != ProviderRegistry.Eligibility.Eligible) {
            _revertIneligible(
                result, provider, result == ProviderRegistry.Eligibility.GpuModelNotOffered ? gpuModel : bytes32(0)
            );
        }
    }

    /// @notice Matches an order once its bid window has passed: the lowest price wins, the
    /// earliest bid on a tie, passing over providers no longer eligible (see `acceptBid`).
    /// The tenant may call it at once, anyone else after `TENANT_GRACE`. A call passes over
    /// at most `SETTLE_SKIP_LIMIT` bids (one on orders with auditors; marked withdrawn,
    /// `BidSkipped`) and then returns without a lease: call again. Reverts `NoEligibleBid` when no bid is
    /// left and it passed over none.
    function settle(uint256 orderId) external nonReentrant {
        Order storage order = _matchableOrder(orderId);
        uint64 bidWindowEnd = order.bidWindowEnd;
        if (block.timestamp < bidWindowEnd) revert BidWindowOpen(orderId, bidWindowEnd);
        if (msg.sender != order.tenant && block.timestamp < bidWindowEnd + TENANT_GRACE) {
            revert TenantGracePeriod(orderId, bidWindowEnd + TENANT_GRACE);
        }
        uint256 count = order.bidCount;
        Bid[MAX_BIDS] storage stored = _bids[orderId];
        Bid[] memory candidates = new Bid[](count);
        for (uint256 i = 0; i < count; ++i) {
            candidates[i] = stored[i];
        }
        Resources memory amount = _resourcesOf(order);
        uint32 gpuCount = order.gpuCount;
        uint256 skipped;
        while (true) {
            (bool found, uint256 best) = _cheapestCandidate(candidates);
            // a call that passed over bids keeps them passed over (their bonds are forfeit)
            if (!found) {
                if (skipped == 0) revert NoEligibleBid(orderId);
                return;
            }
            address provider = candidates[best].provider;
            bytes32 gpuModel = _gpuModelOfBid(orderId, provider, gpuCount);
            if (
                _tryReserve(orderId, order, best, provider, amount, gpuModel, gpuCount)
                    == ProviderRegistry.Eligibility.Eligible
            ) {
                _startLease(orderId, order, best, provider, candidates[best].pricePerHour, gpuModel);
                return;
            }
            // Passed over for good (a later call must not pay for it again); after
            // SETTLE_SKIP_LIMIT of them this call ends and the next one goes on, which keeps
            // every call within a bounded gas cost however many bids went stale.
            candidates[best].withdrawn = true;
            stored[best].withdrawn = true;
            emit BidSkipped(orderId, best, provider);
            if (++skipped == (order.requiresAudit ? 1 : SETTLE_SKIP_LIMIT)) return;
        }
    }

    // ---------------------------------------------------------------- leases

    /// @notice Pays the provider what has accrued, capped at the escrow.
    /// @return amount What was transferred.
    function withdraw(uint256 leaseId) external nonReentrant returns (uint256 amount) {
        (Order storage order, Lease storage lease) = _activeLease(leaseId);
        if (msg.sender != lease.provider) revert NotProvider(msg.sender);
        amount = _settleAccrued(order, lease, block.timestamp);
        emit PaymentWithdrawn(leaseId, msg.sender, amount, lease.paid);
        _payOrCredit(order.token, msg.sender, amount);
    }

    /// @notice The lease's provider confirms that every replica runs, before the lease's
    /// `deliveryDeadline`; payment accrues from now on.
    function confirmLease(uint256 leaseId) external {
        (, Lease storage lease) = _activeLease(leaseId);
        address provider = lease.provider;
        if (msg.sender != provider) revert NotProvider(msg.sender);
        if (lease.startedAt != 0) revert LeaseNotPending(leaseId);
        uint40 deadline = lease.deliveryDeadline;
        if (block.timestamp >= deadline) revert DeliveryDeadlinePassed(leaseId, deadline);
        lease.startedAt = uint40(block.timestamp);
        registry.recordDelivery(provider);
        emit LeaseConfirmed(leaseId, provider);
    }

    /// @notice Ends a lease its provider did not confirm by the deadline. Anyone may call it:
    /// the tenant gets the whole escrow back and `registry.deliverySlashBps` of the provider's
    /// stake; the provider's capacity is released and its failed-delivery count goes up.
    function closeUndelivered(uint256 leaseId) external nonReentrant {
        (Order storage order, Lease storage lease) = _activeLease(leaseId);
        if (lease.startedAt != 0) revert LeaseNotPending(leaseId);
        uint40 deadline = lease.deliveryDeadline;
        if (block.timestamp < deadline) revert DeliveryWindowOpen(leaseId, deadline);
        _closePending(leaseId, order, lease, CLOSE_REASON_NOT_DELIVERED, true);
    }

    /// @notice Ends a lease: pays the provider up to now, refunds the rest of the escrow to the
    /// tenant and releases the provider's capacity. The tenant or provider may close at any time;
    /// anyone may close a lease whose escrow cannot cover what has accrued. A pending lease
    /// closed by the tenant is refunded in full; closed by its provider, it counts as undelivered.
    function closeLease(uint256 leaseId, uint8 reason) external nonReentrant {
        (Order storage order, Lease storage lease) = _activeLease(leaseId);
        address provider = lease.provider;
        address tenant = order.tenant;
        if (lease.startedAt == 0 && (msg.sender == tenant || msg.sender == provider)) {
            _closePending(leaseId, order, lease, reason, msg.sender != tenant);
            return;
        }
        uint256 escrow = order.escrow;
        uint256 paid = _accruedUnpaid(lease, block.timestamp);
        if (paid > escrow) paid = escrow;
        // strangers may only close a lease whose escrow no longer covers what has accrued
        if (msg.sender != tenant && msg.sender != provider && paid < escrow) revert LeaseSolvent(leaseId);
        if (paid != 0) lease.paid += uint128(paid);
        uint256 refund = escrow - paid;
        order.escrow = 0;
        order.status = OrderStatus.Closed;
        order.closedAt = uint40(block.timestamp);
        emit LeaseClosed(leaseId, msg.sender, reason, paid, refund);

        _release(leaseId, order, provider);
        IERC20 token = order.token;
        _payOrCredit(token, provider, paid);
        _payOrCredit(token, tenant, refund);
    }

    /// @notice The tenant of an active lease (pending or confirmed) records the hash of a new
    /// manifest for the same order: the provider then runs the manifest whose hash this is, in
    /// the resources the lease bought. The lease, its price and its escrow are unchanged.
    function updateManifest(uint256 leaseId, bytes32 manifestHash) external {
        (Order storage order,) = _activeLease(leaseId);
        if (msg.sender != order.tenant) revert NotTenant(msg.sender);
        if (manifestHash == bytes32(0)) revert ZeroManifestHash();
        uint32 revision = _manifestUpdates[leaseId] + 2;
        _manifestUpdates[leaseId] = revision - 1;
        order.manifestHash = manifestHash;
        emit ManifestUpdated(leaseId, revision, manifestHash);
    }

    // ---------------------------------------------------------------- views

    /// @notice Hash binding an order to its GPU-model and attribute lists; zero when both are empty.
    function requirementsHash(bytes32[] calldata allowedGpuModels, bytes32[] calldata requiredAttributes)
        public
        pure
        returns (bytes32)
    {
        if (allowedGpuModels.length == 0 && requiredAttributes.length == 0) return bytes32(0);
        return keccak256(abi.encode(allowedGpuModels, requiredAttributes));
    }

    /// @notice The order's `signedBy` auditors (both empty when it requires no audit).
    function orderAuditors(uint256 orderId) external view returns (address[] memory allOf, address[] memory anyOf) {
        Auditors storage auditors = _orderAuditors[orderId];
        return (auditors.allOf, auditors.anyOf);
    }

    /// @notice Payment accrued from `startedAt` to `elapsed` seconds later at `pricePerHour`,
    /// rounded down (in the tenant's favour). Cumulative, so repeated withdrawals never lose
    /// or duplicate a rounding remainder.
    function accruedFor(uint256 pricePerHour, uint256 elapsed) public pure returns (uint256) {
        return (elapsed * pricePerHour) / SECONDS_PER_HOUR;
    }

    function getOrder(uint256 orderId) external view returns (OrderView memory info) {
        Order storage order = _orders[orderId];
        info.tenant = order.tenant;
        info.token = order.token;
        info.status = order.status;
        info.bidCount = order.bidCount;
        info.replicas = order.replicas;
        info.gpuCount = order.gpuCount;
        info.bidWindowEnd = order.bidWindowEnd;
        info.resources = _resourcesOf(order);
        info.maxPricePerHour = order.maxPricePerHour;
        info.escrow = order.escrow;
        info.manifestHash = order.manifestHash;
        info.groupName = order.groupName;
        info.requirementsHash = order.requirementsHash;
        if (order.status != OrderStatus.None) info.expiresAt = uint64(order.bidWindowEnd) + MATCH_PERIOD;
        info.deliveryWindow = order.deliveryWindow;
    }

    function getBid(uint256 orderId, uint256 bidId) public view returns (BidView memory info) {
        Bid storage bid = _existingBid(orderId, bidId);
        bytes32 gpuModel = _gpuModelOfBid(orderId, bid.provider, _orders[orderId].gpuCount);
        return BidView(bid.provider, bid.pricePerHour, gpuModel, bid.withdrawn);
    }

    function getBids(uint256 orderId) external view returns (BidView[] memory bids) {
        uint256 count = _orders[orderId].bidCount;
        bids = new BidView[](count);
        for (uint256 i = 0; i < count; ++i) {
            bids[i] = getBid(orderId, i);
        }
    }

    function getLease(uint256 leaseId) external view returns (LeaseView memory info) {
        Lease storage lease = _leases[leaseId];
        if (lease.provider == address(0)) revert LeaseNotFound(leaseId);
        Order storage order = _orders[leaseId];
        info.tenant = order.tenant;
        info.provider = lease.provider;
        info.token = order.token;
        info.bidId = lease.bidId;
        info.active = order.status == OrderStatus.Leased;
        info.startedAt = lease.startedAt;
        info.closedAt = order.closedAt;
        info.pricePerHour = lease.pricePerHour;
        info.gpuModel = _gpuModelOfBid(leaseId, lease.provider, order.gpuCount);
        info.paid = lease.paid;
        info.escrow = order.escrow;
        info.confirmed = lease.startedAt != 0;
        info.deliveryDeadline = lease.deliveryDeadline;
        info.revision = _manifestUpdates[leaseId] + 1;
        info.manifestHash = order.manifestHash;
    }

    /// @notice What the provider could withdraw now and what has accrued beyond that.
    /// @return withdrawable Accrued, unpaid and covered by the escrow.
    /// @return shortfall Accrued and unpaid but not covered (non-zero means insolvent).
    function owed(uint256 leaseId) external view returns (uint256 withdrawable, uint256 shortfall) {
        (Order storage order, Lease storage lease) = _activeLease(leaseId);
        uint256 unpaid = _accruedUnpaid(lease, block.timestamp);
        uint256 escrow = order.escrow;
        return unpaid > escrow ? (escrow, unpaid - escrow) : (unpaid, 0);
    }

    /// @notice True when the escrow no longer covers what has accrued, so anyone may close.
    function isInsolvent(uint256 leaseId) external view returns (bool) {
        (Order storage order, Lease storage lease) = _activeLease(leaseId);
        return _accruedUnpaid(lease, block.timestamp) >= order.escrow;
    }

    // ---------------------------------------------------------------- internals

    function _openOrder(uint256 orderId) private view returns (Order storage order) {
        order = _orders[orderId];
        OrderStatus status = order.status;
        if (status == OrderStatus.None) revert OrderNotFound(orderId);
        if (status != OrderStatus.Open) revert OrderNotOpen(orderId, status);
    }

    /// @dev An open order still inside its matching period.
    function _matchableOrder(uint256 orderId) private view returns (Order storage order) {
        order = _openOrder(orderId);
        uint64 expiresAt = uint64(order.bidWindowEnd) + MATCH_PERIOD;
        if (block.timestamp >= expiresAt) revert OrderExpired(orderId, expiresAt);
    }

    function _existingBid(uint256 orderId, uint256 bidId) private view returns (Bid storage bid) {
        if (bidId >= _orders[orderId].bidCount) revert BidNotFound(orderId, bidId);
        return _bids[orderId][bidId];
    }

    function _activeLease(uint256 leaseId) private view returns (Order storage order, Lease storage lease) {
        order = _orders[leaseId];
        OrderStatus status = order.status;
        if (status == OrderStatus.Closed) revert LeaseNotActive(leaseId);
        if (status != OrderStatus.Leased) revert LeaseNotFound(leaseId);
        lease = _leases[leaseId];
    }

    function _resourcesOf(Order storage order) private view returns (Resources memory) {
        return Resources(order.cpuMilli, order.memoryMiB, order.storageMiB);
    }

    /// @dev CPU-only orders skip the storage read: their bids never carry a model.
    function _gpuModelOfBid(uint256 orderId, address provider, uint256 gpuCount) private view returns (bytes32) {
        if (gpuCount == 0) return bytes32(0);
        bytes32 stored = _bidGpuModel[orderId][provider];
        return stored == NO_GPU_MODEL ? bytes32(0) : stored;
    }

    /// @dev The concrete model key a bid names (zero for CPU-only orders), after checking that it
    /// matches the allowed entry the bid points at. Whether the provider offers it is the registry's.
    function _bidGpuKey(GpuBid calldata gpu, uint32 gpuCount, bytes32[] calldata allowedGpuModels)
        private
        pure
        returns (bytes32 gpuModel)
    {
        if (gpuCount == 0) {
            if (!GpuModels.isEmpty(gpu.model)) revert GpuModelNotAllowed(GpuModels.key(gpu.model));
            return bytes32(0);
        }
        GpuModels.requireConcrete(gpu.model);
        gpuModel = GpuModels.key(gpu.model);
        if (allowedGpuModels.length == 0) return gpuModel;
        uint256 index = gpu.patternIndex;
        uint8 wildcards = gpu.wildcards;
        if (
            index >= allowedGpuModels.length || wildcards > GpuModels.ALL_WILDCARDS
                || allowedGpuModels[index] != GpuModels.patternKey(gpu.model, wildcards)
        ) revert GpuModelNotAllowed(gpuModel);
    }

    /// @dev Reserves the order's resources for a bid if its provider is still eligible: active,
    /// with room, offering the GPU model and, on orders requiring attributes, with the attribute
    /// set it had when it bid.
    function _tryReserve(
        uint256 orderId,
        Order storage order,
        uint256 bidId,
        address provider,
        Resources memory amount,
        bytes32 gpuModel,
        uint32 gpuCount
    ) private returns (ProviderRegistry.Eligibility) {
        if (order.requiresAudit && _auditEpochOf(orderId, provider) != _bidAuditEpochs[orderId][bidId]) {
            return ProviderRegistry.Eligibility.NotAudited;
        }
        uint32 epoch = order.hasRequiredAttributes ? _bidAttributeEpochs[orderId][bidId] : 0;
        return registry.tryReserve(provider, amount, gpuModel, gpuCount, epoch);
    }

    function _storeAuditors(uint256 orderId, Order storage order, OrderSpec calldata spec) private {
        registry.checkAuditors(spec.signedByAllOf, spec.signedByAnyOf, MAX_AUDITORS);
        order.requiresAudit = true;
        _orderAuditors[orderId] = Auditors(spec.signedByAllOf, spec.signedByAnyOf);
    }

    /// @dev Reverts `ProviderNotAudited` unless the order's auditors attest `provider`'s
    /// required attributes; returns the audit epoch to remember with the bid.
    function _requireAudited(uint256 orderId, address provider, bytes32[] calldata requiredAttributes)
        private
        view
        returns (uint64 epoch)
    {
        Auditors storage auditors = _orderAuditors[orderId];
        bool audited;
        address missing;
        (audited, missing, epoch) = registry.checkAudit(provider, requiredAttributes, auditors.allOf, auditors.anyOf);
        if (!audited) revert ProviderNotAudited(provider, missing);
    }

    function _auditEpochOf(uint256 orderId, address provider) private view returns (uint64) {
        Auditors storage auditors = _orderAuditors[orderId];
        return registry.auditEpoch(provider, auditors.allOf, auditors.anyOf);
    }

    /// @dev Only on the failure path: the registry raises the error (see `revertIneligible`).
    function _revertIneligible(ProviderRegistry.Eligibility result, address provider, bytes32 detail) private view {
        registry.revertIneligible(result, provider, detail);
    }

    /// @dev The slot a bid takes on a full order (see `placeBid`); reverts `TooManyBids` when
    /// every bid stands, is eligible and no dearer than `pricePerHour`. Eligibility is checked
    /// against the lists the new bidder re-supplied (already matched against the order's hash).
    function _evictionSlot(
        uint256 orderId,
        Order storage order,
        uint256 pricePerHour,
        bytes32[] calldata requiredAttributes
    ) private returns (uint256) {
        Bid[MAX_BIDS] storage stored = _bids[orderId];
        uint256 priciest;
        uint256 highest;
        for (uint256 i = 0; i < MAX_BIDS; ++i) {
            if (stored[i].withdrawn) return _evicted(orderId, i, stored[i].provider, EVICTED_WITHDRAWN);
            uint256 price = stored[i].pricePerHour;
            if (price > highest) {
                highest = price;
                priciest = i;
            }
        }
        (bool found, uint256 slot) = _firstIneligibleBid(orderId, order, requiredAttributes);
        if (found) return _evicted(orderId, slot, stored[slot].provider, EVICTED_INELIGIBLE);
        if (pricePerHour < highest) return _evicted(orderId, priciest, stored[priciest].provider, EVICTED_OUTBID);
        revert TooManyBids(orderId, MAX_BIDS);
    }

    function _firstIneligibleBid(uint256 orderId, Order storage order, bytes32[] calldata requiredAttributes)
        private
        view
        returns (bool found, uint256 slot)
    {
        Resources memory amount = _resourcesOf(order);
        uint32 gpuCount = order.gpuCount;
        bool requiresAudit = order.requiresAudit;
        for (slot = 0; slot < MAX_BIDS; ++slot) {
            address provider = _bids[orderId][slot].provider;
            bytes32 gpuModel = _gpuModelOfBid(orderId, provider, gpuCount);
            (ProviderRegistry.Eligibility result,) =
                registry.checkEligibility(provider, requiredAttributes, amount, gpuModel, gpuCount);
            if (result != ProviderRegistry.Eligibility.Eligible) return (true, slot);
            if (requiresAudit && _auditEpochOf(orderId, provider) != _bidAuditEpochs[orderId][slot]) {
                return (true, slot);
            }
        }
        return (false, 0);
    }

    /// @dev Frees the evicted provider's one-bid-per-order entry so it may bid again: a bid that
    /// was outbid, or whose provider regained eligibility, must be able to compete anew.
    /// Its bond is resolved now, as the slot is reused: returned when outbid, else the tenant's.
    function _evicted(uint256 orderId, uint256 bidId, address provider, uint8 reason) private returns (uint256) {
        delete _bidGpuModel[orderId][provider];
        registry.resolveBond(orderId, bidId, provider, reason == EVICTED_OUTBID ? address(0) : _orders[orderId].tenant);
        emit BidEvicted(orderId, bidId, provider, reason);
        return bidId;
    }

    /// @dev Lowest price first, lowest index on a tie; withdrawn (or skipped) bids are ignored.
    function _cheapestCandidate(Bid[] memory candidates) private pure returns (bool found, uint256 best) {
        uint256 bestPrice;
        for (uint256 i = 0; i < candidates.length; ++i) {
            if (candidates[i].withdrawn) continue;
            uint256 price = candidates[i].pricePerHour;
            if (!found || price < bestPrice) {
                found = true;
                best = i;
                bestPrice = price;
            }
        }
    }

    /// @dev Ends a lease that was never confirmed: the whole escrow goes back to the tenant; when
    /// `failed`, the provider's stake is slashed to the tenant and the failure counted.
    function _closePending(uint256 leaseId, Order storage order, Lease storage lease, uint8 reason, bool failed)
        private
    {
        address provider = lease.provider;
        address tenant = order.tenant;
        uint256 refund = order.escrow;
        order.escrow = 0;
        order.status = OrderStatus.Closed;
        order.closedAt = uint40(block.timestamp);
        emit LeaseClosed(leaseId, msg.sender, reason, 0, refund);
        _release(leaseId, order, provider);
        if (failed) emit DeliveryFailed(leaseId, provider, registry.slashForFailedDelivery(provider, tenant));
        _payOrCredit(order.token, tenant, refund);
    }

    function _release(uint256 leaseId, Order storage order, address provider) private {
        uint32 gpuCount = order.gpuCount;
        registry.release(provider, _resourcesOf(order), _gpuModelOfBid(leaseId, provider, gpuCount), gpuCount);
    }

    function _setAutoAccept(uint256 orderId, AutoAccept calldata rule, uint256 maxPricePerHour) private {
        uint256 price = rule.maxPricePerHour;
        if (price > maxPricePerHour) revert PriceAboveMax(price, maxPricePerHour);
        _orders[orderId].autoAccept = true;
        _autoAccept[orderId] = rule;
        emit AutoAcceptSet(orderId, rule.provider, price);
    }

    /// @dev Matches the bid just placed when the order's `AutoAccept` rule covers it. A covered
    /// bid that fails the match checks (e.g. its provider has no free room) stays a plain bid.
    function _autoMatch(uint256 orderId, Order storage order, uint256 bidId, uint256 pricePerHour, bytes32 gpuModel)
        private
    {
        AutoAccept storage rule = _autoAccept[orderId];
        address allowed = rule.provider;
        if ((allowed == address(0) || allowed == msg.sender) && pricePerHour <= rule.maxPricePerHour) {
            _tryMatch(orderId, order, bidId, msg.sender, pricePerHour, gpuModel);
        }
    }

    /// @dev The match of `acceptBid` and of an auto-accepted bid: the lease starts when the
    /// bid's provider is still eligible (`_tryReserve`); nothing changes otherwise.
    function _tryMatch(
        uint256 orderId,
        Order storage order,
        uint256 bidId,
        address provider,
        uint256 pricePerHour,
        bytes32 gpuModel
    ) private returns (ProviderRegistry.Eligibility result) {
        result = _tryReserve(orderId, order, bidId, provider, _resourcesOf(order), gpuModel, order.gpuCount);
        if (result == ProviderRegistry.Eligibility.Eligible) {
            _startLease(orderId, order, bidId, provider, pricePerHour, gpuModel);
        }
    }

    function _startLease(
        uint256 orderId,
        Order storage order,
        uint256 bidId,
        address provider,
        uint256 pricePerHour,
        bytes32 gpuModel
    ) private {
        order.status = OrderStatus.Leased;
        _leases[orderId] = Lease({
            provider: provider,
            startedAt: 0,
            bidId: uint8(bidId),
            deliveryDeadline: uint40(block.timestamp + order.deliveryWindow),
            pricePerHour: uint96(pricePerHour),
            paid: 0
        });
        emit LeaseCreated(orderId, order.tenant, provider, bidId, pricePerHour, gpuModel);
    }

    function _accruedUnpaid(Lease storage lease, uint256 until) private view returns (uint256) {
        uint256 startedAt = lease.startedAt;
        if (startedAt == 0) return 0;
        return accruedFor(lease.pricePerHour, until - startedAt) - lease.paid;
    }

    /// @dev Moves what has accrued (capped at the escrow) from escrow to the lease's paid total;
    /// the caller transfers it.
    function _settleAccrued(Order storage order, Lease storage lease, uint256 until) private returns (uint256 amount) {
        amount = _accruedUnpaid(lease, until);
        uint256 escrow = order.escrow;
        if (amount > escrow) amount = escrow;
        if (amount == 0) return 0;
        order.escrow = uint96(escrow - amount);
        lease.paid += uint128(amount);
    }
}
