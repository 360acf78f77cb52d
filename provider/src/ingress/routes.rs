//! The route table: which lease service answers for which hostname, with the service's
//! `http_options`, and the hostnames a lease's manifest claims.
//!
//! One owner per hostname: a lease's routes are replaced as a whole and only when none of
//! its hostnames is routed to another lease, so a hostname never silently changes hands.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use leasehold_manifests::{HttpOptions, ManifestGroup, Protocol as ManifestProtocol};

use crate::runtime::RuntimeScope;

/// The external port Akash routes through its HTTP ingress.
pub const HTTP_EXTERNAL_PORT: u16 = 80;

/// When the proxy tries a request again (Akash `next_cases`, nginx `proxy_next_upstream`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NextCases {
    /// The upstream could not be reached or failed mid-request.
    pub error: bool,
    /// The upstream did not answer within `read_timeout`.
    pub timeout: bool,
    /// Upstream answers that are tried again (500, 502, 503, 504, 403, 404, 429).
    pub statuses: Vec<u16>,
}

impl NextCases {
    /// Reads Akash's case names; `off` (alone, as the manifest parser enforces) and
    /// unknown names add nothing.
    pub fn from_names(names: &[String]) -> Self {
        let mut cases = NextCases::default();
        for name in names {
            match name.as_str() {
                "error" => cases.error = true,
                "timeout" => cases.timeout = true,
                other => {
                    let code = other.strip_prefix("http_").unwrap_or(other);
                    if let Ok(status) = code.parse::<u16>() {
                        cases.statuses.push(status);
                    }
                }
            }
        }
        cases
    }
}

/// A route's `http_options`, in the proxy's units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyOptions {
    /// Largest request body in bytes; a larger one gets 413.
    pub max_body_size: u64,
    /// How long the upstream may take to answer, and between two reads of its body; past
    /// it the client gets 504.
    pub read_timeout: Duration,
    /// How long one write of the request to the upstream may block.
    pub send_timeout: Duration,
    /// Attempts per request, the first included (0: as many as `next_timeout` allows);
    /// never more than [`super::MAX_ATTEMPTS`].
    pub next_tries: u32,
    /// Time allowed for all attempts of one request (`None`: no limit).
    pub next_timeout: Option<Duration>,
    pub next_cases: NextCases,
}

/// Akash's default read and send timeout, used where a manifest says 0.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

impl From<&HttpOptions> for ProxyOptions {
    fn from(options: &HttpOptions) -> Self {
        let timeout = |ms: u32| match ms {
            0 => DEFAULT_TIMEOUT,
            ms => Duration::from_millis(u64::from(ms)),
        };
        ProxyOptions {
            max_body_size: u64::from(options.max_body_size),
            read_timeout: timeout(options.read_timeout),
            send_timeout: timeout(options.send_timeout),
            next_tries: options.next_tries,
            next_timeout: (options.next_timeout > 0)
                .then(|| Duration::from_millis(u64::from(options.next_timeout))),
            next_cases: NextCases::from_names(&options.next_cases),
        }
    }
}

impl Default for ProxyOptions {
    /// Akash's defaults (what a manifest without `http_options` carries).
    fn default() -> Self {
        ProxyOptions {
            max_body_size: 1_048_576,
            read_timeout: DEFAULT_TIMEOUT,
            send_timeout: DEFAULT_TIMEOUT,
            next_tries: 3,
            next_timeout: None,
            next_cases: NextCases {
                error: true,
                timeout: true,
                statuses: Vec::new(),
            },
        }
    }
}

/// A hostname a lease's manifest asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteClaim {
    /// Normalised: lower case, no trailing dot.
    pub host: String,
    pub service: String,
    /// The manifest field the hostname comes from (`services.web.expose[port 8080].accept`), or
    /// `generated` for the provider's own name.
    pub field: String,
    pub options: ProxyOptions,
}

