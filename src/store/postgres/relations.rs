//! [`Relations`] in PostgreSQL: care-team links as rows, access requests stored whole (`jsonb`)
//! beside the columns they are found by.
//!
//! [`Relations::update_request`] is a read-modify-write: the request is read `FOR UPDATE`,
//! changed by the caller's transition, and written back in the same transaction, so a second
//! approver's transaction waits on the row lock and then reads the first approval: two
//! approvers racing both count. A refused transition rolls back and leaves the row as it was.

use std::collections::BTreeMap;

use tokio_postgres::Row;
use tokio_postgres::types::Json;

use super::{Postgres, Violation, bigint, unsigned, user_id, violation};
use crate::identity::{StoreError, UserId};
use crate::policy::GrantUse;
use crate::policy::grants::{AccessRequest, GrantError, GrantId};
use crate::store::Pending;
use crate::store::relations::{CareTeamLink, Change, Holds, Relations};

fn link_from(row: &Row) -> Result<CareTeamLink, StoreError> {
    Ok(CareTeamLink {
        user: user_id("care_team.user_id", row.try_get("user_id")?)?,
        patient: row.try_get("patient")?,
        until: row
            .try_get::<_, Option<i64>>("until")?
            .map(|until| unsigned("care_team.until", until))
            .transpose()?,
    })
}

fn request_from(row: &Row) -> Result<AccessRequest, StoreError> {
    let Json(request) = row.try_get::<_, Json<AccessRequest>>("request")?;
    Ok(request)
}

impl Postgres {
    /// Adds or replaces `links` in one statement; of two links for one (user, patient), the
    /// later one counts, as if they were written one after the other.
    fn upsert_links(&self, links: Vec<CareTeamLink>) -> Pending<'_, usize> {
        self.db.run(async move {
            let count = links.len();
            let mut last = BTreeMap::new();
            for link in links {
                last.insert((link.user, link.patient), link.until);
            }
            let (mut users, mut patients, mut untils) = (Vec::new(), Vec::new(), Vec::new());
            for ((user, patient), until) in last {
                users.push(user.as_bytes().to_vec());
                patients.push(patient);
                untils.push(until.map(bigint).transpose()?);
            }
            let client = self.db.client().await?;
            let statement = client
                .prepare_cached(
                    "INSERT INTO care_team (user_id, patient, until) \
                     SELECT * FROM unnest($1::bytea[], $2::text[], $3::bigint[]) \
                     ON CONFLICT (user_id, patient) DO UPDATE SET until = excluded.until",
                )
                .await?;
            client
                .execute(&statement, &[&users, &patients, &untils])
                .await?;
            Ok(count)
        })
    }

    /// The requests a query finds, oldest first.
    fn requests_where(
        &self,
        sql: &'static str,
        user: Option<UserId>,
    ) -> Pending<'_, Vec<AccessRequest>> {
        self.db.run(async move {
            let client = self.db.client().await?;
            let statement = client.prepare_cached(sql).await?;
            let rows = match user {
                Some(user) => {
                    client
                        .query(&statement, &[&user.as_bytes().as_slice()])
                        .await?
                }
                None => client.query(&statement, &[]).await?,
            };
            rows.iter().map(request_from).collect()
        })
    }
}

