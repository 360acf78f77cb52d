//! Lease network addressing: IPv4 CIDRs, the pool lease subnets are carved from, and
//! the size of a lease's subnet, chosen from its replica count.
//!
//! Docker cannot be asked for "a subnet of this size": left alone it hands every
//! network the same size from its default pools (a /27 on some engines: 29 replicas and
//! no more). So the runtime picks each lease's subnet itself, the first free one of the
//! right size in the pool, skipping what other networks and the host's routes use.

use std::fmt;
use std::net::Ipv4Addr;

use crate::runtime::MAX_REPLICAS_PER_LEASE;

/// The range lease subnets come from unless the config names another.
pub const DEFAULT_LEASE_SUBNET_POOL: &str = "10.112.0.0/12";
/// The smallest lease subnet (13 replicas); smaller ones save little and fragment the pool.
pub const SMALLEST_LEASE_PREFIX: u8 = 28;
/// Addresses of a subnet no replica can have: network, gateway, broadcast.
const RESERVED_ADDRESSES: u64 = 3;

/// An IPv4 network: its first address and prefix length (host bits zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    /// `a.b.c.d/p` with no host bits set (`10.0.0.1/8` is refused: which was meant?).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (address, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("`{text}` is not an IPv4 CIDR such as 10.0.0.0/8"))?;
        let address: Ipv4Addr = address
            .parse()
            .map_err(|_| format!("`{text}`: `{address}` is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|prefix| *prefix <= 32)
            .ok_or_else(|| format!("`{text}`: the prefix must be 0 to 32"))?;
        let cidr = Ipv4Cidr {
            network: Ipv4Addr::from(u32::from(address) & mask(prefix)),
            prefix,
        };
        if cidr.network != address {
            return Err(format!("`{text}` has host bits set; the network is {cidr}"));
        }
        Ok(cidr)
    }

    /// The network of `prefix` bits that holds `address`.
    pub fn containing(address: Ipv4Addr, prefix: u8) -> Self {
        let prefix = prefix.min(32);
        Ipv4Cidr {
            network: Ipv4Addr::from(u32::from(address) & mask(prefix)),
            prefix,
        }
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The first usable address, which Docker gives the bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network).saturating_add(1))
    }

    fn first(&self) -> u64 {
        u64::from(u32::from(self.network))
    }

    fn last(&self) -> u64 {
        self.first() + self.size() - 1
    }

    /// How many addresses the network spans.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    pub fn contains(&self, address: Ipv4Addr) -> bool {
        let address = u64::from(u32::from(address));
        self.first() <= address && address <= self.last()
    }

    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        self.first() <= other.last() && other.first() <= self.last()
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        bits => u32::MAX << (32 - u32::from(bits.min(32))),
    }
}

/// The prefix of a lease subnet with room for `replicas` containers, or `None` when
/// more than [`MAX_REPLICAS_PER_LEASE`] are asked for.
pub fn lease_subnet_prefix(replicas: u64) -> Option<u8> {
    if replicas > u64::from(MAX_REPLICAS_PER_LEASE) {
        return None;
    }
    let needed = replicas.checked_add(RESERVED_ADDRESSES)?;
    (0..=SMALLEST_LEASE_PREFIX)
        .rev()
        .find(|prefix| (1u64 << (32 - u32::from(*prefix))) >= needed)
}

/// The range lease subnets are carved from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubnetPool(Ipv4Cidr);

impl SubnetPool {
    pub fn parse(text: &str) -> Result<Self, String> {
        let cidr = Ipv4Cidr::parse(text)?;
        let largest = lease_subnet_prefix(u64::from(MAX_REPLICAS_PER_LEASE)).unwrap_or(32);
        if cidr.prefix > largest {
            return Err(format!(
                "`{text}` is smaller than one lease network of the largest size (/{largest})"
            ));
        }
        Ok(SubnetPool(cidr))
    }

    pub fn cidr(&self) -> Ipv4Cidr {
        self.0
    }

    /// Free subnets of `prefix` bits in the pool, in address order: those overlapping
    /// nothing in `taken`.
    pub fn free_subnets<'a>(
        &self,
        prefix: u8,
        taken: &'a [Ipv4Cidr],
    ) -> impl Iterator<Item = Ipv4Cidr> + 'a {
        let pool = self.0;
        let prefix = prefix.clamp(pool.prefix, 32);
        let step = 1u64 << (32 - u32::from(prefix));
        let count = pool.size() / step;
        (0..count)
            .filter_map(move |index| {
                let start = pool.first().checked_add(index.checked_mul(step)?)?;
                Some(Ipv4Cidr {
                    network: Ipv4Addr::from(u32::try_from(start).ok()?),
                    prefix,
                })
            })
            .filter(move |candidate| !taken.iter().any(|used| used.overlaps(candidate)))
    }
}

