//! The lease state machine, pure: no IO, no clock. The store persists it and
//! the daemon feeds it events from the chain follower, the gateway and the
//! runtime.
//!
//! ```text
//! Won ─ManifestWindowOpened─▶ AwaitingManifest ─ManifestReceived─▶ Deploying ─DeploySucceeded─▶ Running
//!  │                               │                                 │  ▲                          │
//!  └──────── deadline passed ──────┴──▶ Closing ◀── CloseRequested ──┤  └── DeployStarted ────────┘
//!                                          │                       DeployFailed ─▶ Failed
//!                                    ClosedOnChain ─▶ Closed (absorbing)
//! ```
//!
//! The chain follower may redeliver events, so an event that would lead to the
//! state the lease is already in succeeds and changes nothing.

use std::fmt;
use std::str::FromStr;

/// keccak256 of a manifest's canonical JSON, as carried by the on-chain order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ManifestHash(pub [u8; 32]);

/// A manifest hash that is not `0x` followed by 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("manifest hash `{0}`: expected 0x followed by 64 hex digits")]
pub struct InvalidManifestHash(pub String);

impl FromStr for ManifestHash {
    type Err = InvalidManifestHash;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidManifestHash(text.to_string());
        let digits = text.strip_prefix("0x").ok_or_else(invalid)?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(digits, &mut bytes).map_err(|_| invalid())?;
        Ok(Self(bytes))
    }
}

impl fmt::Display for ManifestHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", hex::encode(self.0))
    }
}

/// Why a lease is closing or closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The tenant never sent the manifest before the deadline.
    ManifestTimeout,
    /// The tenant closed the lease (or asked the provider to).
    TenantRequested,
    /// The provider decided to close (operator action, shutdown of the offer).
    ProviderRequested,
    /// The escrow ran dry.
    Insolvent,
    /// The workload could not be deployed and the provider gave up.
    DeployFailed,
    /// The chain reported the lease closed without a local request first.
    ClosedOnChain,
}

impl CloseReason {
    pub const ALL: [CloseReason; 6] = [
        CloseReason::ManifestTimeout,
        CloseReason::TenantRequested,
        CloseReason::ProviderRequested,
        CloseReason::Insolvent,
        CloseReason::DeployFailed,
        CloseReason::ClosedOnChain,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::ManifestTimeout => "manifest_timeout",
            CloseReason::TenantRequested => "tenant_requested",
            CloseReason::ProviderRequested => "provider_requested",
            CloseReason::Insolvent => "insolvent",
            CloseReason::DeployFailed => "deploy_failed",
            CloseReason::ClosedOnChain => "closed_on_chain",
        }
    }
}

/// A close reason name that none of [`CloseReason`] has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown close reason `{0}`")]
pub struct UnknownCloseReason(pub String);

impl FromStr for CloseReason {
    type Err = UnknownCloseReason;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        CloseReason::ALL
            .into_iter()
            .find(|reason| reason.as_str() == text)
            .ok_or_else(|| UnknownCloseReason(text.to_string()))
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a lease is. Times are unix seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseState {
    /// The chain created the lease; the tenant must send the manifest by the deadline.
    Won { manifest_deadline: u64 },
    /// The gateway accepts the manifest for this lease.
    AwaitingManifest { manifest_deadline: u64 },
    /// The manifest is here; the runtime is (re)creating the workload.
    Deploying { manifest_hash: ManifestHash },
    /// The workload runs.
    Running { manifest_hash: ManifestHash },
    /// The last deployment failed; a retry (`DeployStarted`) or a close follows.
    Failed {
        manifest_hash: ManifestHash,
        reason: String,
    },
    /// The lease is being torn down and closed on chain.
    Closing { reason: CloseReason },
    /// Gone on chain; nothing runs. No event leaves this state.
    Closed { reason: CloseReason },
}

/// The state names, as persisted and listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LeaseStateKind {
    Won,
    AwaitingManifest,
    Deploying,
    Running,
    Failed,
    Closing,
    Closed,
}