impl Relations for Postgres {
    fn link(&self, link: CareTeamLink) -> Pending<'_, ()> {
        let written = self.upsert_links(vec![link]);
        Box::pin(async move { written.await.map(drop) })
    }

    fn import(&self, links: Vec<CareTeamLink>) -> Pending<'_, usize> {
        self.upsert_links(links)
    }

    fn unlink(&self, user: UserId, patient: &str) -> Pending<'_, bool> {
        let patient = patient.to_owned();
        self.db.run(async move {
            let client = self.db.client().await?;
            let statement = client
                .prepare_cached("DELETE FROM care_team WHERE user_id = $1 AND patient = $2")
                .await?;
            let removed = client
                .execute(&statement, &[&user.as_bytes().as_slice(), &patient])
                .await?;
            Ok(removed > 0)
        })
    }

    fn links(&self, user: Option<UserId>) -> Pending<'_, Vec<CareTeamLink>> {
        self.db.run(async move {
            let client = self.db.client().await?;
            let rows = match user {
                Some(user) => {
                    let statement = client
                        .prepare_cached(
                            "SELECT user_id, patient, until FROM care_team \
                             WHERE user_id = $1 ORDER BY patient",
                        )
                        .await?;
                    client
                        .query(&statement, &[&user.as_bytes().as_slice()])
                        .await?
                }
                None => {
                    let statement = client
                        .prepare_cached(
                            "SELECT user_id, patient, until FROM care_team \
                             ORDER BY user_id, patient",
                        )
                        .await?;
                    client.query(&statement, &[]).await?
                }
            };
            rows.iter().map(link_from).collect()
        })
    }

    fn on_care_team(&self, user: UserId, patient: &str, now: u64) -> Pending<'_, Option<Holds>> {
        let patient = patient.to_owned();
        self.db.run(async move {
            let now = bigint(now)?;
            let client = self.db.client().await?;
            let statement = client
                .prepare_cached(
                    "SELECT until FROM care_team WHERE user_id = $1 AND patient = $2 \
                     AND (until IS NULL OR until > $3)",
                )
                .await?;
            let row = client
                .query_opt(&statement, &[&user.as_bytes().as_slice(), &patient, &now])
                .await?;
            let Some(row) = row else {
                return Ok(None);
            };
            Ok(Some(match row.try_get::<_, Option<i64>>("until")? {
                Some(until) => Holds::Until(unsigned("care_team.until", until)?),
                None => Holds::Always,
            }))
        })
    }

    fn create_request(&self, request: AccessRequest) -> Pending<'_, ()> {
        self.db.run(async move {
            let created = bigint(request.created)?;
            let client = self.db.client().await?;
            let statement = client
                .prepare_cached(
                    "INSERT INTO access_requests (id, requester, patient, created, request) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .await?;
            let inserted = client
                .execute(
                    &statement,
                    &[
                        &request.id.as_bytes().as_slice(),
                        &request.requester.as_bytes().as_slice(),
                        &request.patient,
                        &created,
                        &Json(&request),
                    ],
                )
                .await;
            match inserted {
                Ok(_) => Ok(()),
                Err(error) => Err(match violation(&error) {
                    Some(Violation::Unique(_)) => {
                        StoreError::Conflict(format!("access request {}", request.id))
                    }
                    _ => error.into(),
                }),
            }
        })
    }

    fn request(&self, id: GrantId) -> Pending<'_, Option<AccessRequest>> {
        self.db.run(async move {
            let client = self.db.client().await?;
            let statement = client
                .prepare_cached("SELECT request FROM access_requests WHERE id = $1")
                .await?;
            let row = client
                .query_opt(&statement, &[&id.as_bytes().as_slice()])
                .await?;
            row.as_ref().map(request_from).transpose()
        })
    }

    fn requests(&self) -> Pending<'_, Vec<AccessRequest>> {
        let sql = "SELECT request FROM access_requests ORDER BY created, id";
        self.requests_where(sql, None)
    }

    fn requests_of(&self, user: UserId) -> Pending<'_, Vec<AccessRequest>> {
        let sql = "SELECT request FROM access_requests WHERE requester = $1 ORDER BY created, id";
        self.requests_where(sql, Some(user))
    }

    fn update_request(
        &self,
        id: GrantId,
        change: Change,
    ) -> Pending<'_, Result<AccessRequest, GrantError>> {
        self.db.run(async move {
            let key = id.as_bytes().as_slice();
            let mut client = self.db.client().await?;
            let tx = client.transaction().await?;
            let row = tx
                .query_opt(
                    "SELECT request FROM access_requests WHERE id = $1 FOR UPDATE",
                    &[&key],
                )
                .await?;
            let Some(row) = row else {
                return Ok(Err(GrantError::Unknown));
            };
            let mut request = request_from(&row)?;
            // Dropping the transaction rolls it back: a refusal writes nothing.
            if let Err(refused) = change(&mut request) {
                return Ok(Err(refused));
            }
            tx.execute(
                "UPDATE access_requests SET requester = $2, patient = $3, created = $4, \
                 request = $5 WHERE id = $1",
                &[
                    &key,
                    &request.requester.as_bytes().as_slice(),
                    &request.patient,
                    &bigint(request.created)?,
                    &Json(&request),
                ],
            )
            .await?;
            tx.commit().await?;
            Ok(Ok(request))
        })
    }

    fn grant_for(
        &self,
        user: UserId,
        patient: &str,
        category: &str,
        now: u64,
    ) -> Pending<'_, Option<GrantUse>> {
        let (patient, category) = (patient.to_owned(), category.to_owned());
        self.db.run(async move {
            let client = self.db.client().await?;
            // The index narrows to the user's requests for this patient; the request itself
            // decides whether it is a grant that covers the category now.
            let statement = client
                .prepare_cached(
                    "SELECT request FROM access_requests WHERE requester = $1 AND patient = $2",
                )
                .await?;
            let rows = client
                .query(&statement, &[&user.as_bytes().as_slice(), &patient])
                .await?;
            for row in &rows {
                if let Some(used) = request_from(row)?.use_at(user, &patient, &category, now) {
                    return Ok(Some(used));
                }
            }
            Ok(None)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::tests::fresh;
    use super::*;
    use crate::policy::GrantRules;
    use crate::policy::grants::Asked;
    use crate::store::relations::Cached;

    #[tokio::test]
    async fn keeps_the_relations_contract() {
        let (_server, store) = fresh().await;
        crate::store::relations::contract::kept_by(&store).await;
    }

    #[tokio::test]
    async fn the_decision_cache_over_it_keeps_the_relations_contract() {
        let (_server, store) = fresh().await;
        let cached = Cached::new(std::sync::Arc::new(store));
        crate::store::relations::contract::kept_by(&cached).await;
    }

    #[tokio::test]
    async fn every_one_of_many_racing_approvals_is_kept() {
        const T0: u64 = 1_800_000_000;
        const APPROVERS: u8 = 8;
        let rules = GrantRules {
            max_duration: 3600,
            pending_ttl: 600,
            approvals: u32::from(APPROVERS) + 1,
        };
        let (_server, store) = fresh().await;
        let asked = Asked {
            patient: "p1",
            categories: vec!["labs".into()],
            reason: "a reason",
            duration: 600,
        };
        let id = GrantId::from_bytes([5; 16]);
        let request = AccessRequest::new(id, UserId::from_bytes([1; 16]), asked, T0);
        store.create_request(request).await.unwrap();
        let store = Arc::new(store);
        let mut approvers = tokio::task::JoinSet::new();
        for by in 0..APPROVERS {
            let store = store.clone();
            approvers.spawn(async move {
                let by = UserId::from_bytes([100 + by; 16]);
                let approve: Change = Box::new(move |r| r.approve(by, true, "", &rules, T0 + 1));
                store.update_request(id, approve).await.unwrap().unwrap();
            });
        }
        approvers.join_all().await;
        let stored = store.request(id).await.unwrap().unwrap();
        assert_eq!(stored.approvals.len(), usize::from(APPROVERS), "none lost");
    }
}