impl Default for SubnetPool {
    fn default() -> Self {
        SubnetPool(Ipv4Cidr {
            network: Ipv4Addr::new(10, 112, 0, 0),
            prefix: 12,
        })
    }
}

/// The IPv4 destinations of the host's routing table other than the default route
/// (`/proc/net/route`: little-endian hex destination and mask). Lease subnets must not
/// shadow a network the host reaches.
pub fn host_routes(proc_net_route: &str) -> Vec<Ipv4Cidr> {
    proc_net_route
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let destination = u32::from_str_radix(fields.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(fields.get(7)?, 16).ok()?;
            let prefix = u8::try_from(u32::from_be(mask).leading_ones()).ok()?;
            (prefix > 0)
                .then(|| Ipv4Cidr::containing(Ipv4Addr::from(u32::from_be(destination)), prefix))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Ipv4Cidr {
        Ipv4Cidr::parse(text).unwrap_or_else(|error| panic!("{error}"))
    }

    #[test]
    fn cidrs_parse_and_refuse_host_bits() {
        assert_eq!(cidr("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(cidr("0.0.0.0/0").size(), 1 << 32);
        assert!(
            Ipv4Cidr::parse("10.0.0.1/8")
                .unwrap_err()
                .contains("10.0.0.0/8")
        );
        assert!(Ipv4Cidr::parse("10.0.0.0/33").is_err());
        assert!(Ipv4Cidr::parse("10.0.0.0").is_err());
        assert!(Ipv4Cidr::parse("fd00::/8").is_err());
        assert!(cidr("172.16.0.0/12").contains(Ipv4Addr::new(172, 31, 255, 255)));
        assert!(!cidr("172.16.0.0/12").contains(Ipv4Addr::new(172, 32, 0, 0)));
        assert!(cidr("10.0.0.0/8").overlaps(&cidr("10.1.0.0/16")));
        assert!(!cidr("10.0.0.0/24").overlaps(&cidr("10.0.1.0/24")));
        assert_eq!(cidr("10.9.0.0/28").gateway(), Ipv4Addr::new(10, 9, 0, 1));
    }

    #[test]
    fn lease_subnets_grow_with_replicas() {
        assert_eq!(lease_subnet_prefix(1), Some(28));
        assert_eq!(lease_subnet_prefix(13), Some(28));
        assert_eq!(lease_subnet_prefix(14), Some(27));
        // The case that failed at 29 on a /27: 100 replicas get a /25.
        assert_eq!(lease_subnet_prefix(100), Some(25));
        assert_eq!(
            lease_subnet_prefix(u64::from(MAX_REPLICAS_PER_LEASE)),
            Some(22)
        );
        assert_eq!(
            lease_subnet_prefix(u64::from(MAX_REPLICAS_PER_LEASE) + 1),
            None
        );
        assert_eq!(lease_subnet_prefix(u64::MAX), None);
    }

    #[test]
    fn the_pool_yields_aligned_subnets_that_overlap_nothing_taken() {
        let pool = SubnetPool::parse("10.112.0.0/22").expect("pool");
        let taken = [cidr("10.112.0.0/28"), cidr("10.112.0.64/26")];
        let free: Vec<String> = pool
            .free_subnets(27, &taken)
            .take(3)
            .map(|subnet| subnet.to_string())
            .collect();
        assert_eq!(
            free,
            vec!["10.112.0.32/27", "10.112.0.128/27", "10.112.0.160/27"]
        );
        assert_eq!(pool.free_subnets(23, &[]).count(), 2);
        assert_eq!(pool.free_subnets(20, &[]).count(), 1, "clamped to the pool");
        assert!(
            SubnetPool::parse("10.0.0.0/24")
                .unwrap_err()
                .contains("/22")
        );
        assert_eq!(
            SubnetPool::parse(DEFAULT_LEASE_SUBNET_POOL).ok(),
            Some(SubnetPool::default())
        );
    }

    #[test]
    fn host_routes_are_read_from_proc_net_route() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                     eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     docker0\t0000D20A\t00000000\t0001\t0\t0\t0\tE0FFFFFF\t0\t0\t0\n";
        assert_eq!(
            host_routes(table),
            vec![cidr("192.0.2.0/24"), cidr("10.210.0.0/27")]
        );
    }
}