/// Where a request for a hostname goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub lease_id: u64,
    pub service: String,
    pub options: ProxyOptions,
    /// `host:port` of each replica's HTTP port; empty while the service is not running.
    pub upstreams: Vec<String>,
}

/// Why a manifest's hostnames cannot be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostnameError {
    #[error("{field}: host `{host}` is already routed to another lease on this provider")]
    TakenByAnotherLease { field: String, host: String },
    #[error(
        "{field}: host `{host}` is under the provider's ingress domain `{domain}`, whose names \
         the provider generates; use the generated name or a domain of your own"
    )]
    UnderIngressDomain {
        field: String,
        host: String,
        domain: String,
    },
}

/// Lower case, without a port and without a trailing dot: the form routes are keyed by.
/// `None` when nothing is left.
pub fn normalize_host(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let host = if let Some(bracketed) = raw.strip_prefix('[') {
        // An IPv6 literal, `[::1]:8080`.
        bracketed.split(']').next().unwrap_or_default()
    } else {
        raw.rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(raw, |(host, _)| host)
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

/// The provider's own hostname for a lease service: `<id>.<domain>`, where the id is 20
/// hex digits of sha256 over chain id, provider, lease id and service, so it is a DNS
/// label, the same after every restart, and unguessable from the lease id alone.
pub fn generated_hostname(
    scope: &RuntimeScope,
    lease_id: u64,
    service: &str,
    domain: &str,
) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!(
        "leasehold-ingress/{}/{}/{lease_id}/{service}",
        scope.chain_id, scope.provider
    ));
    let id: String = digest
        .iter()
        .take(10)
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("{id}.{}", domain.trim_end_matches('.').to_ascii_lowercase())
}

/// Whether an exposure goes through the HTTP ingress: global TCP exposed as port 80.
pub fn is_http_exposure(expose: &leasehold_manifests::Expose) -> bool {
    let external = if expose.external_port == 0 {
        expose.port
    } else {
        expose.external_port
    };
    expose.global && expose.proto == ManifestProtocol::Tcp && external == HTTP_EXTERNAL_PORT
}

/// The hostnames a manifest group claims on this provider: per service with a global HTTP
/// exposure its generated name, then every `accept` hostname (first claim of a host wins
/// within the lease). A hostname under the ingress domain in `accept` is refused.
pub fn lease_claims(
    scope: &RuntimeScope,
    domain: &str,
    lease_id: u64,
    group: &ManifestGroup,
) -> Result<Vec<RouteClaim>, HostnameError> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let mut claims: Vec<RouteClaim> = Vec::new();
    for service in &group.services {
        for expose in &service.expose {
            if !is_http_exposure(expose) {
                continue;
            }
            let options = ProxyOptions::from(&expose.http_options);
            let generated = generated_hostname(scope, lease_id, &service.name, &domain);
            // The manifest lists exposures in Akash's order, not the SDL's, so the port
            // names the SDL entry where an index could not.
            let field = format!(
                "services.{}.expose[port {}].accept",
                service.name, expose.port
            );
            let mut wanted = vec![(generated, "generated".to_owned())];
            for raw in &expose.hosts {
                let Some(host) = normalize_host(raw) else {
                    continue;
                };
                if host == domain || host.ends_with(&format!(".{domain}")) {
                    return Err(HostnameError::UnderIngressDomain {
                        field,
                        host,
                        domain,
                    });
                }
                wanted.push((host, field.clone()));
            }
            for (host, field) in wanted {
                if claims.iter().all(|claim| claim.host != host) {
                    claims.push(RouteClaim {
                        host,
                        service: service.name.clone(),
                        field,
                        options: options.clone(),
                    });
                }
            }
        }
    }
    Ok(claims)
}

/// Every routed hostname; shared by the proxy (reads) and the daemon (writes).
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: RwLock<HashMap<String, Arc<Route>>>,
}

