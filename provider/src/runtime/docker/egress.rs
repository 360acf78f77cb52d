//! The egress policy of lease networks: a lease's containers reach the internet and
//! their own lease, nothing else on the provider's side (the host, link-local metadata
//! services, private ranges, other leases).
//!
//! Docker 20.10 programs the kernel through the `iptables` command (whichever backend
//! it is built on, nf_tables here), so the rules are written with that same command and
//! live in chains of our own, one set per runtime scope (`LH-<tag>-...`), reached from
//! two places:
//!
//! - `DOCKER-USER` (forwarded traffic, which Docker consults before its own rules):
//!   `-i lh<tag>+ -j LH-<tag>-FWD`. Replies pass; traffic within one lease's bridge is
//!   accepted by a per-lease rule in `LH-<tag>-LEASES`; traffic into any other lease
//!   bridge, to link-local, to the blocked ranges (RFC 1918 and the lease pool by
//!   default) is rejected, except DNS to the host's resolvers, which Docker's embedded
//!   DNS forwards to from inside the container.
//! - `INPUT` (traffic addressed to the host itself, bridge gateway and every other host
//!   address included, never passes FORWARD): `-i lh<tag>+ -j LH-<tag>-IN`, which lets
//!   replies through and rejects the rest.
//!
//! Our chains are written whole with `iptables-restore --noflush` (atomic per table),
//! so installing, re-installing what someone deleted and dropping closed leases' rules
//! are one operation: [`Firewall::sync`] with the bridges of the leases that exist.
//! Lease networks have no IPv6 (Docker disables it inside containers of a network
//! without it), so there is no IPv6 path to guard.

use std::net::Ipv4Addr;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::network::Ipv4Cidr;

/// The chain Docker leaves to its users and consults first for forwarded traffic.
pub const DOCKER_USER_CHAIN: &str = "DOCKER-USER";
const INPUT_CHAIN: &str = "INPUT";
/// How traffic is refused: an immediate, explicit error for the workload rather than a
/// silent timeout.
const REJECT: &str = "REJECT --reject-with icmp-admin-prohibited";
/// Always refused: link-local, where cloud metadata services answer.
pub const LINK_LOCAL: &str = "169.254.0.0/16";
/// The default blocked ranges: RFC 1918.
pub const RFC1918: [&str; 3] = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"];

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("cannot run `{command}`: {reason}")]
    Command { command: String, reason: String },
    #[error("`{command}` failed: {stderr}")]
    Failed { command: String, stderr: String },
    #[error(
        "the {DOCKER_USER_CHAIN} chain is missing ({reason}): the engine is not on this host, \
         runs with iptables disabled, or uses another iptables backend"
    )]
    NoDockerUserChain { reason: String },
    #[error("chain {chain} does not hold the rules just written:\n{found}")]
    NotApplied { chain: String, found: String },
}

/// The rules of one runtime scope.
#[derive(Debug, Clone)]
pub struct Firewall {
    iptables: String,
    tag: String,
    blocked: Vec<Ipv4Cidr>,
    resolvers: Vec<Ipv4Addr>,
}

/// What one [`Firewall::sync`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncOutcome {
    /// Everything was in place.
    Unchanged,
    /// Chains or jumps were (re)written.
    Installed,
}

impl Firewall {
    /// Rules for the bridges `lh<tag>*`, refusing `blocked` (link-local always) and
    /// letting DNS through to `resolvers`. `iptables` is the command to run.
    pub fn new(
        iptables: impl Into<String>,
        tag: impl Into<String>,
        blocked: Vec<Ipv4Cidr>,
        resolvers: Vec<Ipv4Addr>,
    ) -> Self {
        let mut blocked = blocked;
        if let Ok(link_local) = Ipv4Cidr::parse(LINK_LOCAL) {
            blocked.insert(0, link_local);
        }
        let mut seen = std::collections::BTreeSet::new();
        blocked.retain(|cidr| seen.insert(*cidr));
        let mut resolvers = resolvers;
        resolvers.retain(|resolver| blocked.iter().any(|cidr| cidr.contains(*resolver)));
        resolvers.sort();
        resolvers.dedup();
        Firewall {
            iptables: iptables.into(),
            tag: tag.into(),
            blocked,
            resolvers,
        }
    }

