//! The ingress through the real daemon (issue #14): real chain, real Docker containers,
//! manifests through the signed gateway. Two leases with their own `accept` hostnames
//! answer on their own host over HTTP and HTTPS, a third lease asking for a taken
//! hostname is refused at `SendManifest` naming the field, and the routes come back after
//! a restart (rebuilt from the store).

use leasehold_provider::config::IngressConfig;

use super::*;
use crate::ingress::{get, get_https, wildcard_certificate};

const DOMAIN: &str = "ingress.test";

/// hello.yaml serving `text`, with `host` in its `accept` list.
fn hello_accepting(host: &str, text: &str) -> String {
    hello_saying(text).replace(
        "        as: 80\n",
        &format!("        as: 80\n        accept:\n          - {host}\n"),
    )
}

fn with_ingress(config: &mut Config, dir: &std::path::Path) -> std::path::PathBuf {
    let (cert, key) = wildcard_certificate(dir, DOMAIN);
    config.ingress = Some(IngressConfig {
        domain: DOMAIN.to_owned(),
        http_listen: format!("127.0.0.1:{}", free_port()),
        https_listen: Some(format!("127.0.0.1:{}", free_port())),
        tls_cert: Some(cert.clone()),
        tls_key: Some(key),
    });
    cert
}

/// Waits until the ingress answers `host` with 200 and returns the body.
async fn served(addr: SocketAddr, host: &str) -> String {
    eventually(&format!("the ingress to serve {host}"), || async {
        let (status, body) = get(addr, host).await;
        (status == 200).then_some(body)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases_answer_on_their_own_hostnames_a_taken_one_is_refused_and_routes_survive_a_restart()
{
    daemon_test(0..5, || async {
        let devnet = Devnet::start(None).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = provider_config(&devnet, dir.path(), 0);
        let cert = with_ingress(&mut config, dir.path());
        register(&devnet, &config).await;
        let handle = start(&devnet, &config).await;
        let (http, https) = handle.ingress_addrs().expect("ingress served");
        let https = https.expect("HTTPS served");

        let mut leases = Vec::new();
        for name in ["alpha", "beta"] {
            let sdl = hello_accepting(&format!("{name}.example.com"), name);
            let (order, manifest) = sdl_order(&devnet, &sdl, 1_000 * TOKEN, 3_600);
            let lease_id = lease_for(&devnet, &order).await;
            deliver_and_run(&devnet, &handle, lease_id, manifest).await;
            leases.push(lease_id);
        }
        assert_eq!(served(http, "alpha.example.com").await, "alpha\n");
        assert_eq!(served(http, "Beta.Example.com:80").await, "beta\n");
        let (status, _) = get(http, "gamma.example.com").await;
        assert_eq!(status, 404);

        // The gateway's status names both hostnames; the generated one serves over TLS
        // with the provider's wildcard certificate.
        let gateway = format!("http://{}", handle.gateway_addr().expect("gateway"));
        let mut tenant = tenant_client(&devnet, &gateway).await;
        let status = tenant.status(leases[0]).await.expect("status");
        let hostnames = &status.services[0].hostnames;
        let generated = hostnames
            .iter()
            .find(|host| host.ends_with(&format!(".{DOMAIN}")))
            .unwrap_or_else(|| panic!("a generated hostname in {hostnames:?}"))
            .clone();
        assert!(
            hostnames.contains(&"alpha.example.com".to_owned()),
            "{hostnames:?}"
        );
        assert_eq!(
            get_https(https, &generated, &cert).await,
            (200, "alpha\n".into())
        );
        assert_eq!(get(http, &generated).await, (200, "alpha\n".into()));

        // A third lease asking for alpha's hostname is refused, naming the field and host.
        let sdl = hello_accepting("alpha.example.com", "thief");
        let (order, manifest) = sdl_order(&devnet, &sdl, 1_000 * TOKEN, 3_600);
        let thief = lease_for(&devnet, &order).await;
        manifest_window(&handle, thief).await;
        let refused = tenant
            .send_manifest(thief, manifest)
            .await
            .expect_err("a taken hostname is refused");
        let message = refused.to_string();
        assert!(
            message.contains("services.web.expose[port 80].accept")
                && message.contains("`alpha.example.com` is already routed to another lease"),
            "{message}"
        );
        assert_eq!(
            get(http, "alpha.example.com").await,
            (200, "alpha\n".into())
        );

        // A restart rebuilds the routes from the store: same hostnames, same answers.
        handle.shutdown().await;
        let handle = start(&devnet, &config).await;
        let (http, https) = handle.ingress_addrs().expect("ingress served");
        assert_eq!(served(http, "alpha.example.com").await, "alpha\n");
        assert_eq!(served(http, "beta.example.com").await, "beta\n");
        assert_eq!(
            get_https(https.expect("HTTPS"), &generated, &cert).await,
            (200, "alpha\n".into())
        );

        // A closed lease's hostnames stop answering.
        devnet
            .client(TENANT)
            .close_lease(leases[1], CloseReason::TenantRequest)
            .await
            .expect("closeLease");
        eventually("beta's route to go", || async {
            (get(http, "beta.example.com").await.0 == 404).then_some(())
        })
        .await;
        handle.shutdown().await;
    })
    .await;
}
