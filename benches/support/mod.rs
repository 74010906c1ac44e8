//! What the session benches share: an identity store in a temporary directory with one user.

use std::net::IpAddr;
use std::sync::Arc;

use wardgate::identity::{EmbeddedStore, Keyring, MasterKey, User, UserId};
use wardgate::session::NewSession;
use wardgate::store::Stores;

pub const T0: u64 = 1_800_000_000;

pub struct Fixture {
    pub store: Arc<EmbeddedStore>,
    pub keyring: Arc<Keyring>,
    pub user: User,
    /// Removed on drop.
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// A new store holding one user with two roles.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let keyring = Arc::new(Keyring::new(MasterKey::new(1, [7; 32]), Vec::new()).unwrap());
        let store = Arc::new(EmbeddedStore::open(dir.path(), keyring.clone()).unwrap());
        let mut user = User::new(UserId::random(&mut rand::rng()), "alice.martin", T0);
        user.roles = vec!["physician".into(), "cardiology".into()];
        store.create_user(&user).unwrap();
        Self {
            store,
            keyring,
            user,
            _dir: dir,
        }
    }

    /// The state layer over the store.
    pub fn stores(&self) -> Stores {
        Stores::embedded(self.store.clone())
    }

    /// A login by the user from a browser.
    pub fn new_session(&self) -> NewSession<'_> {
        NewSession {
            user: &self.user,
            client: IpAddr::from([192, 0, 2, 1]),
            user_agent: "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        }
    }
}