impl LeaseStateKind {
    pub const ALL: [LeaseStateKind; 7] = [
        LeaseStateKind::Won,
        LeaseStateKind::AwaitingManifest,
        LeaseStateKind::Deploying,
        LeaseStateKind::Running,
        LeaseStateKind::Failed,
        LeaseStateKind::Closing,
        LeaseStateKind::Closed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LeaseStateKind::Won => "won",
            LeaseStateKind::AwaitingManifest => "awaiting_manifest",
            LeaseStateKind::Deploying => "deploying",
            LeaseStateKind::Running => "running",
            LeaseStateKind::Failed => "failed",
            LeaseStateKind::Closing => "closing",
            LeaseStateKind::Closed => "closed",
        }
    }
}

/// A state name that none of [`LeaseStateKind`] has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown lease state `{0}`")]
pub struct UnknownLeaseState(pub String);

impl FromStr for LeaseStateKind {
    type Err = UnknownLeaseState;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        LeaseStateKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| UnknownLeaseState(text.to_string()))
    }
}

impl fmt::Display for LeaseStateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl LeaseState {
    pub fn kind(&self) -> LeaseStateKind {
        match self {
            LeaseState::Won { .. } => LeaseStateKind::Won,
            LeaseState::AwaitingManifest { .. } => LeaseStateKind::AwaitingManifest,
            LeaseState::Deploying { .. } => LeaseStateKind::Deploying,
            LeaseState::Running { .. } => LeaseStateKind::Running,
            LeaseState::Failed { .. } => LeaseStateKind::Failed,
            LeaseState::Closing { .. } => LeaseStateKind::Closing,
            LeaseState::Closed { .. } => LeaseStateKind::Closed,
        }
    }

    /// The manifest deadline while the lease still waits for its manifest.
    pub fn manifest_deadline(&self) -> Option<u64> {
        match self {
            LeaseState::Won { manifest_deadline }
            | LeaseState::AwaitingManifest { manifest_deadline } => Some(*manifest_deadline),
            _ => None,
        }
    }

    /// The manifest hash once the manifest has been received (and until closing).
    pub fn manifest_hash(&self) -> Option<ManifestHash> {
        match self {
            LeaseState::Deploying { manifest_hash }
            | LeaseState::Running { manifest_hash }
            | LeaseState::Failed { manifest_hash, .. } => Some(*manifest_hash),
            _ => None,
        }
    }

    /// The failure or close reason, as text.
    pub fn reason(&self) -> Option<String> {
        match self {
            LeaseState::Failed { reason, .. } => Some(reason.clone()),
            LeaseState::Closing { reason } | LeaseState::Closed { reason } => {
                Some(reason.as_str().to_string())
            }
            _ => None,
        }
    }

    /// Whether a workload for this lease should exist in the runtime.
    pub fn wants_workload(&self) -> bool {
        matches!(
            self,
            LeaseState::Deploying { .. } | LeaseState::Running { .. }
        )
    }
}

/// Something that happened to a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseEvent {
    /// The gateway is ready to take this lease's manifest.
    ManifestWindowOpened,
    /// The tenant sent a manifest whose hash matches the order.
    ManifestReceived {
        manifest_hash: ManifestHash,
    },
    /// The runtime started (re)creating the workload.
    DeployStarted,
    DeploySucceeded,
    DeployFailed {
        reason: String,
    },
    CloseRequested {
        reason: CloseReason,
    },
    /// The chain's LeaseClosed event.
    ClosedOnChain,
    /// A sweep noticed the clock; closes a lease still waiting for its manifest past the deadline.
    ManifestDeadlinePassed {
        now: u64,
    },
}

