// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {Resources, GpuCapacity} from "./Types.sol";
import {GpuModels} from "./GpuModels.sol";
import {TokenTransfers, PullPayments} from "./TokenTransfers.sol";
import {Marketplace} from "./Marketplace.sol";

/// @title ProviderRegistry
/// @notice Providers register their endpoint, attributes and hardware with a stake. The amounts
/// allocated to leases are changed only by the Marketplace bound once through `initialize`;
/// nobody, the deployer included, can move a provider's stake, except the Marketplace's slash of
/// `deliverySlashBps` of it to the tenant of a lease the provider did not deliver, and the
/// forfeit of a bid's `bidBond` to the order's tenant (see `releaseBonds`).
///
/// Every bid locks `bidBond` of its provider's stake (no transfer): the stake not yet locked must
/// cover it. The bond comes back when the bid wins, loses, is outbid by a cheaper bid, or its
/// order is cancelled or expires; it goes to the order's tenant (credited: `claim`) when the
/// provider withdrew the bid, or the bid was skipped by `settle` or evicted because its provider
/// was no longer eligible. A forfeit that takes the stake below `minimumStake` blocks bidding and
/// matching until `addStake`, as a slash does. Locked bonds cannot be withdrawn.
contract ProviderRegistry is ReentrancyGuardTransient, PullPayments {
    using SafeERC20 for IERC20;
    using TokenTransfers for IERC20;

    enum ProviderStatus {
        None,
        Active,
        Unbonding
    }

    /// @notice Outcome of `checkEligibility`; the Marketplace turns it into a specific error.
    enum Eligibility {
        Eligible,
        NotActive,
        MissingAttribute,
        GpuModelNotOffered,
        InsufficientCapacity,
        NotAudited,
        StakeBelowMinimum
    }

    struct GpuModelState {
        bytes32 modelKey;
        uint32 capacity;
        uint32 allocated;
    }

    struct ProviderView {
        ProviderStatus status;
        uint256 stake;
        uint64 unbondingEnds;
        uint32 activeLeases;
        string endpoint;
        /// @notice SHA-256 of the DER certificate the gateway at `endpoint` serves; tenants pin it.
        bytes32 gatewayCertSha256;
        bytes32[] attributes;
        Resources capacity;
        Resources allocated;
        GpuModelState[] gpus;
        uint32 deliveriesConfirmed;
        uint32 deliveriesFailed;
        /// @notice Part of `stake` held by bids' bonds (see `bidBond`).
        uint256 lockedBonds;
    }

    /// @dev Laid out so that an eligibility check reads one slot and a reservation two.
    struct Record {
        // slot: capacity, status and the attribute epoch (read by every bid)
        uint64 cpuCapacity;
        uint64 memoryCapacity;
        uint64 storageCapacity;
        uint32 attributeEpoch;
        ProviderStatus status;
        // set when a slash takes the stake below minimumStake, cleared by a top-up: kept here
        // so that every eligibility check reads it with the capacity, at no extra cost
        bool belowMinimumStake;
        // bids holding a bond (each `bidBond`): in the slot a bid already reads, so locking
        // costs one warm write
        uint16 lockedBonds;
        // slot: what the marketplace has allocated
        uint64 cpuAllocated;
        uint64 memoryAllocated;
        uint64 storageAllocated;
        uint32 activeLeases;
        // slot: stake bookkeeping and the delivery record
        uint128 stake;
        uint64 unbondingEnds;
        uint32 deliveriesConfirmed;
        uint32 deliveriesFailed;
        string endpoint;
        bytes32 gatewayCertSha256;
        bytes32[] attributes;
        bytes32[] gpuModels;
    }

    struct GpuSlot {
        uint32 capacity;
        uint32 allocated;
    }

    /// @dev One auditor's record of one provider: how many attributes it attests now, and how
    /// many attestations it has revoked (only grows; see `auditEpoch`).
    struct AuditRecord {
        uint32 attested;
        uint32 revocations;
    }

    uint256 public constant MAX_ENDPOINT_LENGTH = 256;
    uint256 public constant MAX_ATTRIBUTES = 32;
    uint256 public constant MAX_GPU_MODELS = 16;
    uint64 public constant MAX_UNBONDING_PERIOD = 365 days;
    uint16 public constant MAX_DELIVERY_SLASH_BPS = 5000;
    uint16 private constant BPS = 10_000;
    /// @notice Bids one provider may have holding a bond at once.
    uint256 public constant MAX_LOCKED_BONDS = type(uint16).max;
    /// @notice Longest name `publishNames` takes: the longest concrete GPU model string (four
    /// parts of `GpuModels.MAX_PART_LENGTH` and three `/`).
    uint256 public constant MAX_NAME_LENGTH = 4 * GpuModels.MAX_PART_LENGTH + 3;
    /// @notice Names per `publishNames` call: one registration's attributes and GPU models.
    uint256 public constant MAX_NAMES = MAX_ATTRIBUTES + MAX_GPU_MODELS;

    IERC20 public immutable stakeToken;
    uint256 public immutable minimumStake;
    uint64 public immutable unbondingPeriod;
    /// @notice Share of its stake (basis points) a provider loses to the tenant per undelivered lease.
    uint16 public immutable deliverySlashBps;
    /// @notice Part of its stake a provider locks per bid (see the contract's notice).
    uint256 public immutable bidBond;
    address public immutable deployer;
    address public marketplace;

    mapping(address provider => Record) private _records;
    mapping(address provider => mapping(bytes32 modelKey => GpuSlot)) private _gpus;
    /// @dev An attribute is held when its stored epoch equals the provider's current epoch, so
    /// replacing the attribute set never has to clear the old entries.
    mapping(address provider => mapping(bytes32 attribute => uint32 epoch)) private _attributeEpochs;
    address[] private _providerList;
    mapping(address provider => mapping(address auditor => AuditRecord)) private _audits;
    mapping(address provider => mapping(address auditor => mapping(bytes32 attribute => bool))) private _attestations;
    /// @dev Bit `bidId` set: that bid of the order holds a bond. One slot per order, so only an
    /// order's first bid pays for a new slot; the Marketplace resolves a slot's bond before it
    /// reuses the slot (eviction).
    mapping(uint256 orderId => uint256 bits) private _lockedBondBits;
    /// @notice Whether `KeyNamed` was emitted for `key` (see `publishNames`).
    mapping(bytes32 key => bool) public named;

    event MarketplaceBound(address indexed marketplace);
    event ProviderRegistered(
        address indexed provider,
        string endpoint,
        bytes32 gatewayCertSha256,
        bytes32[] attributes,
        Resources capacity,
        GpuCapacity[] gpus,
        uint256 stake
    );
    event ProviderUpdated(
        address indexed provider,
        string endpoint,
        bytes32 gatewayCertSha256,
        bytes32[] attributes,
        Resources capacity,
        GpuCapacity[] gpus
    );
    event ProviderDeregistered(address indexed provider, uint64 unbondingEnds);
    event StakeWithdrawn(address indexed provider, uint256 amount);
    event DeliveryRecorded(address indexed provider, uint32 deliveriesConfirmed);
    event StakeSlashed(address indexed provider, address indexed tenant, uint256 amount, uint32 deliveriesFailed);
    event StakeAdded(address indexed provider, uint256 amount, uint256 stake);
    /// @notice `key` is keccak256 of the bytes of `name`: the string an attribute or GPU model key
    /// was hashed from (`region=eu-west`, `nvidia/a100/80Gi/sxm`). Emitted once per key.
    event KeyNamed(bytes32 indexed key, string name);
    event AttributeAttested(address indexed auditor, address indexed provider, bytes32 indexed attribute);
    event AttestationRevoked(address indexed auditor, address indexed provider, bytes32 indexed attribute);
    event BondReleased(uint256 indexed orderId, uint256 bidId, address indexed provider, uint256 amount);
    /// @notice `amount` of the provider's stake is now claimable by `tenant` (`claim`).
    event BondForfeited(
        uint256 indexed orderId, uint256 bidId, address indexed provider, address indexed tenant, uint256 amount
    );

    error NotDeployer(address caller);
    error NotMarketplace(address caller);
    error MarketplaceAlreadyBound(address marketplace);
    error ZeroAddress();
    error MinimumStakeOutOfRange(uint256 minimumStake);
    error UnbondingPeriodTooLong(uint64 unbondingPeriod, uint64 max);
    error DeliverySlashOutOfRange(uint16 deliverySlashBps, uint16 max);
    error AlreadyRegistered(address provider);
    error NotActive(address provider);
    error NotUnbonding(address provider);
    error StillUnbonding(address provider, uint64 unbondingEnds);
    error HasActiveLeases(address provider, uint32 activeLeases);
    error EndpointLengthOutOfRange(uint256 length, uint256 max);
    /// @notice Every gateway serves TLS: a registration without its certificate's fingerprint
    /// would leave tenants nothing to pin.
    error ZeroGatewayCertificate();
    error TooManyAttributes(uint256 count, uint256 max);
    error TooManyGpuModels(uint256 count, uint256 max);
    error ZeroAttribute(uint256 index);
    error ZeroGpuModelKey(uint256 index);
    error ZeroGpuCount(bytes32 modelKey);
    error DuplicateGpuModel(bytes32 modelKey);
    error ZeroCapacity(string field);
    error CapacityBelowAllocated(string field, uint256 capacity, uint256 allocated);
    error GpuCapacityBelowAllocated(bytes32 modelKey, uint32 capacity, uint32 allocated);
    error InsufficientCapacity(address provider);
    error NoAttributes();
    error ZeroAmount();
    error AlreadyAttested(address auditor, address provider, bytes32 attribute);
    error NotAttested(address auditor, address provider, bytes32 attribute);
    error TooManyNames(uint256 count, uint256 max);
    /// @notice `names[index]` is empty or longer than `max` bytes.
    error NameLengthOutOfRange(uint256 index, uint256 length, uint256 max);
    error BidBondOutOfRange(uint256 bidBond, uint256 max);
    /// @notice The stake not locked by other bids' bonds does not cover one more bond (or the
    /// provider already holds MAX_LOCKED_BONDS bonds).
    error FreeStakeBelowBond(address provider, uint256 freeStake, uint256 bidBond);
    /// @notice Bonds of standing bids still hold part of the stake: `releaseBonds` once their
    /// orders have ended.
    error BondsLocked(address provider, uint256 lockedBonds);
    /// @notice The order is open and not expired: its bids' bonds are still at stake.
    error OrderNotEnded(uint256 orderId, uint64 expiresAt);
    // The Marketplace's errors for an ineligible bidder and a bad auditor list, raised here
    // (`revertIneligible`, `checkAuditors`) to keep the Marketplace within EIP-170; the
    // Marketplace declares the same errors, so its ABI decodes them.
    error ProviderNotActive(address provider);
    error ProviderLacksAttribute(address provider, bytes32 attribute);
    error ProviderLacksGpuModel(address provider, bytes32 gpuModel);
    error ProviderLacksCapacity(address provider);
    error ProviderNotAudited(address provider, address auditor);
    error ProviderStakeBelowMinimum(address provider);
    error TooManyAuditors(uint256 count, uint256 max);
    error InvalidAuditor(address auditor);

    modifier onlyMarketplace() {
        if (msg.sender != marketplace) revert NotMarketplace(msg.sender);
        _;
    }

    /// @param stakeToken_ ERC-20 the stake is paid in (fee-less tokens only).
    /// @param minimumStake_ Stake pulled from each provider at registration (> 0, < 2^128).
    /// @param unbondingPeriod_ Seconds between `deregister` and `withdrawStake` (<= 365 days).
    /// @param deliverySlashBps_ Share of the stake slashed per undelivered lease (<= 5000 bps).
    /// @param bidBond_ Stake locked per bid (<= minimumStake; zero: no bonds).
    constructor(
        IERC20 stakeToken_,
        uint256 minimumStake_,
        uint64 unbondingPeriod_,
        uint16 deliverySlashBps_,
        uint256 bidBond_
    ) {
        if (address(stakeToken_) == address(0)) revert ZeroAddress();
        if (minimumStake_ == 0 || minimumStake_ > type(uint128).max) revert MinimumStakeOutOfRange(minimumStake_);
        if (unbondingPeriod_ > MAX_UNBONDING_PERIOD) {
            revert UnbondingPeriodTooLong(unbondingPeriod_, MAX_UNBONDING_PERIOD);
        }
        if (deliverySlashBps_ > MAX_DELIVERY_SLASH_BPS) {
            revert DeliverySlashOutOfRange(deliverySlashBps_, MAX_DELIVERY_SLASH_BPS);
        }
        if (bidBond_ > minimumStake_) revert BidBondOutOfRange(bidBond_, minimumStake_);
        deliverySlashBps = deliverySlashBps_;
        bidBond = bidBond_;
        stakeToken = stakeToken_;
        minimumStake = minimumStake_;
        unbondingPeriod = unbondingPeriod_;
        deployer = msg.sender;
    }

    /// @notice Binds the Marketplace allowed to reserve and release capacity. Once, by the deployer.
    function initialize(address marketplace_) external {
        if (msg.sender != deployer) revert NotDeployer(msg.sender);
        if (marketplace != address(0)) revert MarketplaceAlreadyBound(marketplace);
        if (marketplace_ == address(0)) revert ZeroAddress();
        marketplace = marketplace_;
        emit MarketplaceBound(marketplace_);
    }

    // ---------------------------------------------------------------- provider lifecycle

    /// @notice Registers the caller and pulls `minimumStake` of the stake token from it.
    /// `gatewayCertSha256` is the SHA-256 of the DER certificate the gateway serves.
    function register(
        string calldata endpoint,
        bytes32 gatewayCertSha256,
        bytes32[] calldata attributes,
        Resources calldata capacity,
        GpuCapacity[] calldata gpus
    ) external nonReentrant {
        Record storage rec = _records[msg.sender];
        if (rec.status != ProviderStatus.None) revert AlreadyRegistered(msg.sender);
        if (rec.attributeEpoch == 0) _providerList.push(msg.sender);

        _writeProfile(rec, msg.sender, endpoint, gatewayCertSha256, attributes, capacity, gpus);
        rec.status = ProviderStatus.Active;
        rec.stake = uint128(minimumStake);
        rec.belowMinimumStake = false;
        rec.unbondingEnds = 0;
        emit ProviderRegistered(msg.sender, endpoint, gatewayCertSha256, attributes, capacity, gpus, minimumStake);

        stakeToken.pullExact(msg.sender, minimumStake);
    }

    /// @notice Replaces the caller's endpoint, gateway certificate fingerprint, attributes and
    /// capacity. Capacity may not drop below what is allocated to running leases.
    function update(
        string calldata endpoint,
        bytes32 gatewayCertSha256,
        bytes32[] calldata attributes,
        Resources calldata capacity,
        GpuCapacity[] calldata gpus
    ) external {
        Record storage rec = _records[msg.sender];
        if (rec.status != ProviderStatus.Active) revert NotActive(msg.sender);
        _writeProfile(rec, msg.sender, endpoint, gatewayCertSha256, attributes, capacity, gpus);
        emit ProviderUpdated(msg.sender, endpoint, gatewayCertSha256, attributes, capacity, gpus);
    }

    /// @notice Publishes the strings keys are hashed from, so that clients can show
    /// `nvidia/a100/80Gi/sxm` instead of its hash. Anyone may call it and nothing can lie: the
    /// key is computed here as keccak256 of the name's bytes, the rule of every attribute and
    /// GPU model key. Names already published are skipped (no event), so the log holds one
    /// `KeyNamed` per key however often providers re-publish.
    function publishNames(string[] calldata names) external {
        if (names.length > MAX_NAMES) revert TooManyNames(names.length, MAX_NAMES);
        for (uint256 i = 0; i < names.length; ++i) {
            bytes calldata name = bytes(names[i]);
            if (name.length == 0 || name.length > MAX_NAME_LENGTH) {
                revert NameLengthOutOfRange(i, name.length, MAX_NAME_LENGTH);
            }
            bytes32 key = keccak256(name);
            if (named[key]) continue;
            named[key] = true;
            emit KeyNamed(key, names[i]);
        }
    }

    /// @notice Stops taking work and starts the unbonding period. Not possible with active leases.
    function deregister() external {
        Record storage rec = _records[msg.sender];
        if (rec.status != ProviderStatus.Active) revert NotActive(msg.sender);
        if (rec.activeLeases != 0) revert HasActiveLeases(msg.sender, rec.activeLeases);
        uint64 ends = uint64(block.timestamp) + unbondingPeriod;
        rec.status = ProviderStatus.Unbonding;
        rec.unbondingEnds = ends;
        emit ProviderDeregistered(msg.sender, ends);
    }

    /// @notice Returns the stake once the unbonding period is over; the provider may register again.
    /// A failed transfer is credited (`claim`), so leaving never depends on the token. Not while
    /// bids' bonds are locked (`releaseBonds` once their orders ended).
    function withdrawStake() external nonReentrant {
        Record storage rec = _records[msg.sender];
        if (rec.status != ProviderStatus.Unbonding) revert NotUnbonding(msg.sender);
        if (block.timestamp < rec.unbondingEnds) revert StillUnbonding(msg.sender, rec.unbondingEnds);
        if (rec.lockedBonds != 0) revert BondsLocked(msg.sender, uint256(rec.lockedBonds) * bidBond);
        uint256 amount = rec.stake;
        rec.stake = 0;
        rec.status = ProviderStatus.None;
        rec.unbondingEnds = 0;
        emit StakeWithdrawn(msg.sender, amount);
        _payOrCredit(stakeToken, msg.sender, amount);
    }

    /// @notice Adds `amount` of the stake token to the caller's stake: a provider slashed below
    /// `minimumStake` may bid and win again once the stake reaches it.
    function addStake(uint256 amount) external nonReentrant {
        Record storage rec = _records[msg.sender];
        if (rec.status == ProviderStatus.None) revert NotActive(msg.sender);
        if (amount == 0) revert ZeroAmount();
        uint256 stake = uint256(rec.stake) + amount;
        if (stake > type(uint128).max) revert MinimumStakeOutOfRange(stake);
        rec.stake = uint128(stake);
        if (stake >= minimumStake) rec.belowMinimumStake = false;
        emit StakeAdded(msg.sender, amount, stake);
        stakeToken.pullExact(msg.sender, amount);
    }

    /// @notice Resolves the bonds of an order's bids once the order has ended (leased,
    /// cancelled, or expired unmatched). Anyone may call it: a bid still marked withdrawn (by
    /// its provider, or skipped by `settle`) forfeits its bond to the order's tenant, any other
    /// gets it back. Bids whose bond is already resolved are passed over, so calls may overlap.
    /// Worst case 16 bids: `test_gas_releaseBonds_sixteenBids`.
    function releaseBonds(uint256 orderId, uint256[] calldata bidIds) external {
        Marketplace market = Marketplace(marketplace);
        Marketplace.OrderView memory order = market.getOrder(orderId);
        if (order.status == Marketplace.OrderStatus.Open && block.timestamp < order.expiresAt) {
            revert OrderNotEnded(orderId, order.expiresAt);
        }
        for (uint256 i = 0; i < bidIds.length; ++i) {
            uint256 bidId = bidIds[i];
            if (!bondLocked(orderId, bidId)) continue;
            Marketplace.BidView memory bid = market.getBid(orderId, bidId);
            _resolveBond(orderId, bidId, bid.provider, bid.withdrawn ? order.tenant : address(0));
        }
    }

    // ---------------------------------------------------------------- auditors

    /// @notice The caller, as an auditor, attests that `provider` holds each of `attributes`
    /// (Akash's `signedBy`: orders may require attestations by given auditors). Anyone may
    /// audit; tenants choose whose attestations they trust. The provider need not be registered.
    function attest(address provider, bytes32[] calldata attributes) external {
        _requireAttestable(provider, attributes);
        mapping(bytes32 => bool) storage attested = _attestations[provider][msg.sender];
        for (uint256 i = 0; i < attributes.length; ++i) {
            bytes32 attribute = attributes[i];
            if (attribute == bytes32(0)) revert ZeroAttribute(i);
            if (attested[attribute]) revert AlreadyAttested(msg.sender, provider, attribute);
            attested[attribute] = true;
            emit AttributeAttested(msg.sender, provider, attribute);
        }
        _audits[provider][msg.sender].attested += uint32(attributes.length);
    }

    /// @notice Withdraws the caller's attestations of `attributes` for `provider`. Bids that
    /// relied on this auditor no longer win (`auditEpoch` changes).
    function revoke(address provider, bytes32[] calldata attributes) external {
        _requireAttestable(provider, attributes);
        mapping(bytes32 => bool) storage attested = _attestations[provider][msg.sender];
        for (uint256 i = 0; i < attributes.length; ++i) {
            bytes32 attribute = attributes[i];
            if (!attested[attribute]) revert NotAttested(msg.sender, provider, attribute);
            attested[attribute] = false;
            emit AttestationRevoked(msg.sender, provider, attribute);
        }
        AuditRecord storage record = _audits[provider][msg.sender];
        record.attested -= uint32(attributes.length);
        record.revocations += uint32(attributes.length);
    }

    // ---------------------------------------------------------------- marketplace hooks

    /// @notice Locks `bidBond` of the provider's stake for its new bid `bidId` on `orderId`
    /// (the `BidPlaced` event says it); reverts `FreeStakeBelowBond` unless the stake not yet
    /// locked covers it.
    function lockBond(uint256 orderId, uint256 bidId, address provider) external onlyMarketplace {
        uint256 bond = bidBond;
        if (bond == 0) return;
        Record storage rec = _records[provider];
        uint256 count = uint256(rec.lockedBonds) + 1;
        uint256 stake = rec.stake;
        uint256 locked = count * bond;
        if (locked > stake || count > MAX_LOCKED_BONDS) {
            revert FreeStakeBelowBond(provider, stake + bond > locked ? stake + bond - locked : 0, bond);
        }
        rec.lockedBonds = uint16(count);
        _lockedBondBits[orderId] |= 1 << bidId;
    }

    /// @notice Resolves the bond of a bid the Marketplace evicts: forfeited to `forfeitTo`, or
    /// released when it is zero.
    function resolveBond(uint256 orderId, uint256 bidId, address provider, address forfeitTo) external onlyMarketplace {
        if (bondLocked(orderId, bidId)) _resolveBond(orderId, bidId, provider, forfeitTo);
    }

    /// @notice Allocates resources to a lease; reverts when they do not fit.
    function reserve(address provider, Resources calldata amount, bytes32 gpuModel, uint32 gpuCount)
        external
        onlyMarketplace
    {
        if (_tryReserve(provider, amount, gpuModel, gpuCount, 0) != Eligibility.Eligible) {
            revert InsufficientCapacity(provider);
        }
    }

    /// @notice Allocates resources to a lease when the provider is still eligible: active, with
    /// room, and, when `attributeEpoch_` is non-zero, with the attribute set of that epoch (the
    /// one checked when it bid). Nothing changes unless the result is Eligible.
    function tryReserve(
        address provider,
        Resources calldata amount,
        bytes32 gpuModel,
        uint32 gpuCount,
        uint32 attributeEpoch_
    ) external onlyMarketplace returns (Eligibility result) {
        return _tryReserve(provider, amount, gpuModel, gpuCount, attributeEpoch_);
    }

    /// @notice Counts a confirmed delivery.
    function recordDelivery(address provider) external onlyMarketplace {
        Record storage rec = _records[provider];
        uint32 confirmed = rec.deliveriesConfirmed + 1;
        rec.deliveriesConfirmed = confirmed;
        emit DeliveryRecorded(provider, confirmed);
    }

    /// @notice Counts a failed delivery and moves `deliverySlashBps` of the provider's stake to
    /// the tenant (credited when the transfer fails).
    /// @return slashed The amount taken from the stake.
    function slashForFailedDelivery(address provider, address tenant)
        external
        onlyMarketplace
        returns (uint256 slashed)
    {
        Record storage rec = _records[provider];
        uint128 stake = rec.stake;
        slashed = uint256(stake) * deliverySlashBps / BPS;
        rec.stake = stake - uint128(slashed);
        if (rec.stake < minimumStake) rec.belowMinimumStake = true;
        uint32 failed = rec.deliveriesFailed + 1;
        rec.deliveriesFailed = failed;
        emit StakeSlashed(provider, tenant, slashed, failed);
        _payOrCredit(stakeToken, tenant, slashed);
    }

    /// @notice Returns a closed lease's resources. Underflow is impossible by construction and
    /// would revert rather than wrap.
    function release(address provider, Resources calldata amount, bytes32 gpuModel, uint32 gpuCount)
        external
        onlyMarketplace
    {
        Record storage rec = _records[provider];
        rec.cpuAllocated -= amount.cpuMilli;
        rec.memoryAllocated -= amount.memoryMiB;
        rec.storageAllocated -= amount.storageMiB;
        rec.activeLeases -= 1;
        if (gpuCount != 0) _gpus[provider][gpuModel].allocated -= gpuCount;
    }

    // ---------------------------------------------------------------- views

    /// @notice Always reverts, with the Marketplace's error for `result` (`detail`: the missing
    /// attribute or GPU model); `ProviderLacksCapacity` for insufficient capacity (and Eligible,
    /// which no caller passes).
    function revertIneligible(Eligibility result, address provider, bytes32 detail) public pure {
        if (result == Eligibility.NotActive) revert ProviderNotActive(provider);
        if (result == Eligibility.MissingAttribute) revert ProviderLacksAttribute(provider, detail);
        if (result == Eligibility.GpuModelNotOffered) revert ProviderLacksGpuModel(provider, detail);
        if (result == Eligibility.NotAudited) revert ProviderNotAudited(provider, address(0));
        if (result == Eligibility.StakeBelowMinimum) revert ProviderStakeBelowMinimum(provider);
        revert ProviderLacksCapacity(provider);
    }

    /// @notice Reverts unless an order's `signedBy` lists hold at most `max` auditors together,
    /// none zero and none named twice (in one list or across both).
    function checkAuditors(address[] calldata allOf, address[] calldata anyOf, uint256 max) external pure {
        uint256 count = allOf.length + anyOf.length;
        if (count > max) revert TooManyAuditors(count, max);
        for (uint256 i = 0; i < count; ++i) {
            address auditor = i < allOf.length ? allOf[i] : anyOf[i - allOf.length];
            if (auditor == address(0)) revert InvalidAuditor(auditor);
            for (uint256 j = 0; j < i; ++j) {
                if (auditor == (j < allOf.length ? allOf[j] : anyOf[j - allOf.length])) revert InvalidAuditor(auditor);
            }
        }
    }

    /// @notice Whether `provider` may bid on an order needing `attributes`, `amount` and
    /// `gpuCount` GPUs of `gpuModel` (zero model with zero count for CPU-only orders).
    /// Compares against total registered capacity; free room is checked when a lease is created.
    /// @return result Eligible or the first reason it is not.
    /// @return detail The missing attribute or GPU model, if any.
    function checkEligibility(
        address provider,
        bytes32[] calldata attributes,
        Resources calldata amount,
        bytes32 gpuModel,
        uint32 gpuCount
    ) public view returns (Eligibility result, bytes32 detail) {
        Record storage rec = _records[provider];
        if (rec.status != ProviderStatus.Active) return (Eligibility.NotActive, bytes32(0));
        if (rec.belowMinimumStake) return (Eligibility.StakeBelowMinimum, bytes32(0));
        if (
            amount.cpuMilli > rec.cpuCapacity || amount.memoryMiB > rec.memoryCapacity
                || amount.storageMiB > rec.storageCapacity
        ) return (Eligibility.InsufficientCapacity, bytes32(0));
        uint32 epoch = rec.attributeEpoch;
        mapping(bytes32 => uint32) storage held = _attributeEpochs[provider];
        for (uint256 i = 0; i < attributes.length; ++i) {
            if (held[attributes[i]] != epoch) return (Eligibility.MissingAttribute, attributes[i]);
        }
        if (gpuCount != 0 && _gpus[provider][gpuModel].capacity < gpuCount) {
            return (Eligibility.GpuModelNotOffered, gpuModel);
        }
        return (Eligibility.Eligible, bytes32(0));
    }

    /// @notice `checkEligibility` that reverts with the reason (see `revertIneligible`).
    function requireEligible(
        address provider,
        bytes32[] calldata attributes,
        Resources calldata amount,
        bytes32 gpuModel,
        uint32 gpuCount
    ) external view {
        (Eligibility result, bytes32 detail) = checkEligibility(provider, attributes, amount, gpuModel, gpuCount);
        if (result != Eligibility.Eligible) revertIneligible(result, provider, detail);
    }

    /// @notice Whether bid `bidId` of `orderId` still holds a bond.
    function bondLocked(uint256 orderId, uint256 bidId) public view returns (bool) {
        return _lockedBondBits[orderId] & (1 << bidId) != 0;
    }

    function isAttested(address auditor, address provider, bytes32 attribute) external view returns (bool) {
        return _attestations[provider][auditor][attribute];
    }

    /// @notice How many attributes `auditor` attests for `provider` now, and how many it revoked.
    function auditRecord(address auditor, address provider)
        external
        view
        returns (uint32 attested, uint32 revocations)
    {
        AuditRecord storage record = _audits[provider][auditor];
        return (record.attested, record.revocations);
    }

    /// @notice Akash's `signedBy` rule: every `allOf` auditor, and at least one `anyOf` auditor
    /// when that list is not empty, attests every one of `attributes` for `provider` (with no
    /// attributes: attests something for it). The provider's own attributes are checked apart.
    /// @return audited Whether the rule holds.
    /// @return missing The first `allOf` auditor that does not attest (zero when `anyOf` fails).
    /// @return epoch `auditEpoch` of these auditors, for the match-time re-check.
    function checkAudit(
        address provider,
        bytes32[] calldata attributes,
        address[] calldata allOf,
        address[] calldata anyOf
    ) external view returns (bool audited, address missing, uint64 epoch) {
        for (uint256 i = 0; i < allOf.length; ++i) {
            if (!_attestsAll(allOf[i], provider, attributes)) return (false, allOf[i], 0);
        }
        bool anyAudited = anyOf.length == 0;
        for (uint256 i = 0; i < anyOf.length && !anyAudited; ++i) {
            anyAudited = _attestsAll(anyOf[i], provider, attributes);
        }
        if (!anyAudited) return (false, address(0), 0);
        return (true, address(0), auditEpoch(provider, allOf, anyOf));
    }

    /// @notice The revocations these auditors ever made for `provider`, summed. Attestations are
    /// only ever removed by a revocation, so while this stays the same a passed `checkAudit`
    /// still holds: the Marketplace records it at bid time and compares it at match time.
    function auditEpoch(address provider, address[] calldata allOf, address[] calldata anyOf)
        public
        view
        returns (uint64 epoch)
    {
        mapping(address => AuditRecord) storage audits = _audits[provider];
        for (uint256 i = 0; i < allOf.length; ++i) {
            epoch += audits[allOf[i]].revocations;
        }
        for (uint256 i = 0; i < anyOf.length; ++i) {
            epoch += audits[anyOf[i]].revocations;
        }
    }

    /// @notice Changes whenever the provider's attribute set changes (never zero once registered).
    function attributeEpoch(address provider) external view returns (uint32) {
        return _records[provider].attributeEpoch;
    }

    function isActive(address provider) external view returns (bool) {
        return _records[provider].status == ProviderStatus.Active;
    }

    function hasAttribute(address provider, bytes32 attribute) external view returns (bool) {
        Record storage rec = _records[provider];
        return rec.status != ProviderStatus.None && _attributeEpochs[provider][attribute] == rec.attributeEpoch;
    }

    function gpuState(address provider, bytes32 modelKey) external view returns (uint32 capacity, uint32 allocated) {
        GpuSlot storage slot = _gpus[provider][modelKey];
        return (slot.capacity, slot.allocated);
    }

    function getProvider(address provider) external view returns (ProviderView memory info) {
        Record storage rec = _records[provider];
        info.status = rec.status;
        info.stake = rec.stake;
        info.unbondingEnds = rec.unbondingEnds;
        info.activeLeases = rec.activeLeases;
        info.deliveriesConfirmed = rec.deliveriesConfirmed;
        info.deliveriesFailed = rec.deliveriesFailed;
        info.lockedBonds = uint256(rec.lockedBonds) * bidBond;
        if (rec.status == ProviderStatus.None) return info;
        info.endpoint = rec.endpoint;
        info.gatewayCertSha256 = rec.gatewayCertSha256;
        info.attributes = rec.attributes;
        info.capacity = Resources(rec.cpuCapacity, rec.memoryCapacity, rec.storageCapacity);
        info.allocated = Resources(rec.cpuAllocated, rec.memoryAllocated, rec.storageAllocated);
        bytes32[] storage models = rec.gpuModels;
        info.gpus = new GpuModelState[](models.length);
        for (uint256 i = 0; i < models.length; ++i) {
            GpuSlot storage slot = _gpus[provider][models[i]];
            info.gpus[i] = GpuModelState(models[i], slot.capacity, slot.allocated);
        }
    }

    /// @notice The accounting part of `getProvider`, without the endpoint and lists.
    function resourceState(address provider)
        external
        view
        returns (
            ProviderStatus status,
            Resources memory capacity,
            Resources memory allocated,
            uint32 activeLeases,
            uint256 stake
        )
    {
        Record storage rec = _records[provider];
        return (
            rec.status,
            Resources(rec.cpuCapacity, rec.memoryCapacity, rec.storageCapacity),
            Resources(rec.cpuAllocated, rec.memoryAllocated, rec.storageAllocated),
            rec.activeLeases,
            rec.stake
        );
    }

    /// @notice Number of addresses that ever registered (for discovery; check their status).
    function providerCount() external view returns (uint256) {
        return _providerList.length;
    }

    function providerAt(uint256 index) external view returns (address) {
        return _providerList[index];
    }

    // ---------------------------------------------------------------- internals

    /// @dev A forfeit is credited, never pushed: it happens inside other parties' calls, which
    /// must not depend on the tenant's address accepting a transfer. It takes at most the
    /// stake, which a slash may have taken below the locked bonds.
    function _resolveBond(uint256 orderId, uint256 bidId, address provider, address forfeitTo) private {
        _lockedBondBits[orderId] &= ~(1 << bidId);
        Record storage rec = _records[provider];
        rec.lockedBonds -= 1;
        uint256 bond = bidBond;
        if (forfeitTo == address(0)) {
            emit BondReleased(orderId, bidId, provider, bond);
            return;
        }
        uint128 stake = rec.stake;
        uint128 amount = bond < stake ? uint128(bond) : stake;
        rec.stake = stake - amount;
        if (stake - amount < minimumStake) rec.belowMinimumStake = true;
        claimable[stakeToken][forfeitTo] += amount;
        emit BondForfeited(orderId, bidId, provider, forfeitTo, amount);
    }

    function _tryReserve(
        address provider,
        Resources calldata amount,
        bytes32 gpuModel,
        uint32 gpuCount,
        uint32 attributeEpoch_
    ) private returns (Eligibility) {
        Record storage rec = _records[provider];
        if (rec.status != ProviderStatus.Active) return Eligibility.NotActive;
        if (rec.belowMinimumStake) return Eligibility.StakeBelowMinimum;
        if (attributeEpoch_ != 0 && attributeEpoch_ != rec.attributeEpoch) return Eligibility.MissingAttribute;
        uint256 cpu = uint256(rec.cpuAllocated) + amount.cpuMilli;
        uint256 memory_ = uint256(rec.memoryAllocated) + amount.memoryMiB;
        uint256 storage_ = uint256(rec.storageAllocated) + amount.storageMiB;
        if (cpu > rec.cpuCapacity || memory_ > rec.memoryCapacity || storage_ > rec.storageCapacity) {
            return Eligibility.InsufficientCapacity;
        }
        if (gpuCount != 0) {
            GpuSlot storage slot = _gpus[provider][gpuModel];
            uint256 gpus = uint256(slot.allocated) + gpuCount;
            if (gpus > slot.capacity) {
                return slot.capacity == 0 ? Eligibility.GpuModelNotOffered : Eligibility.InsufficientCapacity;
            }
            slot.allocated = uint32(gpus);
        }
        rec.cpuAllocated = uint64(cpu);
        rec.memoryAllocated = uint64(memory_);
        rec.storageAllocated = uint64(storage_);
        rec.activeLeases += 1;
        return Eligibility.Eligible;
    }

    function _requireAttestable(address provider, bytes32[] calldata attributes) private pure {
        if (provider == address(0)) revert ZeroAddress();
        if (attributes.length == 0) revert NoAttributes();
        if (attributes.length > MAX_ATTRIBUTES) revert TooManyAttributes(attributes.length, MAX_ATTRIBUTES);
    }

    function _attestsAll(address auditor, address provider, bytes32[] calldata attributes) private view returns (bool) {
        if (_audits[provider][auditor].attested == 0) return false;
        mapping(bytes32 => bool) storage attested = _attestations[provider][auditor];
        for (uint256 i = 0; i < attributes.length; ++i) {
            if (!attested[attributes[i]]) return false;
        }
        return true;
    }

    function _writeProfile(
        Record storage rec,
        address provider,
        string calldata endpoint,
        bytes32 gatewayCertSha256,
        bytes32[] calldata attributes,
        Resources calldata capacity,
        GpuCapacity[] calldata gpus
    ) private {
        uint256 endpointLength = bytes(endpoint).length;
        if (endpointLength == 0 || endpointLength > MAX_ENDPOINT_LENGTH) {
            revert EndpointLengthOutOfRange(endpointLength, MAX_ENDPOINT_LENGTH);
        }
        if (gatewayCertSha256 == bytes32(0)) revert ZeroGatewayCertificate();
        if (attributes.length > MAX_ATTRIBUTES) revert TooManyAttributes(attributes.length, MAX_ATTRIBUTES);
        if (gpus.length > MAX_GPU_MODELS) revert TooManyGpuModels(gpus.length, MAX_GPU_MODELS);
        if (capacity.cpuMilli == 0) revert ZeroCapacity("cpuMilli");
        if (capacity.memoryMiB == 0) revert ZeroCapacity("memoryMiB");
        if (capacity.cpuMilli < rec.cpuAllocated) {
            revert CapacityBelowAllocated("cpuMilli", capacity.cpuMilli, rec.cpuAllocated);
        }
        if (capacity.memoryMiB < rec.memoryAllocated) {
            revert CapacityBelowAllocated("memoryMiB", capacity.memoryMiB, rec.memoryAllocated);
        }
        if (capacity.storageMiB < rec.storageAllocated) {
            revert CapacityBelowAllocated("storageMiB", capacity.storageMiB, rec.storageAllocated);
        }
        rec.cpuCapacity = capacity.cpuMilli;
        rec.memoryCapacity = capacity.memoryMiB;
        rec.storageCapacity = capacity.storageMiB;
        rec.endpoint = endpoint;
        rec.gatewayCertSha256 = gatewayCertSha256;

        // A new epoch only when the set changes: bids on orders requiring attributes remember
        // the epoch they were checked at, and an unchanged set must not invalidate them.
        if (rec.attributeEpoch == 0 || !_sameAttributes(rec.attributes, attributes)) {
            uint32 epoch = rec.attributeEpoch + 1;
            rec.attributeEpoch = epoch;
            mapping(bytes32 => uint32) storage held = _attributeEpochs[provider];
            for (uint256 i = 0; i < attributes.length; ++i) {
                if (attributes[i] == bytes32(0)) revert ZeroAttribute(i);
                held[attributes[i]] = epoch;
            }
            rec.attributes = attributes;
        }

        _writeGpus(rec, provider, gpus);
    }

    function _sameAttributes(bytes32[] storage current, bytes32[] calldata next) private view returns (bool) {
        uint256 count = next.length;
        if (current.length != count) return false;
        for (uint256 i = 0; i < count; ++i) {
            if (current[i] != next[i]) return false;
        }
        return true;
    }

    /// @dev Zeroes the capacity of every previously offered model, writes the new list, then
    /// requires every old model's allocation to still fit (a removed model must be idle).
    function _writeGpus(Record storage rec, address provider, GpuCapacity[] calldata gpus) private {
        mapping(bytes32 => GpuSlot) storage slots = _gpus[provider];
        bytes32[] storage oldModels = rec.gpuModels;
        uint256 oldCount = oldModels.length;
        bytes32[] memory previous = new bytes32[](oldCount);
        for (uint256 i = 0; i < oldCount; ++i) {
            previous[i] = oldModels[i];
            slots[previous[i]].capacity = 0;
        }
        delete rec.gpuModels;
        for (uint256 i = 0; i < gpus.length; ++i) {
            bytes32 key = gpus[i].modelKey;
            if (key == bytes32(0)) revert ZeroGpuModelKey(i);
            if (gpus[i].count == 0) revert ZeroGpuCount(key);
            GpuSlot storage slot = slots[key];
            if (slot.capacity != 0) revert DuplicateGpuModel(key);
            if (gpus[i].count < slot.allocated) revert GpuCapacityBelowAllocated(key, gpus[i].count, slot.allocated);
            slot.capacity = gpus[i].count;
            rec.gpuModels.push(key);
        }
        for (uint256 i = 0; i < oldCount; ++i) {
            GpuSlot storage slot = slots[previous[i]];
            if (slot.allocated > slot.capacity) {
                revert GpuCapacityBelowAllocated(previous[i], slot.capacity, slot.allocated);
            }
        }
    }
}