impl RouteTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// The route of a normalised hostname.
    pub fn lookup(&self, host: &str) -> Option<Arc<Route>> {
        self.read().get(host).cloned()
    }

    /// Refuses claims of which any hostname is routed to another lease.
    pub fn check(&self, lease_id: u64, claims: &[RouteClaim]) -> Result<(), HostnameError> {
        check_claims(&self.read(), lease_id, claims)
    }

    /// Makes `claims` the lease's whole set of routes, with each service's upstreams
    /// (`upstreams` by service name; a service missing there keeps the upstreams it had,
    /// so an update does not cut traffic before the runtime reports again). Nothing
    /// changes when a hostname belongs to another lease.
    pub fn replace_lease(
        &self,
        lease_id: u64,
        claims: &[RouteClaim],
        upstreams: &BTreeMap<String, Vec<String>>,
    ) -> Result<(), HostnameError> {
        let mut routes = self.write();
        check_claims(&routes, lease_id, claims)?;
        let mut previous: HashMap<String, Vec<String>> = HashMap::new();
        routes.retain(|_, route| {
            if route.lease_id != lease_id {
                return true;
            }
            previous
                .entry(route.service.clone())
                .or_insert_with(|| route.upstreams.clone());
            false
        });
        for claim in claims {
            let upstreams = upstreams
                .get(&claim.service)
                .or_else(|| previous.get(&claim.service))
                .cloned()
                .unwrap_or_default();
            routes.insert(
                claim.host.clone(),
                Arc::new(Route {
                    lease_id,
                    service: claim.service.clone(),
                    options: claim.options.clone(),
                    upstreams,
                }),
            );
        }
        Ok(())
    }

    /// Removes every route of the lease.
    pub fn remove_lease(&self, lease_id: u64) {
        self.write().retain(|_, route| route.lease_id != lease_id);
    }

    /// The lease's hostnames by service, sorted.
    pub fn hostnames(&self, lease_id: u64) -> BTreeMap<String, Vec<String>> {
        let mut by_service: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (host, route) in self.read().iter() {
            if route.lease_id == lease_id {
                by_service
                    .entry(route.service.clone())
                    .or_default()
                    .push(host.clone());
            }
        }
        by_service.values_mut().for_each(|hosts| hosts.sort());
        by_service
    }

    /// The leases that have routes, sorted.
    pub fn leases(&self) -> Vec<u64> {
        let mut leases: Vec<u64> = self.read().values().map(|route| route.lease_id).collect();
        leases.sort_unstable();
        leases.dedup();
        leases
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Route>>> {
        // A writer that panicked left a consistent map (every write is one insert or
        // retain), so a poisoned lock is still usable.
        self.routes
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Route>>> {
        self.routes
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn check_claims(
    routes: &HashMap<String, Arc<Route>>,
    lease_id: u64,
    claims: &[RouteClaim],
) -> Result<(), HostnameError> {
    for claim in claims {
        if let Some(route) = routes.get(&claim.host)
            && route.lease_id != lease_id
        {
            return Err(HostnameError::TakenByAnotherLease {
                field: claim.field.clone(),
                host: claim.host.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> RuntimeScope {
        RuntimeScope::new(31337, "0x00000000000000000000000000000000000000aa")
    }

    fn group(yaml_accept: &str) -> ManifestGroup {
        let sdl = format!(
            "version: \"2.0\"\nservices:\n  web:\n    image: nginx\n    expose:\n      - port: 8080\n        as: 80\n{yaml_accept}        to:\n          - global: true\n      - port: 5432\n        to:\n          - global: true\nprofiles:\n  compute:\n    web:\n      resources:\n        cpu:\n          units: 0.1\n        memory:\n          size: 64Mi\n        storage:\n          size: 64Mi\n  placement:\n    dc:\n      pricing:\n        web:\n          denom: usdc\n          amount: 100\ndeployment:\n  web:\n    dc:\n      profile: web\n      count: 1\n"
        );
        let sdl = leasehold_manifests::parse(&sdl).unwrap();
        sdl.manifest().groups[0].clone()
    }

    #[test]
    fn hosts_are_normalised_without_port_case_or_trailing_dot() {
        assert_eq!(
            normalize_host("App.Example.COM:8080").as_deref(),
            Some("app.example.com")
        );
        assert_eq!(
            normalize_host("app.example.com.").as_deref(),
            Some("app.example.com")
        );
        assert_eq!(normalize_host("[::1]:80").as_deref(), Some("::1"));
        assert_eq!(normalize_host(":80"), None);
    }

    #[test]
    fn generated_names_are_stable_dns_labels_per_lease_and_service() {
        let first = generated_hostname(&scope(), 7, "web", "Ingress.Example.org.");
        assert_eq!(
            first,
            generated_hostname(&scope(), 7, "web", "ingress.example.org")
        );
        let (label, domain) = first.split_once('.').unwrap();
        assert_eq!(domain, "ingress.example.org");
        assert_eq!(label.len(), 20);
        assert!(
            label
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_ne!(
            first,
            generated_hostname(&scope(), 8, "web", "ingress.example.org")
        );
        assert_ne!(
            first,
            generated_hostname(&scope(), 7, "api", "ingress.example.org")
        );
    }

    #[test]
    fn only_the_http_exposure_claims_its_generated_name_and_accept_hosts() {
        let group = group(
            "        accept:\n          - App.Example.com\n        http_options:\n          max_body_size: 10\n",
        );
        let claims = lease_claims(&scope(), "ingress.test", 3, &group).unwrap();
        let hosts: Vec<_> = claims.iter().map(|claim| claim.host.as_str()).collect();
        assert_eq!(
            hosts,
            [
                generated_hostname(&scope(), 3, "web", "ingress.test").as_str(),
                "app.example.com"
            ]
        );
        assert_eq!(claims[1].field, "services.web.expose[port 8080].accept");
        assert_eq!(claims[1].options.max_body_size, 10);
    }

    #[test]
    fn an_accept_host_under_the_ingress_domain_is_refused_naming_the_field() {
        let group = group("        accept:\n          - x.ingress.test\n");
        let error = lease_claims(&scope(), "ingress.test", 3, &group).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("services.web.expose[port 8080].accept: host `x.ingress.test`"),
            "{error}"
        );
    }

    #[test]
    fn a_host_has_one_owner_and_is_freed_when_its_lease_goes() {
        let table = RouteTable::new();
        let group = group("        accept:\n          - app.example.com\n");
        let first = lease_claims(&scope(), "ingress.test", 1, &group).unwrap();
        let second = lease_claims(&scope(), "ingress.test", 2, &group).unwrap();
        let upstreams = BTreeMap::from([("web".to_owned(), vec!["127.0.0.1:1".to_owned()])]);
        table.replace_lease(1, &first, &upstreams).unwrap();
        let error = table.replace_lease(2, &second, &upstreams).unwrap_err();
        assert_eq!(
            error,
            HostnameError::TakenByAnotherLease {
                field: "services.web.expose[port 8080].accept".into(),
                host: "app.example.com".into()
            }
        );
        assert_eq!(table.lookup("app.example.com").unwrap().lease_id, 1);
        // The lease itself may claim its hosts again (an update), keeping its upstreams.
        table.replace_lease(1, &first, &BTreeMap::new()).unwrap();
        assert_eq!(
            table.lookup("app.example.com").unwrap().upstreams,
            ["127.0.0.1:1"]
        );
        table.remove_lease(1);
        assert!(table.lookup("app.example.com").is_none());
        table.replace_lease(2, &second, &upstreams).unwrap();
        assert_eq!(table.leases(), [2]);
    }

    #[test]
    fn next_cases_read_akash_names() {
        let names = ["error", "502", "http_504", "off"].map(String::from);
        let cases = NextCases::from_names(&names);
        assert!(cases.error && !cases.timeout);
        assert_eq!(cases.statuses, [502, 504]);
    }
}
