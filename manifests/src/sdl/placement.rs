//! `profiles.placement`: attributes, `signedBy` and pricing per profile.

use super::*;

pub(super) fn read_placement(entry: &Entry<'_>, checker: &mut Checker) -> Option<PlacementSpec> {
    let fields = checker.fields(
        entry.node,
        &entry.path,
        &["attributes", "signedBy", "pricing"],
    )?;
    let mut attributes = Vec::new();
    if let Some(node) = fields.get("attributes") {
        for attribute in checker.entries(node, &fields.path("attributes")) {
            if let Some(value) = checker.string(attribute.node, &attribute.path) {
                attributes.push(Attribute {
                    key: attribute.name.to_owned(),
                    value,
                });
            }
        }
    }
    attributes.sort();
    let mut signed_by = SignedBy::default();
    if let Some(node) = fields.get("signedBy") {
        let path = fields.path("signedBy");
        if let Some(signers) = checker.fields(node, &path, &["allOf", "anyOf"]) {
            let list = |checker: &mut Checker, name: &str| {
                signers
                    .get(name)
                    .and_then(|node| checker.string_list(node, &signers.path(name)))
                    .unwrap_or_default()
            };
            signed_by.all_of = list(checker, "allOf");
            signed_by.any_of = list(checker, "anyOf");
        }
    }
    let mut pricing = BTreeMap::new();
    let mut priced = BTreeSet::new();
    if let Some(node) = checker.required(&fields, "pricing", "a price per compute profile") {
        for price in checker.entries(node, &fields.path("pricing")) {
            priced.insert(price.name.to_owned());
            if let Some(value) = read_price(price.node, &price.path, checker) {
                pricing.insert(price.name.to_owned(), value);
            }
        }
    }
    Some(PlacementSpec {
        attributes,
        signed_by,
        pricing,
        priced,
    })
}

pub(super) fn is_accepted_denom(denom: &str) -> bool {
    ACCEPTED_DENOMS.contains(&denom)
        || denom
            .strip_prefix("ibc/")
            .is_some_and(|hash| hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
}

pub(super) fn read_price(node: &Node, path: &str, checker: &mut Checker) -> Option<Price> {
    let fields = checker.fields(node, path, &["denom", "amount"])?;
    let denom = checker
        .required(&fields, "denom", "a token denomination")
        .and_then(|node| {
            let denom_path = fields.path("denom");
            let denom = checker.string(node, &denom_path)?;
            if is_accepted_denom(&denom) {
                Some(denom)
            } else {
                checker.error(
                    &Loc::of(node, &denom_path),
                    format!(
                        "denom `{denom}` is not accepted; allowed: {}, ibc/<64 hex digits>",
                        ACCEPTED_DENOMS.join(", ")
                    ),
                );
                None
            }
        });
    let amount = checker
        .required(&fields, "amount", "a price per replica per hour")
        .and_then(|node| {
            let amount_path = fields.path("amount");
            let text = checker.string(node, &amount_path)?;
            match text.parse::<Amount>() {
                Ok(amount) if amount.atto() > 0 => Some(amount),
                Ok(_) => {
                    checker.error(
                        &Loc::of(node, &amount_path),
                        "amount must be greater than 0",
                    );
                    None
                }
                Err(error) => {
                    checker.error(
                        &Loc::of(node, &amount_path),
                        format!("amount `{text}` {error}"),
                    );
                    None
                }
            }
        });
    Some(Price {
        denom: denom?,
        amount: amount?,
    })
}