impl LeaseEvent {
    pub fn name(&self) -> &'static str {
        match self {
            LeaseEvent::ManifestWindowOpened => "manifest_window_opened",
            LeaseEvent::ManifestReceived { .. } => "manifest_received",
            LeaseEvent::DeployStarted => "deploy_started",
            LeaseEvent::DeploySucceeded => "deploy_succeeded",
            LeaseEvent::DeployFailed { .. } => "deploy_failed",
            LeaseEvent::CloseRequested { .. } => "close_requested",
            LeaseEvent::ClosedOnChain => "closed_on_chain",
            LeaseEvent::ManifestDeadlinePassed { .. } => "manifest_deadline_passed",
        }
    }
}

/// An event that does not apply to the lease's current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("lease in state `{state}` cannot take event `{event}`: {reason}")]
pub struct InvalidTransition {
    pub state: LeaseStateKind,
    pub event: &'static str,
    pub reason: &'static str,
}

/// Applies one event. Returns the next state (equal to `state` when the event
/// was already applied), or why the event does not fit.
pub fn transition(state: &LeaseState, event: &LeaseEvent) -> Result<LeaseState, InvalidTransition> {
    use LeaseEvent as E;
    use LeaseState as S;
    let invalid = |reason| InvalidTransition {
        state: state.kind(),
        event: event.name(),
        reason,
    };
    let unchanged = || Ok(state.clone());
    match (state, event) {
        // Closed is absorbing: repeated close signals are redeliveries, anything else is a bug.
        (S::Closed { .. }, E::ClosedOnChain | E::CloseRequested { .. })
        | (S::Closed { .. }, E::ManifestDeadlinePassed { .. }) => unchanged(),
        (S::Closed { .. }, _) => Err(invalid("the lease is closed")),

        (_, E::ClosedOnChain) => Ok(S::Closed {
            reason: match state {
                S::Closing { reason } => *reason,
                _ => CloseReason::ClosedOnChain,
            },
        }),
        // The first reason wins: a redelivered or later close request does not rewrite history.
        (S::Closing { .. }, E::CloseRequested { .. } | E::ManifestDeadlinePassed { .. }) => {
            unchanged()
        }
        (_, E::CloseRequested { reason }) => Ok(S::Closing { reason: *reason }),
        (S::Closing { .. }, _) => Err(invalid("the lease is closing")),

        (S::Won { manifest_deadline }, E::ManifestWindowOpened) => Ok(S::AwaitingManifest {
            manifest_deadline: *manifest_deadline,
        }),
        (S::AwaitingManifest { .. }, E::ManifestWindowOpened) => unchanged(),
        (_, E::ManifestWindowOpened) => Err(invalid("the manifest window is already over")),

        (S::Won { .. } | S::AwaitingManifest { .. }, E::ManifestReceived { manifest_hash }) => {
            Ok(S::Deploying {
                manifest_hash: *manifest_hash,
            })
        }
        (
            S::Deploying {
                manifest_hash: have,
            }
            | S::Running {
                manifest_hash: have,
            }
            | S::Failed {
                manifest_hash: have,
                ..
            },
            E::ManifestReceived { manifest_hash },
        ) => {
            if have == manifest_hash {
                unchanged()
            } else {
                Err(invalid("a different manifest was already received"))
            }
        }

        (
            S::Won { manifest_deadline } | S::AwaitingManifest { manifest_deadline },
            E::ManifestDeadlinePassed { now },
        ) => {
            if now >= manifest_deadline {
                Ok(S::Closing {
                    reason: CloseReason::ManifestTimeout,
                })
            } else {
                Err(invalid("the manifest deadline has not passed yet"))
            }
        }
        // The manifest arrived in time; a late sweep changes nothing.
        (_, E::ManifestDeadlinePassed { .. }) => unchanged(),

        (S::Deploying { .. }, E::DeployStarted) => unchanged(),
        (S::Running { manifest_hash } | S::Failed { manifest_hash, .. }, E::DeployStarted) => {
            Ok(S::Deploying {
                manifest_hash: *manifest_hash,
            })
        }
        (S::Won { .. } | S::AwaitingManifest { .. }, E::DeployStarted) => {
            Err(invalid("no manifest has been received"))
        }

        (S::Deploying { manifest_hash }, E::DeploySucceeded) => Ok(S::Running {
            manifest_hash: *manifest_hash,
        }),
        (S::Running { .. }, E::DeploySucceeded) => unchanged(),
        (_, E::DeploySucceeded) => Err(invalid("no deployment is in progress")),

        (S::Deploying { manifest_hash }, E::DeployFailed { reason }) => Ok(S::Failed {
            manifest_hash: *manifest_hash,
            reason: reason.clone(),
        }),
        (S::Failed { .. }, E::DeployFailed { .. }) => unchanged(),
        (_, E::DeployFailed { .. }) => Err(invalid("no deployment is in progress")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hash(byte: u8) -> ManifestHash {
        ManifestHash([byte; 32])
    }

    fn apply_all(
        mut state: LeaseState,
        events: &[LeaseEvent],
    ) -> Result<LeaseState, InvalidTransition> {
        for event in events {
            state = transition(&state, event)?;
        }
        Ok(state)
    }

    #[test]
    fn happy_path_reaches_closed_with_the_requested_reason() {
        let end = apply_all(
            LeaseState::Won {
                manifest_deadline: 100,
            },
            &[
                LeaseEvent::ManifestWindowOpened,
                LeaseEvent::ManifestReceived {
                    manifest_hash: hash(1),
                },
                LeaseEvent::DeployStarted,
                LeaseEvent::DeploySucceeded,
                LeaseEvent::CloseRequested {
                    reason: CloseReason::TenantRequested,
                },
                LeaseEvent::ClosedOnChain,
            ],
        );
        assert_eq!(
            end,
            Ok(LeaseState::Closed {
                reason: CloseReason::TenantRequested
            })
        );
    }

    #[test]
    fn manifest_deadline_closes_only_once_due_and_only_while_waiting() {
        let waiting = LeaseState::AwaitingManifest {
            manifest_deadline: 100,
        };
        let early = transition(&waiting, &LeaseEvent::ManifestDeadlinePassed { now: 99 });
        assert_eq!(
            early.map_err(|e| e.state),
            Err(LeaseStateKind::AwaitingManifest)
        );
        assert_eq!(
            transition(&waiting, &LeaseEvent::ManifestDeadlinePassed { now: 100 }),
            Ok(LeaseState::Closing {
                reason: CloseReason::ManifestTimeout
            })
        );
        let running = LeaseState::Running {
            manifest_hash: hash(2),
        };
        assert_eq!(
            transition(&running, &LeaseEvent::ManifestDeadlinePassed { now: 1_000 }),
            Ok(running.clone())
        );
        // A second sweep over a lease it already timed out is a redelivery.
        let timed_out = LeaseState::Closing {
            reason: CloseReason::ManifestTimeout,
        };
        assert_eq!(
            transition(
                &timed_out,
                &LeaseEvent::ManifestDeadlinePassed { now: 1_000 }
            ),
            Ok(timed_out.clone())
        );
    }

    #[test]
    fn redelivered_events_are_idempotent() {
        let deploying = LeaseState::Deploying {
            manifest_hash: hash(3),
        };
        let again = LeaseEvent::ManifestReceived {
            manifest_hash: hash(3),
        };
        assert_eq!(transition(&deploying, &again), Ok(deploying.clone()));
        let closing = LeaseState::Closing {
            reason: CloseReason::Insolvent,
        };
        let other_close = LeaseEvent::CloseRequested {
            reason: CloseReason::TenantRequested,
        };
        assert_eq!(transition(&closing, &other_close), Ok(closing.clone()));
        let closed = transition(&closing, &LeaseEvent::ClosedOnChain);
        assert_eq!(
            closed,
            Ok(LeaseState::Closed {
                reason: CloseReason::Insolvent
            })
        );
    }

    #[test]
    fn a_different_manifest_is_rejected() {
        let running = LeaseState::Running {
            manifest_hash: hash(4),
        };
        let error = transition(
            &running,
            &LeaseEvent::ManifestReceived {
                manifest_hash: hash(5),
            },
        );
        let error = error.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("different manifest"), "{error}");
    }

    #[test]
    fn failed_deployments_retry_or_close() {
        let failed = apply_all(
            LeaseState::AwaitingManifest {
                manifest_deadline: 10,
            },
            &[
                LeaseEvent::ManifestReceived {
                    manifest_hash: hash(6),
                },
                LeaseEvent::DeployFailed {
                    reason: "image pull failed".into(),
                },
            ],
        );
        let failed = failed.unwrap_or(LeaseState::Closed {
            reason: CloseReason::ClosedOnChain,
        });
        assert_eq!(failed.kind(), LeaseStateKind::Failed);
        assert_eq!(failed.reason().as_deref(), Some("image pull failed"));
        assert_eq!(
            transition(&failed, &LeaseEvent::DeployStarted).map(|s| s.kind()),
            Ok(LeaseStateKind::Deploying)
        );
        assert_eq!(
            transition(
                &failed,
                &LeaseEvent::CloseRequested {
                    reason: CloseReason::DeployFailed
                }
            )
            .map(|s| s.kind()),
            Ok(LeaseStateKind::Closing)
        );
    }

    #[test]
    fn deploying_without_a_manifest_is_invalid() {
        let won = LeaseState::Won {
            manifest_deadline: 5,
        };
        for event in [LeaseEvent::DeployStarted, LeaseEvent::DeploySucceeded] {
            assert!(transition(&won, &event).is_err(), "{event:?}");
        }
    }

    #[test]
    fn names_round_trip() {
        for kind in LeaseStateKind::ALL {
            assert_eq!(kind.as_str().parse(), Ok(kind));
        }
        for reason in CloseReason::ALL {
            assert_eq!(reason.as_str().parse(), Ok(reason));
        }
        assert!("sleeping".parse::<LeaseStateKind>().is_err());
        let text = hash(0xab).to_string();
        assert_eq!(text.parse(), Ok(hash(0xab)));
        assert!("0x12".parse::<ManifestHash>().is_err());
        assert!("ab".repeat(32).parse::<ManifestHash>().is_err());
    }

    fn any_event() -> impl Strategy<Value = LeaseEvent> {
        prop_oneof![
            Just(LeaseEvent::ManifestWindowOpened),
            (0u8..3).prop_map(|b| LeaseEvent::ManifestReceived {
                manifest_hash: hash(b)
            }),
            Just(LeaseEvent::DeployStarted),
            Just(LeaseEvent::DeploySucceeded),
            "[a-z ]{0,12}".prop_map(|reason| LeaseEvent::DeployFailed { reason }),
            proptest::sample::select(CloseReason::ALL.to_vec())
                .prop_map(|reason| LeaseEvent::CloseRequested { reason }),
            Just(LeaseEvent::ClosedOnChain),
            (0u64..200).prop_map(|now| LeaseEvent::ManifestDeadlinePassed { now }),
        ]
    }

    proptest! {
        #[test]
        fn no_sequence_panics_and_closed_is_absorbing(
            deadline in 0u64..200,
            events in proptest::collection::vec(any_event(), 0..40),
        ) {
            let mut state = LeaseState::Won { manifest_deadline: deadline };
            for event in &events {
                let was_closed = state.kind() == LeaseStateKind::Closed;
                let before = state.clone();
                match transition(&state, event) {
                    Ok(next) => {
                        // Every successful event is safe to redeliver: a second copy changes nothing.
                        prop_assert_eq!(transition(&next, event), Ok(next.clone()));
                        state = next;
                    }
                    Err(error) => prop_assert_eq!(error.state, before.kind()),
                }
                if was_closed {
                    prop_assert_eq!(&state, &before);
                }
            }
        }
    }
}
