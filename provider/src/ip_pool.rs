//! The provider's pool of leased IP addresses (`[ip_pool] addresses` in the config).
//!
//! An order whose group exposes ports on IP endpoints (`endpoints: { name: { kind: ip } }`)
//! gets one address per endpoint. The addresses follow the same lifecycle as the
//! inventory's reservations: taken when the bid is placed, the lease's while it lives,
//! returned when the bid loses, its reservation lapses or the lease closes. The pool is
//! only a view: the addresses an order holds are stored with its reservation row
//! ([`crate::bidder::Holding::leased_ips`]), so a restarted daemon rebuilds the same pool.

use std::collections::BTreeMap;
use std::net::IpAddr;

/// Why the pool cannot give an order its addresses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpPoolError {
    #[error("order {order_id} needs {wanted} leased IP addresses, {free} of the pool are free")]
    Exhausted {
        order_id: u64,
        wanted: usize,
        free: usize,
    },
    #[error("leased IP {address} is stored for both order {holder} and order {order_id}")]
    HeldTwice {
        address: IpAddr,
        holder: u64,
        order_id: u64,
    },
}

/// Addresses by ledger: the pool's size, those of leases, those of open bids.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IpLedgers {
    pub capacity: u64,
    pub allocated: u64,
    pub reserved: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    addresses: Vec<IpAddr>,
    allocated: bool,
}

/// Which order holds which address; an address is held by at most one order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpPool {
    /// The configured addresses, in config order (handed out first to last).
    addresses: Vec<IpAddr>,
    held: BTreeMap<u64, Held>,
}

impl IpPool {
    pub fn new(addresses: Vec<IpAddr>) -> Self {
        IpPool {
            addresses,
            held: BTreeMap::new(),
        }
    }

    /// Records what the store says `order_id` holds (at start). An address no longer in the
    /// config stays the lease's (it is bound) but is never handed out again.
    pub fn hold(
        &mut self,
        order_id: u64,
        addresses: Vec<IpAddr>,
        allocated: bool,
    ) -> Result<(), IpPoolError> {
        if addresses.is_empty() {
            return Ok(());
        }
        for address in &addresses {
            if let Some(holder) = self.holder(*address).filter(|holder| *holder != order_id) {
                return Err(IpPoolError::HeldTwice {
                    address: *address,
                    holder,
                    order_id,
                });
            }
        }
        self.held.insert(
            order_id,
            Held {
                addresses,
                allocated,
            },
        );
        Ok(())
    }

    /// Takes `count` free addresses for `order_id`'s bid. Asking again returns what the
    /// order already holds, so a redelivered order never takes a second set.
    pub fn reserve(&mut self, order_id: u64, count: usize) -> Result<Vec<IpAddr>, IpPoolError> {
        if let Some(held) = self.held.get(&order_id)
            && held.addresses.len() == count
        {
            return Ok(held.addresses.clone());
        }
        self.release(order_id);
        if count == 0 {
            return Ok(Vec::new());
        }
        let free = self.free_addresses();
        if free.len() < count {
            return Err(IpPoolError::Exhausted {
                order_id,
                wanted: count,
                free: free.len(),
            });
        }
        let taken: Vec<IpAddr> = free.into_iter().take(count).collect();
        self.held.insert(
            order_id,
            Held {
                addresses: taken.clone(),
                allocated: false,
            },
        );
        Ok(taken)
    }

    /// The order's bid won: its addresses are the lease's until [`IpPool::release`].
    pub fn allocate(&mut self, order_id: u64) {
        if let Some(held) = self.held.get_mut(&order_id) {
            held.allocated = true;
        }
    }

    /// Returns the order's addresses to the pool; nothing when it holds none.
    pub fn release(&mut self, order_id: u64) -> Vec<IpAddr> {
        self.held
            .remove(&order_id)
            .map(|held| held.addresses)
            .unwrap_or_default()
    }

    /// Returns the addresses of every order `keep` rejects: what the inventory dropped
    /// without a stored row (a reservation that lapsed before it was written) holds none.
    pub fn retain_orders(&mut self, keep: impl Fn(u64) -> bool) {
        self.held.retain(|order_id, _| keep(*order_id));
    }

