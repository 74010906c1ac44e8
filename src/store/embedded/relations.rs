//! Care-team links and access requests in the identity store's redb file: three tables beside
//! the identity store's own, created on first write (a read of a table not yet written finds
//! nothing).

use redb::{ReadTransaction, ReadableTable, TableDefinition, TableError, WriteTransaction};

use crate::identity::embedded::{decode, encode};
use crate::identity::{EmbeddedStore, StoreError, UserId};
use crate::policy::GrantUse;
use crate::policy::grants::{AccessRequest, GrantError, GrantId};
use crate::store::relations::Holds;
use crate::store::relations::{CareTeamLink, Change};

/// user ++ patient -> `CareTeamLink`
const CARE_TEAM: TableDefinition<&[u8], &[u8]> = TableDefinition::new("care_team");
/// request id -> `AccessRequest`
const REQUESTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("access_requests");
/// requester ++ request id -> nothing: a user's requests without a scan of all.
const BY_REQUESTER: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("access_requests_by_requester");

fn link_key(user: UserId, patient: &str) -> Vec<u8> {
    let mut key = user.as_bytes().to_vec();
    key.extend_from_slice(patient.as_bytes());
    key
}

/// The rows of `table` whose key starts with `prefix`, values decoded; none when the table
/// was never written.
fn scan<T: serde::de::DeserializeOwned>(
    tx: &ReadTransaction,
    table: TableDefinition<&[u8], &[u8]>,
    prefix: &[u8],
) -> Result<Vec<(Vec<u8>, T)>, StoreError> {
    let table_name = table.to_string();
    let table = match tx.open_table(table) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(other) => return Err(other.into()),
    };
    let mut rows = Vec::new();
    for entry in table.range(prefix..)? {
        let (key, value) = entry?;
        if !key.value().starts_with(prefix) {
            break;
        }
        rows.push((key.value().to_vec(), decode(&table_name, value.value())?));
    }
    Ok(rows)
}

fn insert_links(tx: &WriteTransaction, links: &[CareTeamLink]) -> Result<(), StoreError> {
    let mut table = tx.open_table(CARE_TEAM)?;
    for link in links {
        let key = link_key(link.user, &link.patient);
        table.insert(key.as_slice(), encode(link)?.as_slice())?;
    }
    Ok(())
}

pub fn link(store: &EmbeddedStore, link: &CareTeamLink) -> Result<(), StoreError> {
    store.write(|tx| insert_links(tx, std::slice::from_ref(link)))
}

pub fn import(store: &EmbeddedStore, links: &[CareTeamLink]) -> Result<usize, StoreError> {
    store.write(|tx| insert_links(tx, links))?;
    Ok(links.len())
}

pub fn unlink(store: &EmbeddedStore, user: UserId, patient: &str) -> Result<bool, StoreError> {
    store.write(|tx| {
        let mut table = tx.open_table(CARE_TEAM)?;
        let removed = table.remove(link_key(user, patient).as_slice())?;
        Ok(removed.is_some())
    })
}

pub fn links(store: &EmbeddedStore, user: Option<UserId>) -> Result<Vec<CareTeamLink>, StoreError> {
    let prefix = user.map(|u| u.as_bytes().to_vec()).unwrap_or_default();
    let rows = scan(&store.read()?, CARE_TEAM, &prefix)?;
    Ok(rows.into_iter().map(|(_, link)| link).collect())
}

pub fn on_care_team(
    store: &EmbeddedStore,
    user: UserId,
    patient: &str,
    now: u64,
) -> Result<Option<Holds>, StoreError> {
    let key = link_key(user, patient);
    let rows: Vec<(Vec<u8>, CareTeamLink)> = scan(&store.read()?, CARE_TEAM, &key)?;
    Ok(rows
        .iter()
        .find(|(found, link)| *found == key && link.until.is_none_or(|until| now < until))
        .map(|(_, link)| link.until.map_or(Holds::Always, Holds::Until)))
}

