//! Local deployment records (`<data dir>/deployments/<first order id>.json`) so later
//! commands need only a lease id. The chain stays the source of truth; a record adds what
//! the chain does not hold (the manifest file, group names, gateway endpoints).

use std::path::{Path, PathBuf};

use alloy::primitives::{Address, U256};
use serde::{Deserialize, Serialize};

use crate::error::{CliError, CliResult};

/// One group of a deployment: its order and, once matched, its lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub group: String,
    pub order_id: u64,
    pub deposit: U256,
    pub max_price_per_hour: U256,
    /// Equals `order_id` once a bid is accepted.
    pub lease_id: Option<u64>,
    pub provider: Option<Address>,
    pub endpoint: Option<String>,
    pub price_per_hour: Option<U256>,
}

/// One `tenant deploy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    /// The first order's id; also the file name.
    pub id: u64,
    pub created_at: u64,
    pub chain_id: u64,
    pub marketplace: Address,
    pub tenant: Address,
    pub manifest_path: PathBuf,
    pub manifest_hash: String,
    pub groups: Vec<GroupRecord>,
}

impl DeploymentRecord {
    pub fn path(dir: &Path, id: u64) -> PathBuf {
        dir.join(format!("{id}.json"))
    }

    /// Writes atomically (temp file + rename) so a crash never leaves half a record.
    pub fn save(&self, dir: &Path) -> CliResult<PathBuf> {
        std::fs::create_dir_all(dir)
            .map_err(|e| CliError::usage(format!("cannot create {}: {e}", dir.display())))?;
        let path = Self::path(dir, self.id);
        let temp = path.with_extension("json.tmp");
        let text = crate::output::json(self);
        std::fs::write(&temp, text)
            .and_then(|()| std::fs::rename(&temp, &path))
            .map_err(|e| CliError::failed(format!("cannot write {}: {e}", path.display())))?;
        Ok(path)
    }

    pub fn group_mut(&mut self, order_id: u64) -> Option<&mut GroupRecord> {
        self.groups
            .iter_mut()
            .find(|group| group.order_id == order_id)
    }
}

/// Every readable record of `marketplace` (records of other devnets are skipped), oldest
/// first. Unreadable files are reported, not fatal.
pub fn load_all(dir: &Path, marketplace: Address) -> (Vec<DeploymentRecord>, Vec<String>) {
    let mut records = Vec::new();
    let mut problems = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (records, problems);
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let parsed = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|text| {
                serde_json::from_str::<DeploymentRecord>(&text).map_err(|e| e.to_string())
            });
        match parsed {
            Ok(record) if record.marketplace == marketplace => records.push(record),
            Ok(_) => {}
            Err(error) => problems.push(format!("{}: {error}", path.display())),
        }
    }
    records.sort_by_key(|record| record.id);
    (records, problems)
}

/// The record holding `order_id` (== lease id), if any.
pub fn find(dir: &Path, marketplace: Address, order_id: u64) -> Option<DeploymentRecord> {
    load_all(dir, marketplace)
        .0
        .into_iter()
        .find(|record| record.groups.iter().any(|group| group.order_id == order_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_are_found_by_order() {
        let dir = tempfile::tempdir().unwrap();
        let market = Address::repeat_byte(7);
        let record = DeploymentRecord {
            id: 3,
            created_at: 1,
            chain_id: 31337,
            marketplace: market,
            tenant: Address::repeat_byte(1),
            manifest_path: "app.yaml".into(),
            manifest_hash: "0xab".into(),
            groups: vec![GroupRecord {
                group: "web".into(),
                order_id: 4,
                deposit: U256::from(10),
                max_price_per_hour: U256::from(1),
                lease_id: None,
                provider: None,
                endpoint: None,
                price_per_hour: None,
            }],
        };
        record.save(dir.path()).unwrap();
        assert_eq!(find(dir.path(), market, 4), Some(record.clone()));
        assert_eq!(find(dir.path(), market, 5), None);
        assert_eq!(find(dir.path(), Address::ZERO, 4), None);
        std::fs::write(dir.path().join("9.json"), "{").unwrap();
        let (records, problems) = load_all(dir.path(), market);
        assert_eq!(records.len(), 1);
        assert_eq!(problems.len(), 1);
    }
}