    /// Every lease bridge of this scope starts with this.
    pub fn interface_prefix(&self) -> String {
        bridge_prefix(&self.tag)
    }

    fn chain(&self, suffix: &str) -> String {
        format!("LH-{}-{suffix}", self.tag)
    }

    pub fn forward_chain(&self) -> String {
        self.chain("FWD")
    }

    pub fn input_chain(&self) -> String {
        self.chain("IN")
    }

    pub fn leases_chain(&self) -> String {
        self.chain("LEASES")
    }

    /// Our chains as `iptables -S` prints them, for these lease bridges.
    pub fn expected(&self, bridges: &[String]) -> Vec<(String, Vec<String>)> {
        let forward = self.forward_chain();
        let leases = self.leases_chain();
        let input = self.input_chain();
        let mut forward_rules = vec![
            format!("-A {forward} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN"),
            format!("-A {forward} -j {leases}"),
            // Other leases, ours or another daemon's.
            format!("-A {forward} -o {LEASE_BRIDGE_PREFIX}+ -j {REJECT}"),
        ];
        for resolver in &self.resolvers {
            for proto in ["udp", "tcp"] {
                forward_rules.push(format!(
                    "-A {forward} -d {resolver}/32 -p {proto} -m {proto} --dport 53 -j RETURN"
                ));
            }
        }
        for cidr in &self.blocked {
            forward_rules.push(format!("-A {forward} -d {cidr} -j {REJECT}"));
        }
        let mut bridges: Vec<&String> = bridges.iter().collect();
        bridges.sort();
        bridges.dedup();
        let lease_rules = bridges
            .into_iter()
            .map(|bridge| format!("-A {leases} -i {bridge} -o {bridge} -j ACCEPT"))
            .collect();
        let input_rules = vec![
            format!("-A {input} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN"),
            format!("-A {input} -j {REJECT}"),
        ];
        vec![
            (forward, forward_rules),
            (leases, lease_rules),
            (input, input_rules),
        ]
    }

    /// The `iptables-restore --noflush` input that writes our chains whole.
    pub fn restore_input(&self, bridges: &[String]) -> String {
        let expected = self.expected(bridges);
        let mut text = String::from("*filter\n");
        for (chain, _) in &expected {
            text.push_str(&format!(":{chain} - [0:0]\n"));
        }
        for (_, rules) in &expected {
            for rule in rules {
                text.push_str(rule);
                text.push('\n');
            }
        }
        text.push_str("COMMIT\n");
        text
    }