pub fn create_request(store: &EmbeddedStore, request: &AccessRequest) -> Result<(), StoreError> {
    store.write(|tx| {
        let mut requests = tx.open_table(REQUESTS)?;
        let id = request.id.as_bytes().as_slice();
        if requests.get(id)?.is_some() {
            return Err(StoreError::Conflict(format!(
                "access request {}",
                request.id
            )));
        }
        requests.insert(id, encode(request)?.as_slice())?;
        let mut index = request.requester.as_bytes().to_vec();
        index.extend_from_slice(id);
        tx.open_table(BY_REQUESTER)?
            .insert(index.as_slice(), [].as_slice())?;
        Ok(())
    })
}

pub fn request(store: &EmbeddedStore, id: GrantId) -> Result<Option<AccessRequest>, StoreError> {
    stored(&store.read()?, id)
}

fn stored(tx: &ReadTransaction, id: GrantId) -> Result<Option<AccessRequest>, StoreError> {
    let rows = scan(tx, REQUESTS, id.as_bytes())?;
    Ok(rows.into_iter().next().map(|(_, request)| request))
}

pub fn requests(store: &EmbeddedStore) -> Result<Vec<AccessRequest>, StoreError> {
    let mut all: Vec<AccessRequest> = scan(&store.read()?, REQUESTS, &[])?
        .into_iter()
        .map(|(_, request)| request)
        .collect();
    all.sort_by_key(|request| (request.created, request.id));
    Ok(all)
}

pub fn update_request(
    store: &EmbeddedStore,
    id: GrantId,
    change: Change,
) -> Result<Result<AccessRequest, GrantError>, StoreError> {
    store.write(|tx| {
        let mut requests = tx.open_table(REQUESTS)?;
        let key = id.as_bytes().as_slice();
        let mut request: AccessRequest = match requests.get(key)? {
            Some(value) => decode("access_requests", value.value())?,
            None => return Ok(Err(GrantError::Unknown)),
        };
        if let Err(refused) = change(&mut request) {
            return Ok(Err(refused));
        }
        requests.insert(key, encode(&request)?.as_slice())?;
        Ok(Ok(request))
    })
}

pub fn requests_of(store: &EmbeddedStore, user: UserId) -> Result<Vec<AccessRequest>, StoreError> {
    let tx = store.read()?;
    let mut found = Vec::new();
    for id in requester_index(&tx, user)? {
        found.extend(stored(&tx, id)?);
    }
    found.sort_by_key(|request| (request.created, request.id));
    Ok(found)
}

pub fn grant_for(
    store: &EmbeddedStore,
    user: UserId,
    patient: &str,
    category: &str,
    now: u64,
) -> Result<Option<GrantUse>, StoreError> {
    // On every request to a patient route without a care-team link: stop at the first grant
    // that covers it, in no particular order.
    let tx = store.read()?;
    for id in requester_index(&tx, user)? {
        if let Some(used) = stored(&tx, id)?.and_then(|r| r.use_at(user, patient, category, now)) {
            return Ok(Some(used));
        }
    }
    Ok(None)
}

/// The ids of `user`'s requests.
fn requester_index(tx: &ReadTransaction, user: UserId) -> Result<Vec<GrantId>, StoreError> {
    let table = match tx.open_table(BY_REQUESTER) {
        Ok(table) => table,
        Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(other) => return Err(other.into()),
    };
    let prefix = user.as_bytes().as_slice();
    let mut ids = Vec::new();
    for entry in table.range(prefix..)? {
        let (key, _) = entry?;
        let key = key.value();
        if !key.starts_with(prefix) {
            break;
        }
        let id: [u8; 16] = key[16..].try_into().map_err(|_| {
            StoreError::Corrupt("access_requests_by_requester: a key is not user ++ id".into())
        })?;
        ids.push(GrantId::from_bytes(id));
    }
    Ok(ids)
}