    /// The addresses `order_id` holds, in the order they were handed out.
    pub fn held_by(&self, order_id: u64) -> &[IpAddr] {
        self.held
            .get(&order_id)
            .map_or(&[], |held| held.addresses.as_slice())
    }

    /// How many addresses a new bid could take now.
    pub fn free(&self) -> usize {
        self.free_addresses().len()
    }

    pub fn ledgers(&self) -> IpLedgers {
        let count = |allocated: bool| {
            self.held
                .values()
                .filter(|held| held.allocated == allocated)
                .map(|held| held.addresses.len() as u64)
                .sum()
        };
        IpLedgers {
            capacity: self.addresses.len() as u64,
            allocated: count(true),
            reserved: count(false),
        }
    }

    fn holder(&self, address: IpAddr) -> Option<u64> {
        self.held
            .iter()
            .find(|(_, held)| held.addresses.contains(&address))
            .map(|(order_id, _)| *order_id)
    }

    fn free_addresses(&self) -> Vec<IpAddr> {
        self.addresses
            .iter()
            .copied()
            .filter(|address| self.holder(*address).is_none())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn pool() -> IpPool {
        IpPool::new(vec![ip("127.0.0.2"), ip("127.0.0.3"), ip("127.0.0.4")])
    }

    #[test]
    fn an_address_goes_to_one_order_at_a_time() {
        let mut pool = pool();
        let first = pool.reserve(1, 2).unwrap();
        assert_eq!(first, vec![ip("127.0.0.2"), ip("127.0.0.3")]);
        let second = pool.reserve(2, 1).unwrap();
        assert_eq!(second, vec![ip("127.0.0.4")]);
        assert_eq!(
            pool.reserve(3, 1),
            Err(IpPoolError::Exhausted {
                order_id: 3,
                wanted: 1,
                free: 0
            })
        );
        // A failed reservation takes nothing.
        assert_eq!(pool.held_by(3), &[] as &[IpAddr]);
        // Asking again for the same order returns its addresses, never a second set.
        assert_eq!(pool.reserve(1, 2).unwrap(), first);
        assert_eq!(
            pool.ledgers(),
            IpLedgers {
                capacity: 3,
                allocated: 0,
                reserved: 3
            }
        );
    }

    #[test]
    fn release_is_idempotent_and_frees_for_the_next_order() {
        let mut pool = pool();
        pool.reserve(1, 3).unwrap();
        pool.allocate(1);
        assert_eq!(pool.ledgers().allocated, 3);
        assert_eq!(pool.release(1).len(), 3);
        assert!(pool.release(1).is_empty());
        assert!(pool.release(42).is_empty());
        assert_eq!(pool.free(), 3);
        assert_eq!(pool.reserve(2, 3).unwrap().len(), 3);
    }

    #[test]
    fn orders_without_ip_endpoints_hold_nothing() {
        let mut pool = IpPool::new(Vec::new());
        assert_eq!(pool.reserve(1, 0).unwrap(), Vec::<IpAddr>::new());
        assert_eq!(pool.ledgers(), IpLedgers::default());
        assert!(matches!(
            pool.reserve(2, 1),
            Err(IpPoolError::Exhausted { free: 0, .. })
        ));
    }

    /// A restart rebuilds the pool from the stored holdings: the same addresses stay taken,
    /// one stored twice is refused, and one dropped from the config stays the lease's
    /// without being handed out again.
    #[test]
    fn a_rebuilt_pool_keeps_stored_assignments() {
        let mut pool = pool();
        pool.hold(7, vec![ip("127.0.0.3")], true).unwrap();
        pool.hold(8, vec![ip("127.0.0.9")], true).unwrap();
        assert_eq!(
            pool.hold(9, vec![ip("127.0.0.3")], false),
            Err(IpPoolError::HeldTwice {
                address: ip("127.0.0.3"),
                holder: 7,
                order_id: 9
            })
        );
        assert_eq!(pool.free(), 2);
        assert_eq!(
            pool.reserve(10, 2).unwrap(),
            vec![ip("127.0.0.2"), ip("127.0.0.4")]
        );
        assert_eq!(pool.held_by(8), &[ip("127.0.0.9")]);
        assert_eq!(pool.ledgers().allocated, 2);
    }
}