    /// The jumps into our chains: (chain they sit in, rule).
    fn jumps(&self) -> [(&'static str, String); 2] {
        let interfaces = format!("{}+", self.interface_prefix());
        [
            (
                DOCKER_USER_CHAIN,
                format!(
                    "-A {DOCKER_USER_CHAIN} -i {interfaces} -j {}",
                    self.forward_chain()
                ),
            ),
            (
                INPUT_CHAIN,
                format!("-A {INPUT_CHAIN} -i {interfaces} -j {}", self.input_chain()),
            ),
        ]
    }

    /// Brings the kernel's rules to what [`Firewall::expected`] says for `bridges`, then
    /// reads them back. Safe to repeat; fails when the rules cannot be installed.
    pub async fn sync(&self, bridges: &[String]) -> Result<SyncOutcome, FirewallError> {
        // The lease bridges of one scope are listed and written by one caller at a time,
        // so two deploys of one process never write each other's stale list.
        let _serialized = SYNC.lock().await;
        self.list(DOCKER_USER_CHAIN)
            .await
            .map_err(|error| FirewallError::NoDockerUserChain {
                reason: error.to_string(),
            })?;
        let mut outcome = SyncOutcome::Unchanged;
        if !self.chains_match(bridges).await {
            self.restore(&self.restore_input(bridges)).await?;
            outcome = SyncOutcome::Installed;
        }
        for (chain, jump) in self.jumps() {
            if self.ensure_jump_first(chain, &jump).await? {
                outcome = SyncOutcome::Installed;
            }
        }
        for (chain, rules) in self.expected(bridges) {
            let found = self.list(&chain).await.unwrap_or_default();
            if strip_chain_header(&found, &chain) != rules {
                return Err(FirewallError::NotApplied {
                    chain,
                    found: found.join("\n"),
                });
            }
        }
        Ok(outcome)
    }

    /// Removes the jumps and chains of this scope (a scope that is gone for good, such
    /// as a test's). Missing pieces are fine.
    pub async fn uninstall(&self) -> Result<(), FirewallError> {
        let _serialized = SYNC.lock().await;
        for (chain, jump) in self.jumps() {
            let spec = rule_spec(&jump);
            let mut args = vec!["-D", chain];
            args.extend(spec.iter().map(String::as_str));
            while self.run(&args).await.is_ok() {}
        }
        let chains = [
            self.forward_chain(),
            self.leases_chain(),
            self.input_chain(),
        ];
        for chain in &chains {
            let _ = self.run(&["-F", chain]).await;
        }
        for chain in &chains {
            if self.list(chain).await.is_ok() {
                self.run(&["-X", chain]).await?;
            }
        }
        Ok(())
    }

    async fn chains_match(&self, bridges: &[String]) -> bool {
        for (chain, rules) in self.expected(bridges) {
            match self.list(&chain).await {
                Ok(found) if strip_chain_header(&found, &chain) == rules => {}
                _ => return false,
            }
        }
        true
    }

    /// Makes `jump` precede every rule of `chain` that could let traffic skip it (an
    /// ACCEPT or RETURN that is not ours). Returns whether it had to write.
    async fn ensure_jump_first(&self, chain: &str, jump: &str) -> Result<bool, FirewallError> {
        let rules = self.list(chain).await?;
        let position = rules.iter().position(|rule| rule == jump);
        let first_exit = rules.iter().position(|rule| {
            rule.starts_with("-A ")
                && (rule.ends_with("-j ACCEPT") || rule.ends_with("-j RETURN"))
                && !rule.contains(" -j LH-")
        });
        match (position, first_exit) {
            (Some(at), Some(exit)) if at < exit => return Ok(false),
            (Some(_), None) => return Ok(false),
            (Some(_), Some(_)) => {
                let spec = rule_spec(jump);
                let mut args = vec!["-D", chain];
                args.extend(spec.iter().map(String::as_str));
                self.run(&args).await?;
            }
            (None, _) => {}
        }
        let spec = rule_spec(jump);
        let mut args = vec!["-I", chain, "1"];
        args.extend(spec.iter().map(String::as_str));
        self.run(&args).await?;
        Ok(true)
    }

    /// `iptables -S chain`, one rule per line.
    async fn list(&self, chain: &str) -> Result<Vec<String>, FirewallError> {
        let output = self.run(&["-S", chain]).await?;
        Ok(output.lines().map(str::to_owned).collect())
    }

    async fn run(&self, args: &[&str]) -> Result<String, FirewallError> {
        let command = format!("{} -w {}", self.iptables, args.join(" "));
        let output = Command::new(&self.iptables)
            .arg("-w")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|error| FirewallError::Command {
                command: command.clone(),
                reason: error.to_string(),
            })?;
        if !output.status.success() {
            return Err(FirewallError::Failed {
                command,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    async fn restore(&self, input: &str) -> Result<(), FirewallError> {
        let program = format!("{}-restore", self.iptables);
        let command = format!("{program} -w --noflush");
        let failed = |reason: String| FirewallError::Command {
            command: command.clone(),
            reason,
        };
        let mut child = Command::new(&program)
            .args(["-w", "--noflush"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| failed(error.to_string()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(input.as_bytes())
                .await
                .map_err(|error| failed(error.to_string()))?;
        }
        let output = child
            .wait_with_output()
            .await
            .map_err(|error| failed(error.to_string()))?;
        if !output.status.success() {
            return Err(FirewallError::Failed {
                command,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        Ok(())
    }
}

static SYNC: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What every lease bridge name starts with, whatever its scope.
pub const LEASE_BRIDGE_PREFIX: &str = "lh";
/// Linux interface names are at most 15 bytes.
const INTERFACE_NAME_MAX: usize = 15;

fn bridge_prefix(tag: &str) -> String {
    format!("{LEASE_BRIDGE_PREFIX}{tag}")
}

/// The bridge interface of a lease network: `lh<tag><lease id in base 36>`, within
/// Linux's 15 bytes. A lease id too long for the room left (beyond 36^7, some 78
/// billion) is hashed into it instead.
pub fn bridge_name(tag: &str, lease_id: u64) -> String {
    let prefix = bridge_prefix(tag);
    let room = INTERFACE_NAME_MAX.saturating_sub(prefix.len());
    let mut id = base36(lease_id);
    if id.len() > room {
        let digest = <sha2::Sha256 as sha2::Digest>::digest(lease_id.to_be_bytes());
        let folded = digest
            .iter()
            .take(8)
            .fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte));
        id = base36(folded);
    }
    let id: String = id.chars().take(room).collect();
    format!("{prefix}{id}")
}

fn base36(mut value: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        let digit = usize::try_from(value % 36).unwrap_or(0);
        out.push(DIGITS.get(digit).copied().unwrap_or(b'0'));
        value /= 36;
        if value == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// The resolvers Docker's embedded DNS forwards to: the host's `nameserver` lines
/// (IPv4 only; loopback ones are the host's own stub resolver, whose upstreams are in
/// `fallback`, e.g. systemd-resolved's `/run/systemd/resolve/resolv.conf`).
pub fn resolvers(resolv_conf: &str, fallback: Option<&str>) -> Vec<Ipv4Addr> {
    let parse = |text: &str| -> Vec<Ipv4Addr> {
        text.lines()
            .filter_map(|line| line.trim().strip_prefix("nameserver"))
            .filter_map(|rest| rest.trim().parse::<Ipv4Addr>().ok())
            .collect()
    };
    let mut found: Vec<Ipv4Addr> = parse(resolv_conf)
        .into_iter()
        .filter(|address| !address.is_loopback())
        .collect();
    if found.is_empty()
        && let Some(fallback) = fallback
    {
        found = parse(fallback)
            .into_iter()
            .filter(|address| !address.is_loopback())
            .collect();
    }
    found
}

fn strip_chain_header(found: &[String], chain: &str) -> Vec<String> {
    let header = format!("-N {chain}");
    found
        .iter()
        .filter(|line| **line != header && !line.trim().is_empty())
        .cloned()
        .collect()
}

/// The part of an `-A CHAIN ...` line after the chain name.
fn rule_spec(rule: &str) -> Vec<String> {
    rule.split_whitespace().skip(2).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn firewall() -> Firewall {
        let blocked = RFC1918
            .iter()
            .chain(["10.112.0.0/12"].iter())
            .map(|text| Ipv4Cidr::parse(text).expect("cidr"))
            .collect();
        Firewall::new(
            "iptables",
            "a1b2c3",
            blocked,
            vec![Ipv4Addr::new(10, 255, 255, 53), Ipv4Addr::new(8, 8, 8, 8)],
        )
    }

    #[test]
    fn bridge_names_fit_linux_and_share_the_scope_prefix() {
        assert_eq!(bridge_name("a1b2c3", 1), "lha1b2c31");
        assert_eq!(bridge_name("a1b2c3", 36), "lha1b2c310");
        let big = bridge_name("a1b2c3", 9_004_321_000);
        assert!(big.len() <= 15 && big.starts_with("lha1b2c3"), "{big}");
        let huge = bridge_name("a1b2c3", u64::MAX);
        assert_eq!(huge.len(), 15);
        assert_ne!(huge, bridge_name("a1b2c3", u64::MAX - 1));
        assert_ne!(bridge_name("a1b2c3", 7), bridge_name("a1b2c4", 7));
    }

    #[test]
    fn resolvers_skip_loopback_stubs() {
        let conf = "# comment\nnameserver 10.255.255.53\nnameserver ::1\nsearch x\n";
        assert_eq!(resolvers(conf, None), vec![Ipv4Addr::new(10, 255, 255, 53)]);
        let stub = "nameserver 127.0.0.53\n";
        assert_eq!(
            resolvers(stub, Some("nameserver 192.168.1.1\n")),
            vec![Ipv4Addr::new(192, 168, 1, 1)]
        );
        assert!(resolvers(stub, None).is_empty());
    }

    #[test]
    fn rules_reject_host_private_ranges_and_other_leases_but_not_the_own_lease() {
        let firewall = firewall();
        let expected = firewall.expected(&["lha1b2c3b".to_owned(), "lha1b2c3a".to_owned()]);
        let forward = &expected[0];
        assert_eq!(forward.0, "LH-a1b2c3-FWD");
        assert_eq!(
            forward.1,
            vec![
                "-A LH-a1b2c3-FWD -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
                "-A LH-a1b2c3-FWD -j LH-a1b2c3-LEASES",
                "-A LH-a1b2c3-FWD -o lh+ -j REJECT --reject-with icmp-admin-prohibited",
                "-A LH-a1b2c3-FWD -d 10.255.255.53/32 -p udp -m udp --dport 53 -j RETURN",
                "-A LH-a1b2c3-FWD -d 10.255.255.53/32 -p tcp -m tcp --dport 53 -j RETURN",
                "-A LH-a1b2c3-FWD -d 169.254.0.0/16 -j REJECT --reject-with icmp-admin-prohibited",
                "-A LH-a1b2c3-FWD -d 10.0.0.0/8 -j REJECT --reject-with icmp-admin-prohibited",
                "-A LH-a1b2c3-FWD -d 172.16.0.0/12 -j REJECT --reject-with icmp-admin-prohibited",
                "-A LH-a1b2c3-FWD -d 192.168.0.0/16 -j REJECT --reject-with icmp-admin-prohibited",
                "-A LH-a1b2c3-FWD -d 10.112.0.0/12 -j REJECT --reject-with icmp-admin-prohibited",
            ],
            "a public resolver needs no exception"
        );
        assert_eq!(
            expected[1].1,
            vec![
                "-A LH-a1b2c3-LEASES -i lha1b2c3a -o lha1b2c3a -j ACCEPT",
                "-A LH-a1b2c3-LEASES -i lha1b2c3b -o lha1b2c3b -j ACCEPT",
            ]
        );
        assert_eq!(
            expected[2].1,
            vec![
                "-A LH-a1b2c3-IN -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
                "-A LH-a1b2c3-IN -j REJECT --reject-with icmp-admin-prohibited",
            ]
        );
        let restore = firewall.restore_input(&[]);
        assert!(
            restore.starts_with("*filter\n:LH-a1b2c3-FWD - [0:0]\n"),
            "{restore}"
        );
        assert!(restore.ends_with("COMMIT\n"));
        assert_eq!(
            firewall.jumps()[1].1,
            "-A INPUT -i lha1b2c3+ -j LH-a1b2c3-IN"
        );
    }
}
