//! Private registry credentials (the SDL's `credentials`) in the shapes the engines
//! take them. The password goes only into the engine call (Docker's `X-Registry-Auth`)
//! or the lease's pull Secret (Kubernetes); `Credentials`'s `Debug` and `Display`
//! redact it, so a deployment can be logged and an error can name its credentials.

use leasehold_manifests::Credentials;

use super::ServiceDeployment;

/// The credentials each distinct image of a lease is pulled with: a service with
/// credentials wins over one without for an image both run.
pub fn pulls(services: &[ServiceDeployment]) -> Vec<(&str, Option<&Credentials>)> {
    let mut pulls: Vec<(&str, Option<&Credentials>)> = Vec::new();
    for service in services {
        let credentials = service.credentials.as_ref();
        match pulls.iter_mut().find(|(image, _)| *image == service.image) {
            Some((_, known)) => *known = known.or(credentials),
            None => pulls.push((service.image.as_str(), credentials)),
        }
    }
    pulls.sort_by(|a, b| a.0.cmp(b.0));
    pulls
}

/// What Docker's image create call sends as `X-Registry-Auth`.
pub fn docker_credentials(credentials: &Credentials) -> bollard::auth::DockerCredentials {
    bollard::auth::DockerCredentials {
        username: Some(credentials.username.clone()),
        password: Some(credentials.password.clone()),
        email: (!credentials.email.is_empty()).then(|| credentials.email.clone()),
        serveraddress: Some(credentials.host.clone()),
        ..Default::default()
    }
}

/// The `.dockerconfigjson` of a `kubernetes.io/dockerconfigjson` Secret: the kubelet
/// reads `username` and `password` of the entry whose key matches the image's registry.
pub fn docker_config_json(credentials: &[&Credentials]) -> Vec<u8> {
    let mut auths = serde_json::Map::new();
    for entry in credentials {
        let mut fields = serde_json::Map::new();
        fields.insert("username".into(), entry.username.clone().into());
        fields.insert("password".into(), entry.password.clone().into());
        if !entry.email.is_empty() {
            fields.insert("email".into(), entry.email.clone().into());
        }
        auths.insert(entry.host.clone(), fields.into());
    }
    let mut config = serde_json::Map::new();
    config.insert("auths".into(), auths.into());
    serde_json::Value::Object(config).to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::ServiceResources;

    fn credentials(password: &str) -> Credentials {
        Credentials {
            host: "127.0.0.1:5000".into(),
            email: String::new(),
            username: "tenant".into(),
            password: password.into(),
        }
    }

    #[test]
    fn an_image_run_by_two_services_is_pulled_once_with_the_credentials_one_has() {
        let resources = ServiceResources::default();
        let plain = ServiceDeployment::new("a", "127.0.0.1:5000/app:1", resources);
        let private = ServiceDeployment {
            credentials: Some(credentials("s3cret")),
            ..ServiceDeployment::new("b", "127.0.0.1:5000/app:1", resources)
        };
        let other = ServiceDeployment::new("c", "busybox", resources);
        let services = [plain, private, other];
        let pulls = pulls(&services);
        assert_eq!(pulls.len(), 2);
        assert_eq!(pulls[0].0, "127.0.0.1:5000/app:1");
        assert_eq!(pulls[0].1.map(|c| c.password.as_str()), Some("s3cret"));
        assert_eq!(pulls[1], ("busybox", None));
    }

    #[test]
    fn docker_config_json_is_what_the_kubelet_reads() {
        let json: serde_json::Value =
            serde_json::from_slice(&docker_config_json(&[&credentials("s3cret")])).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"auths": {"127.0.0.1:5000": {"username": "tenant", "password": "s3cret"}}})
        );
    }

    #[test]
    fn a_deployment_with_credentials_prints_no_password() {
        let service = ServiceDeployment {
            credentials: Some(credentials("s3cret-in-debug")),
            ..ServiceDeployment::new("b", "127.0.0.1:5000/app:1", ServiceResources::default())
        };
        let printed = format!("{service:?}");
        assert!(!printed.contains("s3cret-in-debug"), "{printed}");
        assert!(printed.contains("127.0.0.1:5000"), "{printed}");
    }
}
